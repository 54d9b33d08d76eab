#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace llm {

void SafetensorsWriter::add(const std::string& name, const Tensor& t) {
  if (!t.device().is_cpu()) throw std::logic_error("SafetensorsWriter: copy '" + name + "' to the host first");
  add_raw(name, t.dtype(), t.shape(), t.raw(), t.nbytes());
}

void SafetensorsWriter::add_raw(const std::string& name, DType dtype, const Shape& shape, const void* data,
                                size_t bytes) {
  Item it{name, dtype, shape, std::vector<char>(bytes)};
  if (bytes) std::memcpy(it.bytes.data(), data, bytes);
  items_.push_back(std::move(it));
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

uint64_t SafetensorsWriter::write(const std::string& path) const {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& it : items_) {
    header[it.name] = {{"dtype", dtype_name(it.dtype)},
                       {"shape", it.shape},
                       {"data_offsets", {offset, offset + it.bytes.size()}}};
    offset += it.bytes.size();
  }
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write '" + path + "': check the directory exists and is writable");
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  auto put = [&](const char* p, size_t n) {
    out.write(p, static_cast<std::streamsize>(n));
    XXH64_update(st, p, n);
  };
  const uint64_t hlen = h.size();
  char len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<char>((hlen >> (8 * i)) & 0xff);
  put(len_le, 8);
  put(h.data(), h.size());
  for (const auto& it : items_) put(it.bytes.data(), it.bytes.size());
  const uint64_t digest = XXH64_digest(st);
  XXH64_freeState(st);
  out.close();
  if (!out) throw std::runtime_error("write to '" + path + "' failed (disk full?)");
  fsync_path(path);
  return digest;
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open '" + path + "': file missing or unreadable");
  file_size_ = static_cast<uint64_t>(in.tellg());
  // The length, then the header itself (checked against the file size before
  // anything is allocated), parsed by the in-memory parser the fuzzer runs.
  uint8_t len_le[8] = {};
  in.seekg(0);
  if (file_size_ >= 8) in.read(reinterpret_cast<char*>(len_le), 8);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  const uint64_t hlen = safetensors_header_length(len_le, file_size_, path);
  std::vector<uint8_t> head(static_cast<size_t>(8 + hlen));
  std::memcpy(head.data(), len_le, 8);
  in.read(reinterpret_cast<char*>(head.data() + 8), static_cast<std::streamsize>(hlen));
  if (!in) throw std::runtime_error("'" + path + "': short read of the safetensors header (file changed while read?)");
  SafetensorsHeader h = parse_safetensors_header(head.data(), head.size(), file_size_, path);
  data_start_ = h.data_start;
  entries_ = std::move(h.entries);
  metadata_ = std::move(h.metadata);
}

const SafetensorsEntry& SafetensorsReader::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw std::runtime_error("'" + path_ + "' has no tensor named '" + name + "'");
  return it->second;
}

void SafetensorsReader::read_into(const std::string& name, Tensor& out) const {
  const auto& e = entry(name);
  const int64_t n = shape_numel(e.shape);
  if (n != out.numel())
    throw std::runtime_error("'" + path_ + "': tensor '" + name + "' has shape " + shape_str(e.shape) +
                             " but the model expects " + shape_str(out.shape()));
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(data_start_ + e.begin));
  std::vector<char> buf(e.end - e.begin);
  in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
  if (!in) throw std::runtime_error("'" + path_ + "': short read of tensor '" + name + "' (truncated file?)");
  if (e.dtype == out.dtype()) {
    std::memcpy(out.raw(), buf.data(), buf.size());
    return;
  }
  // Conversions between floating types (e.g. a bf16 export into an fp32 model).
  auto load = [&](int64_t i) -> double {
    switch (e.dtype) {
      case DType::F32: { float f; std::memcpy(&f, buf.data() + 4 * i, 4); return f; }
      case DType::F64: { double d; std::memcpy(&d, buf.data() + 8 * i, 8); return d; }
      case DType::BF16: { bf16 b; std::memcpy(&b.bits, buf.data() + 2 * i, 2); return static_cast<float>(b); }
      case DType::F16: { uint16_t h; std::memcpy(&h, buf.data() + 2 * i, 2); return half_to_float(h); }
      default: throw std::runtime_error("'" + path_ + "': cannot convert tensor '" + name + "' of dtype " +
                                        dtype_name(e.dtype) + " to " + dtype_name(out.dtype()));
    }
  };
  for (int64_t i = 0; i < n; ++i) {
    const double v = load(i);
    switch (out.dtype()) {
      case DType::F32: out.data<float>()[i] = static_cast<float>(v); break;
      case DType::F64: out.data<double>()[i] = v; break;
      case DType::BF16: out.data<bf16>()[i] = bf16(static_cast<float>(v)); break;
      default: throw std::runtime_error("cannot read '" + name + "' into a " + dtype_name(out.dtype()) + " tensor");
    }
  }
}

uint64_t xxhash64_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open '" + path + "' to checksum it: file missing or unreadable");
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    XXH64_update(st, buf.data(), static_cast<size_t>(in.gcount()));
  }
  const uint64_t d = XXH64_digest(st);
  XXH64_freeState(st);
  return d;
}

void write_file_atomic(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write '" + tmp + "': check the directory is writable");
    out << data;
    out.close();
    if (!out) throw std::runtime_error("write to '" + tmp + "' failed (disk full?)");
  }
  fsync_path(tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno));
}

}  // namespace llm
