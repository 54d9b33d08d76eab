// The checkpoint manifest parser (manifest.json; the format is described in
// checkpoint/checkpoint.h), on text in memory: no file system, no model, only
// nlohmann-json and core/dtype.h, so tests/fuzz/ can build it alone with clang
// and libFuzzer. open_checkpoint reads the file and hands the text here.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llm {

constexpr int kCheckpointFormatVersion = 2;

// One box of a full tensor held by a shard file (under `key` in `file`).
struct ManifestSlice {
  std::string file, key;
  bool flat = false;            // version 1: the flat element range [begin, end) of the full tensor
  int64_t begin = 0, end = 0;
  std::vector<int64_t> offset;  // version 2: the box [offset, offset + shape), inside the full shape
  std::vector<int64_t> shape;
};

struct ManifestTensor {
  std::string name, kind;     // kind: "param", "exp_avg", "exp_avg_sq"
  std::vector<int64_t> shape;  // the full tensor's
  std::string dtype;           // a known dtype name, or "" when the entry has none
  std::vector<ManifestSlice> slices;
};

struct ManifestFile {
  uint64_t bytes = 0, xxh64 = 0;
};

struct ParsedManifest {
  // The whole document. "model" and "training_state" are checked to convert
  // to ModelConfig and TrainingState without surprises (integers where those
  // hold integers); "optimizer" is null or an object with an integer "steps"
  // (set to null when absent); "layout" and "args" are objects or null.
  nlohmann::json document;
  int format_version = 0;
  std::vector<ManifestTensor> tensors;
  std::map<std::string, ManifestFile> files;
};

// Parses and checks a manifest. Checked: JSON syntax; "format" is
// "llm-checkpoint" and "format_version" an integer from 1 to
// kCheckpointFormatVersion; every "files" name is a plain file name (see
// is_plain_checkpoint_file_name) with non-negative integer "bytes" and
// "xxh64"; every tensor has a name, a kind (each (name, kind) once), a shape
// of non-negative integers whose element count fits int64, a known dtype if
// any, and slices whose file the files table lists, with a key, and either a
// box inside the full shape (offset and shape of the tensor's rank, checked
// without overflow) or a flat range inside its element count. Throws
// std::runtime_error naming `name_for_errors` (and the tensor), never anything
// else, for any input.
ParsedManifest parse_manifest(const std::string& json_text, const std::string& name_for_errors);

// A name that stays inside the checkpoint directory: not empty, not "." or
// "..", no '/', '\\', "..", or control characters (so no absolute paths).
bool is_plain_checkpoint_file_name(const std::string& name);

}  // namespace llm
