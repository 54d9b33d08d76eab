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
  // The header's dtype name: "F32", "BF16", ..., or, where unknown dtypes are
  // allowed (SafetensorsParseOptions), any safetensors name ("I64", "U8", "F8_E4M3", ...).
  std::string dtype_str;
  // Whether dtype_str is one of core/dtype.h's; always, unless allow_unknown_dtypes.
  bool known_dtype = true;
  DType dtype = DType::F32;     // meaningful only when known_dtype
  std::vector<int64_t> shape;   // every dimension >= 0 (core/tensor.h Shape), element count <= 2^63 - 1
  uint64_t begin = 0, end = 0;  // byte range within the data section
};

struct SafetensorsHeader {
  uint64_t data_start = 0;  // 8 + the header length: where the data section starts in the file
  uint64_t data_size = 0;   // bytes from data_start to the end of the file
  std::map<std::string, SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;  // "__metadata__"'s string values
};

struct SafetensorsParseOptions {
  // Keep tensors whose dtype core/dtype.h does not know (Hugging Face files
  // hold I64, U8, BOOL, F8_E4M3, ... buffers beside the weights) instead of
  // refusing the file: they get known_dtype = false and their dtype_str. Their
  // byte range is checked like any other (inside the data section, no
  // overlap), their shape for non-negative integers, and their byte count
  // against the shape wherever safetensors_dtype_size() knows the element
  // size. The name itself must look like a safetensors dtype ([A-Z0-9_], at
  // most 32 characters).
  bool allow_unknown_dtypes = false;
};

// Bytes per element of a safetensors dtype name: core/dtype.h's dtypes and the
// other fixed-width ones of the format (F64, I64, U64, I32, U32, I16, U16, I8,
// U8, BOOL, F8_E4M3, F8_E5M2, F8_E8M0); 0 for names it does not know, e.g.
// packed sub-byte dtypes (F4, F6_E2M3, ...).
size_t safetensors_dtype_size(const std::string& dtype_name);

// Headers longer than this are refused (a corrupted length would otherwise
// make a reader allocate whatever it says).
constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t{100} << 20;

// The header length in a file's first 8 bytes, checked against the file's
// size (and kMaxSafetensorsHeaderBytes). Errors name the file.
uint64_t safetensors_header_length(const uint8_t* first8, uint64_t file_size, const std::string& name_for_errors);

// Parses and checks the header of a file of `file_size` bytes whose first
// `size` bytes are at `data` (at least 8 + the header length; the data
// section itself need not be there). Checked: the header length against the
// file, JSON syntax, a JSON object, each tensor's dtype known (unless
// options.allow_unknown_dtypes), its shape non-negative integers whose element
// count and byte size do not overflow, its data_offsets two integers
// begin <= end inside the data section with end - begin = elements × dtype
// size (where the element size is known), and no two tensors' bytes
// overlapping. Throws std::runtime_error naming the file (and the tensor);
// never anything else for any input (std::logic_error only when the caller
// passes fewer bytes than the header length says).
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, uint64_t file_size,
                                           const std::string& name_for_errors,
                                           const SafetensorsParseOptions& options = {});
// A whole file held in memory.
inline SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                                  const std::string& name_for_errors,
                                                  const SafetensorsParseOptions& options = {}) {
  return parse_safetensors_header(data, size, size, name_for_errors, options);
}

}  // namespace llm
