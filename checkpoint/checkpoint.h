// Checkpoints: one directory per saved iteration under --save.
//
//   SAVE/latest                    name of the newest complete checkpoint
//   SAVE/iter_0000100/manifest.json
//   SAVE/iter_0000100/shard_r00000.safetensors   one per rank
//   SAVE/iter_0000100/tokenizer.model
//
// The manifest holds the format version, the model config, the layout it was
// saved under, every global tensor with the slice of it each shard file holds,
// an xxHash64 per file, and the full training state. Each tensor entry
//
//   {"name", "kind": "param"|"exp_avg"|"exp_avg_sq", "shape": FULL shape, "dtype",
//    "slices": [{"file", "key", "offset": [...], "shape": [...]}, ...]}
//
// lists the boxes [offset, offset + shape) of the full tensor that the shard
// files hold (one per tensor-parallel part; a whole tensor is one box at
// zero), so a loader can reassemble any other layout's parts from them.
// Version 1 slices were flat ranges {"begin", "end"} of the full tensor's
// elements; they are still read. A save writes into iter_N.tmp/, fsyncs, renames it,
// then replaces `latest` atomically: a crash leaves the previous one loadable.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/manifest.h"  // kCheckpointFormatVersion, parse_manifest
#include "layers/llama_model.h"
#include "optim/adamw.h"

namespace llm {

struct TrainingState {
  int64_t iteration = 0;
  int64_t consumed_samples = 0;
  int64_t skipped_iterations = 0;
  nlohmann::json sampler;    // data position (data/sampler.h SamplerState)
  nlohmann::json scheduler;  // learning-rate schedule settings
  nlohmann::json extra;      // anything else the trainer wants back
};
void to_json(nlohmann::json& j, const TrainingState& s);
void from_json(const nlohmann::json& j, TrainingState& s);

struct CheckpointContents {
  const LlamaModel* model = nullptr;  // gives the model config (or set `config`)
  std::optional<ModelConfig> config;  // used when model is null
  const AdamW* optimizer = nullptr;  // optional
  TrainingState state;
  nlohmann::json layout;  // {"tensor_parallel", "pipeline_parallel", "data_parallel", "zero_stage", "dtype"}
  nlohmann::json args;    // the run's options, for the record
  std::string tokenizer_model;  // copied into the checkpoint when set
};

// Writes root/iter_XXXXXXX atomically and points root/latest at it. Returns its path.
// One process: prepare, write shard 0, commit.
std::string save_checkpoint(const std::string& root, const CheckpointContents& c);

// The same in three steps for several writers (a shared file system):
// one rank prepares root/iter_N.tmp; every writer (one per distinct model
// shard) writes shard_r<rank>.safetensors and its part of the manifest; after
// all have written, one rank merges the parts into manifest.json and commits.
void prepare_checkpoint_dir(const std::string& root, int64_t iteration);
// Each parameter is saved as the box its part covers in the full tensor
// (ParameterInfo full_shape/full_offset). skip: parameters another writer
// saves (a tied embedding's copy on the last stage; a replicated tensor's copy
// on tensor-parallel ranks other than the first: every box must be saved once).
// `optimizer`, if given, must be laid out like `params`; so must `values`,
// written instead of the store's own (fp32 master weights in mixed precision).
void write_checkpoint_shard(const std::string& root, int64_t iteration, int shard_rank, const ParameterStore& params,
                            const AdamW* optimizer, const std::vector<std::string>& skip = {},
                            const Tensor* values = nullptr);
void write_checkpoint_shard(const std::string& root, int64_t iteration, int shard_rank, const LlamaModel& model,
                            const AdamW* optimizer, const std::vector<std::string>& skip = {});
// Merges the writers' parts: the entries of one (name, kind) become one tensor
// entry listing every writer's slices (refused if their full shapes or dtypes
// differ, or if the slices overlap or leave a gap in the full tensor). The
// model config comes from c.model, else c.config.
std::string commit_checkpoint(const std::string& root, const CheckpointContents& c);
// Retention (--keep-last N): removes committed iteration directories under
// root beyond the N newest (never the one `latest` names) and the temporary
// directories of unfinished saves older than the newest committed one (left by
// a crash). Returns the directories removed.
std::vector<std::string> remove_old_checkpoints(const std::string& root, int64_t keep_last);

// A checkpoint found on disk, its manifest read and checked.
//
// Integrity: open_checkpoint parses the manifest (parse_manifest: structure,
// types, file names that stay inside the directory, slices inside their full
// shapes) and checks that every listed file exists with the size the manifest
// records; it hashes nothing. A file's xxHash64 is checked the first time
// its data is used (verified_file: by a loader, or tokenizer_model()), once
// per file however many copies of this object ask, so each rank hashes only
// the shards it actually reads. Every error names the file.
class CheckpointFileVerifier;
struct CheckpointOnDisk {
  std::string dir;
  nlohmann::json manifest;  // the document as read ("optimizer" set to null when absent)
  int format_version = 0;
  std::vector<ManifestTensor> tensors;        // the tensor entries, checked
  std::map<std::string, ManifestFile> files;  // the files table, checked
  ModelConfig model;
  TrainingState state;
  std::string tokenizer_model() const;  // path inside dir (checksum verified), or "" if none
  // The path of a file the manifest lists, after checking (once) that it
  // exists, has the recorded size and its xxHash64 matches.
  std::string verified_file(const std::string& name) const;
  std::shared_ptr<CheckpointFileVerifier> verifier;  // shared by copies
};
// `path` is a --save root (its `latest` is used) or one iteration's directory.
// Verifies the format version, the manifest and each file's presence and
// size (checksums: when a file is first read, see above).
CheckpointOnDisk open_checkpoint(const std::string& path);
// Each local parameter's box is assembled from the slices that intersect it
// (any layout: whole tensors, parts along any dimension); the slices must
// cover it exactly once, and the entry's shape must be the parameter's full
// shape. Only the files of intersecting slices are read.
void load_parameters(const CheckpointOnDisk& ck, ParameterStore& params);
// The same values read into `flat`, laid out like `params` (any float dtype).
void load_parameters(const CheckpointOnDisk& ck, const ParameterStore& params, Tensor& flat);
// Refuses a checkpoint of another model config (naming both), then load_parameters.
void load_model_weights(const CheckpointOnDisk& ck, LlamaModel& model);
void load_optimizer_state(const CheckpointOnDisk& ck, AdamW& opt);

}  // namespace llm
