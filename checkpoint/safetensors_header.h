// The safetensors header parser, on bytes in memory: no file system, no
// tensors, only nlohmann-json and core/dtype.h, so tests/fuzz/ can build it
// alone with clang and libFuzzer. SafetensorsReader (checkpoint/safetensors.h)
// reads a file's first bytes and hands them here.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON
//   {name: {"dtype", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {key: string}}
// (possibly padded with spaces), then the data section; offsets count from its start.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace llm {

struct SafetensorsEntry {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;   // every dimension >= 0 (core/tensor.h Shape)
  uint64_t begin = 0, end = 0;  // byte range within the data section
};

struct SafetensorsHeader {
  uint64_t data_start = 0;  // 8 + the header length: where the data section starts in the file
  uint64_t data_size = 0;   // bytes from data_start to the end of the file
  std::map<std::string, SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;  // "__metadata__"'s string values
};

// Headers longer than this are refused (a corrupted length would otherwise
// make a reader allocate whatever it says).
constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t{100} << 20;

// The header length in a file's first 8 bytes, checked against the file's
// size (and kMaxSafetensorsHeaderBytes). Errors name the file.
uint64_t safetensors_header_length(const uint8_t* first8, uint64_t file_size, const std::string& name_for_errors);

// Parses and checks the header of a file of `file_size` bytes whose first
// `size` bytes are at `data` (at least 8 + the header length; the data
// section itself need not be there). Checked: the header length against the
// file, JSON syntax, a JSON object, each tensor's dtype known, its shape
// non-negative integers whose element count and byte size do not overflow,
// its data_offsets two integers begin <= end inside the data section with
// end - begin = elements × dtype size, and no two tensors' bytes overlapping.
// Throws std::runtime_error naming the file (and the tensor); never anything else
// for any input.
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, uint64_t file_size,
                                           const std::string& name_for_errors);
// A whole file held in memory.
inline SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                                  const std::string& name_for_errors) {
  return parse_safetensors_header(data, size, size, name_for_errors);
}

}  // namespace llm
