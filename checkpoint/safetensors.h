// The safetensors container: 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
// then the raw bytes. Checkpoint shards and Hugging Face exports both use it.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/safetensors_header.h"
#include "core/tensor.h"

namespace llm {

class SafetensorsWriter {
 public:
  // Tensors are written in the order added; their bytes are copied at add().
  void add(const std::string& name, const Tensor& t);
  void add_raw(const std::string& name, DType dtype, const Shape& shape, const void* data, size_t bytes);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Writes the file and fsyncs it. Returns the file's xxHash64.
  uint64_t write(const std::string& path) const;

 private:
  struct Item {
    std::string name;
    DType dtype;
    Shape shape;
    std::vector<char> bytes;
  };
  std::vector<Item> items_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsReader {
 public:
  // Reads and validates the header (parse_safetensors_header: every range
  // inside the file, no overlaps, sizes matching dtype × shape). Errors name
  // the file and the tensor.
  explicit SafetensorsReader(const std::string& path);
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  const SafetensorsEntry& entry(const std::string& name) const;
  // Copies a tensor's bytes into `out` (same element count; F32/BF16/F16 are
  // converted to out's floating dtype).
  void read_into(const std::string& name, Tensor& out) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  uint64_t data_start_ = 0, file_size_ = 0;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Dtype names are safetensors' own ("F32", "BF16", ...): core/dtype.h dtype_name().

uint64_t xxhash64_file(const std::string& path);
// Writes `data` to path atomically: a temporary file, fsync, rename.
void write_file_atomic(const std::string& path, const std::string& data);
void fsync_path(const std::string& path);

}  // namespace llm
