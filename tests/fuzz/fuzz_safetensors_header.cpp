// libFuzzer target: the safetensors header parser (checkpoint/safetensors_header.h)
// on arbitrary bytes taken as a whole file. A std::runtime_error naming the
// file is the expected answer to bad input; any other exception, a crash, a
// sanitizer report or a parsed header that breaks the parser's promises is a
// finding. Built and run by tests/fuzz/CMakeLists.txt.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "checkpoint/safetensors_header.h"

namespace {

const std::string kName = "fuzz.safetensors";

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "finding: %s\n", what);
  std::abort();
}

void check(const llm::SafetensorsHeader& h, uint64_t file_size) {
  if (h.data_start < 8 || h.data_start > file_size || h.data_size != file_size - h.data_start)
    finding("data section outside the file");
  for (const auto& [name, e] : h.entries) {
    if (e.begin > e.end || e.end > h.data_size) finding("tensor range outside the data section");
    uint64_t n = 1;
    for (int64_t d : e.shape) {
      if (d < 0) finding("negative dimension");
      if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) finding("element count overflows");
    }
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(n, llm::dtype_size(e.dtype), &bytes) || bytes != e.end - e.begin)
      finding("byte count does not match the shape");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    check(llm::parse_safetensors_header(data, size, kName), size);
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).find(kName) == std::string::npos) finding("error message does not name the file");
  }
  // The same bytes as the start of a longer file (the data section not in memory).
  if (size >= 8) {
    const uint64_t file_size = size + (uint64_t{data[size - 1]} << 8);
    try {
      check(llm::parse_safetensors_header(data, size, file_size, kName), file_size);
    } catch (const std::runtime_error& e) {
      if (std::string(e.what()).find(kName) == std::string::npos) finding("error message does not name the file");
    } catch (const std::logic_error&) {
      // The header extends past `size`: the real reader never passes less than the whole header.
    }
  }
  return 0;
}
