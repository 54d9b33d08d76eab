// Checkpoints of tensor-parallel parts: every writer saves the box its part
// covers in the full tensor, commit merges the writers' entries, and a loader
// assembles any other layout's parts (whole, rows, columns, 2- or 4-way,
// uneven) from the boxes that meet them. Version-1 manifests (flat
// [begin, end) ranges) still load; gaps, overlaps and shape mismatches are
// refused with messages that name the tensor.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/safetensors.h"
#include "layers/parameters.h"
#include "optim/adamw.h"
#include "tests/support/run_tool.h"

using namespace llm;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kSeed = 1234;

// The test model: two matrices, a 1-D tensor that tensor parallelism splits
// and a replicated 1-D tensor (like a norm weight).
struct TensorSpec {
  std::string name;
  Shape full;
};
const std::vector<TensorSpec> kTensors = {
    {"layers.0.w", {8, 10}}, {"layers.0.v", {6, 12}}, {"embed.bias", {10}}, {"norm.weight", {7}}};

// Part `rank` of `parts` along `dim` (-1: whole tensors). Bounds full·r/parts,
// so 4 parts of 10 are uneven (2, 3, 2, 3). 1-D tensors are split along 0
// whenever dim >= 0; the norm weight is always replicated.
std::unique_ptr<ParameterStore> make_store(int dim, int rank, int parts) {
  auto s = std::make_unique<ParameterStore>(DType::F32, Device::cpu());
  for (const auto& t : kTensors) {
    const bool replicated = t.name == "norm.weight";
    const int d = (dim < 0 || replicated) ? -1 : std::min<int>(dim, static_cast<int>(t.full.size()) - 1);
    Shape local = t.full;
    TensorShard shard;
    if (d >= 0) {
      const int64_t n = t.full[d], lo = n * rank / parts, hi = n * (rank + 1) / parts;
      local[d] = hi - lo;
      shard = TensorShard{d, lo, n};
    }
    s->add(t.name, local, InitRule::Normal, 0.5, true, shard);
  }
  s->allocate();
  return s;
}

std::vector<std::unique_ptr<ParameterStore>> make_layout(int dim, int parts) {
  std::vector<std::unique_ptr<ParameterStore>> v;
  for (int r = 0; r < parts; ++r) v.push_back(make_store(dim, r, parts));
  return v;
}

// Element of the full tensor at the full index of local element i of p.
float full_value(const ParameterStore& full, const ParameterInfo& p, int64_t i, const Tensor& full_flat) {
  const ParameterInfo& f = full.info(p.name);
  int64_t rem = i, flat = 0, stride_local = p.numel, stride_full = f.numel;
  for (size_t d = 0; d < p.shape.size(); ++d) {
    stride_local /= p.shape[d];
    stride_full /= f.shape[d];
    const int64_t idx = rem / stride_local;
    rem %= stride_local;
    flat += (idx + p.full_offset[d]) * stride_full;
  }
  return full_flat.data<float>()[f.offset + flat];
}

// Every element of every part equals the full tensor's element at its full index.
void expect_parts_of(const ParameterStore& full, const Tensor& full_flat, const ParameterStore& part,
                     const Tensor& part_flat, const std::string& what) {
  for (const auto& p : part.infos())
    for (int64_t i = 0; i < p.numel; ++i)
      ASSERT_EQ(part_flat.data<float>()[p.offset + i], full_value(full, p, i, full_flat))
          << what << ": " << p.name << " local element " << i;
}

// Saves a checkpoint from the writers (rank r writes shard r); the replicated
// tensor is written by rank 0 only unless `all_write_replicated`.
std::string save(const std::string& root, int64_t iteration,
                 const std::vector<std::unique_ptr<ParameterStore>>& writers,
                 const std::vector<std::unique_ptr<AdamW>>* opts = nullptr, bool all_write_replicated = false) {
  prepare_checkpoint_dir(root, iteration);
  for (size_t r = 0; r < writers.size(); ++r) {
    std::vector<std::string> skip;
    if (r > 0 && !all_write_replicated)
      for (const auto& p : writers[r]->infos())
        if (p.replicated) skip.push_back(p.name);
    write_checkpoint_shard(root, iteration, static_cast<int>(r), *writers[r], opts ? (*opts)[r].get() : nullptr,
                           skip);
  }
  CheckpointContents c;
  c.config = ModelConfig{};
  c.state.iteration = iteration;
  if (opts) c.optimizer = (*opts)[0].get();
  return commit_checkpoint(root, c);
}

