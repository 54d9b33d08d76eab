// libFuzzer target: the safetensors header parser (checkpoint/safetensors_header.h)
// on arbitrary bytes taken as a whole file, and as the start of a longer one,
// each both strictly and with allow_unknown_dtypes (the Hugging Face reader's
// mode). A std::runtime_error naming the file is the expected answer to bad
// input; any other exception, a crash, a sanitizer report, a parsed header
// that breaks the parser's promises, or the two modes disagreeing on a file
// of known dtypes is a finding. Built and run by tests/fuzz/CMakeLists.txt.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/safetensors_header.h"

namespace {

const std::string kName = "fuzz.safetensors";

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "finding: %s\n", what);
  std::abort();
}

bool is_core_dtype(const std::string& s) {
  try {
    llm::dtype_from_name(s);
    return true;
  } catch (const std::runtime_error&) {
    return false;
  }
}

void check(const llm::SafetensorsHeader& h, uint64_t file_size, bool allow_unknown) {
  if (h.data_start < 8 || h.data_start > file_size || h.data_size != file_size - h.data_start)
    finding("data section outside the file");
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, e] : h.entries) {
    if (e.begin > e.end || e.end > h.data_size) finding("tensor range outside the data section");
    if (e.known_dtype) {
      if (e.dtype_str != llm::dtype_name(e.dtype)) finding("dtype_str differs from the dtype");
    } else {
      if (!allow_unknown) finding("a tensor of unknown dtype kept by the strict parser");
      if (is_core_dtype(e.dtype_str)) finding("a known dtype marked unknown");
      if (e.dtype_str.empty() || e.dtype_str.size() > 32) finding("unknown dtype name of a bad length");
    }
    uint64_t n = 1;
    for (int64_t d : e.shape) {
      if (d < 0) finding("negative dimension");
      if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) finding("element count overflows");
    }
    if (n > static_cast<uint64_t>(INT64_MAX)) finding("element count past int64");
    const uint64_t esize = e.known_dtype ? llm::dtype_size(e.dtype) : llm::safetensors_dtype_size(e.dtype_str);
    if (esize) {
      uint64_t bytes = 0;
      if (__builtin_mul_overflow(n, esize, &bytes) || bytes != e.end - e.begin)
        finding("byte count does not match the shape");
    } else if ((n == 0) != (e.begin == e.end)) {
      finding("an empty tensor with bytes, or bytes for no elements");
    }
    if (e.end > e.begin) ranges.emplace_back(e.begin, e.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) finding("tensors overlap");
}

// Parses in one mode: the header, or nullopt after an error that names the file.
std::optional<llm::SafetensorsHeader> parse(const uint8_t* data, size_t size, uint64_t file_size,
                                            bool allow_unknown) {
  llm::SafetensorsParseOptions options;
  options.allow_unknown_dtypes = allow_unknown;
  try {
    llm::SafetensorsHeader h = llm::parse_safetensors_header(data, size, file_size, kName, options);
    check(h, file_size, allow_unknown);
    return h;
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).find(kName) == std::string::npos) finding("error message does not name the file");
  }
  return std::nullopt;
}

// Both modes on one file: a strict success must be a permissive success with
// the same tensors, and a permissive failure a strict failure.
void both_modes(const uint8_t* data, size_t size, uint64_t file_size) {
  const auto strict = parse(data, size, file_size, false);
  const auto loose = parse(data, size, file_size, true);
  if (strict && !loose) finding("allow_unknown_dtypes refuses a file the strict parser accepts");
  if (strict && loose) {
    if (strict->entries.size() != loose->entries.size() || strict->metadata != loose->metadata)
      finding("the modes parse a file of known dtypes differently");
    for (const auto& [name, e] : strict->entries) {
      const auto it = loose->entries.find(name);
      if (it == loose->entries.end() || !it->second.known_dtype || it->second.dtype != e.dtype ||
          it->second.shape != e.shape || it->second.begin != e.begin || it->second.end != e.end)
        finding("the modes parse a tensor differently");
    }
  }
  if (loose && !strict) {
    bool any_unknown = false;
    for (const auto& [name, e] : loose->entries) any_unknown |= !e.known_dtype;
    if (!any_unknown) finding("the strict parser refuses a file of known dtypes that allow_unknown_dtypes accepts");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  both_modes(data, size, size);
  // The same bytes as the start of a longer file (the data section not in memory).
  if (size >= 8) {
    const uint64_t file_size = size + (uint64_t{data[size - 1]} << 8);
    try {
      both_modes(data, size, file_size);
    } catch (const std::logic_error&) {
      // The header extends past `size`: the real reader never passes less than the whole header.
    }
  }
  return 0;
}
