#include "checkpoint/safetensors_header.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "checkpoint/json_checks.h"

namespace llm {

namespace jc = json_checks;

static std::runtime_error not_safetensors(const std::string& name, const std::string& why) {
  return std::runtime_error("'" + name + "' is not a valid safetensors file: " + why);
}

uint64_t safetensors_header_length(const uint8_t* first8, uint64_t file_size, const std::string& name) {
  if (file_size < 8) throw not_safetensors(name, "shorter than its 8-byte header length (truncated?)");
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= static_cast<uint64_t>(first8[i]) << (8 * i);
  if (hlen > file_size - 8)
    throw not_safetensors(name, "header length " + std::to_string(hlen) + " exceeds the file's " +
                                    std::to_string(file_size) + " bytes (truncated?)");
  if (hlen > kMaxSafetensorsHeaderBytes)
    throw not_safetensors(name, "header length " + std::to_string(hlen) + " is over the " +
                                    std::to_string(kMaxSafetensorsHeaderBytes) + "-byte limit (corrupted?)");
  return hlen;
}

size_t safetensors_dtype_size(const std::string& d) {
  static const std::pair<const char*, size_t> kSizes[] = {
      {"F64", 8},     {"I64", 8},     {"U64", 8},     {"F32", 4},      {"I32", 4},     {"U32", 4},
      {"F16", 2},     {"BF16", 2},    {"I16", 2},     {"U16", 2},      {"I8", 1},      {"U8", 1},
      {"BOOL", 1},    {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1}};
  for (const auto& [n, bytes] : kSizes)
    if (d == n) return bytes;
  return 0;
}

// A name safetensors could give a dtype: upper-case letters, digits and '_'.
static bool looks_like_dtype_name(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  for (const char c : s)
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

// One tensor's entry; `why` errors name the tensor.
static SafetensorsEntry parse_entry(const std::string& tname, const nlohmann::json& v, uint64_t data_size,
                                    const std::string& name, const SafetensorsParseOptions& options) {
  auto bad = [&](const std::string& why) { return not_safetensors(name, "tensor '" + tname + "' " + why); };
  if (!v.is_object()) throw bad("is " + jc::brief(v) + ", not an object {dtype, shape, data_offsets}");
  SafetensorsEntry e;
  const auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) throw bad("has no dtype string");
  e.dtype_str = dt->get<std::string>();
  try {
    e.dtype = dtype_from_name(e.dtype_str);
  } catch (const std::runtime_error& ex) {
    if (!options.allow_unknown_dtypes) throw bad(std::string("has an unsupported dtype: ") + ex.what());
    if (!looks_like_dtype_name(e.dtype_str)) throw bad("has dtype " + jc::brief(*dt) + ", not a safetensors dtype name");
    e.known_dtype = false;
  }
  // Bytes per element; 0: unknown, so the byte count cannot be checked against the shape.
  const uint64_t esize = e.known_dtype ? dtype_size(e.dtype) : safetensors_dtype_size(e.dtype_str);
  const auto sh = v.find("shape");
  if (sh == v.end()) throw bad("has no shape");
  const auto dims = jc::as_dims(*sh);
  if (!dims) throw bad("has shape " + jc::brief(*sh) + ": expected an array of non-negative integers");
  e.shape = *dims;
  const auto numel = jc::checked_numel(e.shape);
  uint64_t bytes = 0;
  if (!numel || __builtin_mul_overflow(static_cast<uint64_t>(*numel), esize, &bytes))
    throw bad("has shape " + jc::dims_str(e.shape) + ", too many elements to address");
  const auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2)
    throw bad("has no data_offsets [begin, end]");
  const auto b = jc::as_uint64((*off)[0]), en = jc::as_uint64((*off)[1]);
  if (!b || !en) throw bad("has data_offsets " + jc::brief(*off) + ": expected two non-negative integers");
  e.begin = *b;
  e.end = *en;
  if (e.begin > e.end)
    throw bad("has data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] that end before they begin");
  if (e.end > data_size)
    throw bad("byte range [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
              ") lies outside the data section of " + std::to_string(data_size) + " bytes (truncated file?)");
  if (esize && e.end - e.begin != bytes)
    throw bad("has " + std::to_string(e.end - e.begin) + " bytes but shape " + jc::dims_str(e.shape) + " of " +
              e.dtype_str + " needs " + std::to_string(bytes));
  if (!esize && (*numel == 0) != (e.end == e.begin))  // whatever the element size, none take no bytes
    throw bad("has " + std::to_string(e.end - e.begin) + " bytes for shape " + jc::dims_str(e.shape) + " of " +
              e.dtype_str);
  return e;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, uint64_t file_size,
                                           const std::string& name, const SafetensorsParseOptions& options) {
  if (size > file_size) throw std::logic_error("parse_safetensors_header: more bytes than the file has");
  if (size < 8) throw not_safetensors(name, "shorter than its 8-byte header length (truncated?)");
  const uint64_t hlen = safetensors_header_length(data, file_size, name);
  if (hlen > size - 8) throw std::logic_error("parse_safetensors_header: the caller did not pass the whole header");
  SafetensorsHeader h;
  h.data_start = 8 + hlen;
  h.data_size = file_size - h.data_start;
  nlohmann::json header;
  try {
    header = jc::parse(std::string(reinterpret_cast<const char*>(data) + 8, static_cast<size_t>(hlen)));
  } catch (const std::exception& e) {
    throw not_safetensors(name, std::string("header is not JSON (") + e.what() + ")");
  }
  if (!header.is_object()) throw not_safetensors(name, "header is " + jc::brief(header) + ", not a JSON object");
  try {
    for (const auto& [tname, v] : header.items()) {
      if (tname == "__metadata__") {
        if (!v.is_object()) throw not_safetensors(name, "__metadata__ is not an object of strings");
        for (const auto& [k, val] : v.items())
          if (val.is_string()) h.metadata[k] = val.get<std::string>();
        continue;
      }
      h.entries[tname] = parse_entry(tname, v, h.data_size, name, options);
    }
  } catch (const nlohmann::json::exception& e) {  // not expected: every access above is checked
    throw not_safetensors(name, e.what());
  }
  // No two tensors share bytes (empty tensors take none).
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> by_start;
  for (const auto& [tname, e] : h.entries)
    if (e.end > e.begin) by_start.emplace_back(&tname, &e);
  std::sort(by_start.begin(), by_start.end(),
            [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < by_start.size(); ++i)
    if (by_start[i].second->begin < by_start[i - 1].second->end)
      throw not_safetensors(name, "tensors '" + *by_start[i - 1].first + "' and '" + *by_start[i].first +
                                      "' overlap in the data section");
  return h;
}

}  // namespace llm