nlohmann::json read_manifest(const std::string& dir) {
  std::ifstream in(dir + "/manifest.json");
  return nlohmann::json::parse(in);
}
void write_manifest(const std::string& dir, const nlohmann::json& m) {
  std::ofstream(dir + "/manifest.json") << m.dump(1);
}
nlohmann::json& entry(nlohmann::json& m, const std::string& name, const std::string& kind = "param") {
  for (auto& t : m["tensors"])
    if (t["name"] == name && t["kind"] == kind) return t;
  throw std::runtime_error("no entry " + name);
}

// Runs f, expecting a std::runtime_error whose message contains every one of `needles`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    FAIL() << "no error (expected one mentioning '" << needles.front() << "')";
  } catch (const std::runtime_error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

// Loads `ck` into every layout and checks each part against the full reference.
void expect_loads_everywhere(const std::string& ck_path, const ParameterStore& ref) {
  const CheckpointOnDisk ck = open_checkpoint(ck_path);
  const std::vector<std::pair<int, int>> layouts = {{-1, 1}, {0, 2}, {1, 2}, {0, 4}, {1, 4}, {0, 3}};
  for (const auto& [dim, parts] : layouts) {
    for (int r = 0; r < parts; ++r) {
      auto s = make_store(dim, r, parts);  // zeros: every value must come from the checkpoint
      load_parameters(ck, *s);
      expect_parts_of(ref, ref.values(), *s, s->values(),
                      "dim " + std::to_string(dim) + " part " + std::to_string(r) + "/" + std::to_string(parts));
    }
  }
}

}  // namespace

TEST(CheckpointShards, InitialisedPartIsThePartOfTheFullTensor) {
  auto full = make_store(-1, 0, 1);
  full->initialize(kSeed);
  for (int dim : {0, 1})
    for (int parts : {2, 3, 4})
      for (int r = 0; r < parts; ++r) {
        auto s = make_store(dim, r, parts);
        s->initialize(kSeed);
        expect_parts_of(*full, full->values(), *s, s->values(), "init dim " + std::to_string(dim));
        EXPECT_EQ(s->info("norm.weight").replicated, true);
        EXPECT_EQ(s->info("layers.0.w").replicated, parts == 1);
      }
}

TEST(CheckpointShards, RowPartsMergeIntoOneEntryAndLoadUnderAnyLayout) {
  test::TempDir dir;
  auto full = make_store(-1, 0, 1);
  full->initialize(kSeed);
  auto writers = make_layout(0, 2);
  for (auto& w : writers) w->initialize(kSeed);
  const std::string path = save(dir / "rows", 7, writers);

  const nlohmann::json m = read_manifest(path);
  EXPECT_EQ(m["format_version"], kCheckpointFormatVersion);
  EXPECT_EQ(m["tensors"].size(), kTensors.size());  // one entry per (name, kind)
  for (const auto& t : m["tensors"]) {
    const std::string name = t["name"];
    if (name == "layers.0.w") {
      EXPECT_EQ(t["shape"], nlohmann::json({8, 10}));
      ASSERT_EQ(t["slices"].size(), 2u);
      EXPECT_EQ(t["slices"][0]["offset"], nlohmann::json({0, 0}));
      EXPECT_EQ(t["slices"][0]["shape"], nlohmann::json({4, 10}));
      EXPECT_EQ(t["slices"][1]["offset"], nlohmann::json({4, 0}));
      EXPECT_EQ(t["slices"][1]["file"], "shard_r00001.safetensors");
    }
    if (name == "norm.weight") {
      EXPECT_EQ(t["slices"].size(), 1u);
    }
  }
  expect_loads_everywhere(path, *full);
}

