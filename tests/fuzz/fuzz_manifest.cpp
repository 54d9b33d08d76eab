// libFuzzer target: the checkpoint manifest parser (checkpoint/manifest.h) on
// arbitrary text. A std::runtime_error naming the manifest is the expected
// answer to bad input; any other exception, a crash, a sanitizer report or a
// parsed manifest that breaks the parser's promises is a finding. Built and
// run by tests/fuzz/CMakeLists.txt.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "checkpoint/manifest.h"

namespace {

const std::string kName = "fuzz/manifest.json";

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "finding: %s\n", what);
  std::abort();
}

// What open_checkpoint and the loaders rely on.
void check(const llm::ParsedManifest& m) {
  if (m.format_version < 1 || m.format_version > llm::kCheckpointFormatVersion) finding("format version");
  if (!m.document.is_object() || !m.document.contains("optimizer")) finding("document");
  for (const auto& [name, f] : m.files)
    if (!llm::is_plain_checkpoint_file_name(name) || name.find('/') != std::string::npos) finding("file name");
  for (const auto& t : m.tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape)
      if (d < 0 || __builtin_mul_overflow(numel, d, &numel)) finding("tensor shape");
    for (const auto& s : t.slices) {
      if (!m.files.count(s.file)) finding("slice file not listed");
      if (s.flat) {
        if (s.begin < 0 || s.begin > s.end || s.end > numel) finding("flat range outside the tensor");
        continue;
      }
      if (s.offset.size() != t.shape.size() || s.shape.size() != t.shape.size()) finding("slice rank");
      for (size_t d = 0; d < t.shape.size(); ++d) {
        int64_t hi = 0;
        if (s.offset[d] < 0 || s.shape[d] < 0 || __builtin_add_overflow(s.offset[d], s.shape[d], &hi) ||
            hi > t.shape[d])
          finding("slice box outside the tensor");
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    check(llm::parse_manifest(text, kName));
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).find(kName) == std::string::npos) finding("error message does not name the manifest");
  }
  return 0;
}