TEST(CheckpointShards, ColumnPartsWithOptimizerStateLoadUnderAnyLayout) {
  test::TempDir dir;
  auto full = make_store(-1, 0, 1);
  full->initialize(kSeed);
  auto writers = make_layout(1, 2);
  std::vector<std::unique_ptr<AdamW>> opts;
  for (auto& w : writers) {
    w->initialize(kSeed);
    opts.push_back(std::make_unique<AdamW>(*w, AdamWConfig{}));
    // Optimizer state that depends on the full index: the values, times 2 and -3.
    const float* v = w->values().data<float>();
    for (int64_t i = 0; i < w->numel(); ++i) {
      opts.back()->exp_avg().data<float>()[i] = 2 * v[i];
      opts.back()->exp_avg_sq().data<float>()[i] = -3 * v[i];
    }
  }
  const std::string path = save(dir / "cols", 3, writers, &opts);
  nlohmann::json m = read_manifest(path);
  EXPECT_EQ(entry(m, "layers.0.v", "exp_avg")["slices"][1]["offset"], nlohmann::json({0, 6}));
  expect_loads_everywhere(path, *full);

  // Optimizer state into a 4-way row layout.
  const CheckpointOnDisk ck = open_checkpoint(path);
  for (int r = 0; r < 4; ++r) {
    auto s = make_store(0, r, 4);
    AdamW opt(*s, {});
    load_parameters(ck, *s);
    load_optimizer_state(ck, opt);
    const float* v = s->values().data<float>();
    for (int64_t i = 0; i < s->numel(); ++i) {
      ASSERT_EQ(opt.exp_avg().data<float>()[i], 2 * v[i]) << i;
      ASSERT_EQ(opt.exp_avg_sq().data<float>()[i], -3 * v[i]) << i;
    }
  }
}

TEST(CheckpointShards, MissingPartLeavesAGap) {
  test::TempDir dir;
  auto writers = make_layout(0, 2);
  for (auto& w : writers) w->initialize(kSeed);
  // Commit refuses a tensor that a writer did not save.
  prepare_checkpoint_dir(dir / "ck", 1);
  write_checkpoint_shard(dir / "ck", 1, 0, *writers[0], nullptr);
  write_checkpoint_shard(dir / "ck", 1, 1, *writers[1], nullptr, {"layers.0.w", "norm.weight"});
  CheckpointContents c;
  c.config = ModelConfig{};
  c.state.iteration = 1;
  expect_error([&] { commit_checkpoint(dir / "ck", c); }, {"layers.0.w", "gap"});

  // A manifest without one part: loading the parts it meets names the gap;
  // a part that lies entirely in the saved half still loads.
  const std::string path = save(dir / "ck2", 1, writers);
  nlohmann::json m = read_manifest(path);
  auto& slices = entry(m, "layers.0.w")["slices"];
  slices.erase(slices.begin() + 1);  // rows 4..8
  write_manifest(path, m);
  const CheckpointOnDisk ck = open_checkpoint(path);
  auto whole = make_store(-1, 0, 1);
  expect_error([&] { load_parameters(ck, *whole); }, {"layers.0.w", "gap"});
  auto cols = make_store(1, 1, 2);
  expect_error([&] { load_parameters(ck, *cols); }, {"layers.0.w", "gap"});
  auto top = make_store(0, 0, 2);
  load_parameters(ck, *top);
  expect_parts_of(*writers[0], writers[0]->values(), *top, top->values(), "the saved half");
}

TEST(CheckpointShards, OverlappingPartsAreRefused) {
  test::TempDir dir;
  auto writers = make_layout(1, 2);
  for (auto& w : writers) w->initialize(kSeed);
  // Both writers save the replicated tensor: commit names the overlap.
  expect_error([&] { save(dir / "ck", 2, writers, nullptr, /*all_write_replicated=*/true); },
               {"norm.weight", "overlap"});

  // A manifest whose slices overlap (one part listed twice): loading refuses.
  const std::string path = save(dir / "ck2", 2, writers);
  nlohmann::json m = read_manifest(path);
  auto& slices = entry(m, "layers.0.v")["slices"];
  slices.push_back(slices[0]);
  write_manifest(path, m);
  auto whole = make_store(-1, 0, 1);
  expect_error([&] { load_parameters(open_checkpoint(path), *whole); }, {"layers.0.v", "overlap"});

  // A slice outside the full tensor.
  slices.erase(slices.end() - 1);
  slices[1]["offset"] = {0, 7};
  write_manifest(path, m);
  expect_error([&] { load_parameters(open_checkpoint(path), *whole); }, {"layers.0.v", "outside"});
}

TEST(CheckpointShards, FullShapeMismatchNamesBothShapes) {
  test::TempDir dir;
  auto writers = make_layout(0, 2);
  for (auto& w : writers) w->initialize(kSeed);
  const std::string path = save(dir / "ck", 1, writers);
  const CheckpointOnDisk ck = open_checkpoint(path);
  // A part of an [8, 11] tensor: the checkpoint holds [8, 10].
  ParameterStore s(DType::F32, Device::cpu());
  for (const auto& t : kTensors) {
    if (t.name == "layers.0.w")
      s.add(t.name, {8, 5}, InitRule::Normal, 0.5, true, TensorShard{1, 0, 11});
    else
      s.add(t.name, t.full, InitRule::Normal, 0.5, true);
  }
  s.allocate();
  expect_error([&] { load_parameters(ck, s); }, {"layers.0.w", "[8, 10]", "[8, 11]"});

  // Writers that disagree on a full shape: commit refuses.
  auto a = make_store(0, 0, 2);
  ParameterStore b(DType::F32, Device::cpu());
  b.add("layers.0.w", {4, 10}, InitRule::Normal, 0.5, true, TensorShard{0, 4, 9});
  b.allocate();
  prepare_checkpoint_dir(dir / "bad", 1);
  write_checkpoint_shard(dir / "bad", 1, 0, *a, nullptr);
  write_checkpoint_shard(dir / "bad", 1, 1, b, nullptr);
  CheckpointContents c;
  c.config = ModelConfig{};
  c.state.iteration = 1;
  expect_error([&] { commit_checkpoint(dir / "bad", c); }, {"layers.0.w", "disagree", "[8,10]", "[9,10]"});
}

TEST(CheckpointShards, VersionOneFlatRangesStillLoad) {
  test::TempDir dir;
  auto full = make_store(-1, 0, 1);
  full->initialize(kSeed);
  std::vector<std::unique_ptr<ParameterStore>> one;
  one.push_back(make_store(-1, 0, 1));
  one.back()->initialize(kSeed);
  const std::string path = save(dir / "v1", 5, one);

  // Rewrite it as version 1: whole tensors as [0, numel), except the matrices,
  // which are cut into flat ranges that start and end mid-row, held by an
  // extra file (each range its own key).
  nlohmann::json m = read_manifest(path);
  m["format_version"] = 1;
  SafetensorsWriter extra;
  for (auto& t : m["tensors"]) {
    const ParameterInfo& p = full->info(t["name"]);
    if (p.shape.size() == 2) {
      const std::vector<int64_t> cuts = {0, 7, 23, 40, p.numel - 3, p.numel};
      t["slices"] = nlohmann::json::array();
      for (size_t k = 0; k + 1 < cuts.size(); ++k) {
        const std::string key = p.name + ".range" + std::to_string(k);
        extra.add(key, full->values().flat_view(p.offset + cuts[k], {cuts[k + 1] - cuts[k]}));
        t["slices"].push_back({{"file", "extra.safetensors"}, {"key", key}, {"begin", cuts[k]}, {"end", cuts[k + 1]}});
      }
    } else {
      auto s = t["slices"][0];
      s.erase("offset");
      s.erase("shape");
      s["begin"] = 0;
      s["end"] = p.numel;
      t["slices"] = {s};
    }
  }
  const uint64_t digest = extra.write(path + "/extra.safetensors");
  m["files"]["extra.safetensors"] = {{"bytes", fs::file_size(path + "/extra.safetensors")}, {"xxh64", digest}};
  write_manifest(path, m);
  expect_loads_everywhere(path, *full);

  // Version-1 gaps are still refused.
  auto& sl = entry(m, "layers.0.v")["slices"];
  sl.erase(sl.begin() + 2);
  write_manifest(path, m);
  auto s = make_store(1, 0, 2);
  expect_error([&] { load_parameters(open_checkpoint(path), *s); }, {"layers.0.v", "gap"});
}
