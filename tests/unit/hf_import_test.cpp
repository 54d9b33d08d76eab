// --load-hf: initialising the part of a model one rank holds (tensor-parallel
// boxes, pipeline-stage subsets, interleaved chunks, padded buckets) from a
// Hugging Face safetensors directory, the inverse of export_hf. Every element
// must equal the full model's element bitwise, from a single file or from
// sharded files with an index; bf16/f16/f64 tensors convert exactly; bad
// directories fail with messages naming the file and the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/hf_format.h"
#include "checkpoint/safetensors.h"
#include "layers/llama_model.h"
#include "tests/support/run_tool.h"

using namespace llm;
using llm::test::TempDir;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kSeed = 4321;

// A tensor-parallel group that only knows its rank and size: building a
// model's part needs no communication.
class FakeGroup : public Communicator {
 public:
  FakeGroup(int rank, int size) : rank_(rank), size_(size) {
    for (int r = 0; r < size; ++r) members_.push_back(r);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::vector<int>& members() const override { return members_; }
  const std::string& name() const override { return name_; }
  CommHandlePtr all_reduce_async(Tensor&, ReduceOp) override { return fail(); }
  CommHandlePtr reduce_scatter_async(const Tensor&, Tensor&, ReduceOp) override { return fail(); }
  CommHandlePtr all_gather_async(const Tensor&, Tensor&) override { return fail(); }
  CommHandlePtr broadcast_async(Tensor&, int) override { return fail(); }
  CommHandlePtr send_async(const Tensor&, int, int) override { return fail(); }
  CommHandlePtr recv_async(Tensor&, int, int) override { return fail(); }
  void barrier() override { fail(); }

 private:
  static CommHandlePtr fail() { throw std::logic_error("FakeGroup: no communication in this test"); }
  int rank_, size_;
  std::vector<int> members_;
  std::string name_ = "tp";
};

ModelConfig tiny_config(bool tie) {
  ModelConfig c;
  c.vocab_size = 12;
  c.hidden_size = 16;
  c.ffn_hidden_size = 24;
  c.num_layers = 4;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;  // grouped-query attention, divisible by 2 tensor-parallel ranks
  c.seq_length = 8;
  c.init_std = 0.3;
  c.tie_embeddings = tie;
  return c;
}

// The part a rank holds: its pipeline chunks and tensor-parallel rank.
struct Layout {
  std::string name;
  int tp_rank = 0, tp_size = 1;
  std::vector<PipelineStage> chunks = {PipelineStage{}};
  bool padded_buckets = false;  // buckets padded to a multiple of 7 (ZeRO's layout)
};

struct Part {
  std::unique_ptr<FakeGroup> group;
  std::unique_ptr<LlamaModel> model;
};

Part make_part(const ModelConfig& cfg, const Layout& l) {
  Part p;
  TensorParallel tp;
  if (l.tp_size > 1) {
    p.group = std::make_unique<FakeGroup>(l.tp_rank, l.tp_size);
    tp.group = p.group.get();
  }
  p.model = std::make_unique<LlamaModel>(cfg, DType::F32, Device::cpu(), l.chunks, tp);
  if (l.padded_buckets) {
    std::vector<size_t> firsts;
    for (size_t i = 0; i < p.model->params().infos().size(); i += 4) firsts.push_back(i);
    p.model->params().set_buckets(firsts, 7);
  }
  return p;
}

std::vector<Layout> layouts(int64_t layers) {
  std::vector<Layout> v;
  v.push_back({"whole model"});
  for (int r = 0; r < 2; ++r) v.push_back({"tp rank " + std::to_string(r) + " of 2", r, 2});
  for (int s = 0; s < 3; ++s)
    v.push_back({"pp stage " + std::to_string(s) + " of 3", 0, 1, {PipelineStage::balanced(layers, s, 3)}});
  for (int s = 0; s < 2; ++s)
    for (int r = 0; r < 2; ++r)
      v.push_back({"tp rank " + std::to_string(r) + " x pp stage " + std::to_string(s), r, 2,
                   {PipelineStage::balanced(layers, s, 2)}, /*padded_buckets=*/true});
  // Interleaved: rank 1 of 2 with 2 virtual chunks of a 4-stage split (stages 1 and 3).
  v.push_back({"interleaved chunks 1 and 3 of 4", 0, 1,
               {PipelineStage::balanced(layers, 1, 4), PipelineStage::balanced(layers, 3, 4)}});
  return v;
}

// The full model's value at the full index of element i of part parameter p.
double full_value(const ParameterStore& full, const ParameterInfo& p, int64_t i) {
  const ParameterInfo& f = full.info(p.name);
  int64_t rem = i, flat = 0, stride_local = p.numel, stride_full = f.numel;
  for (size_t d = 0; d < p.shape.size(); ++d) {
    stride_local /= p.shape[d];
    stride_full /= f.shape[d];
    const int64_t idx = rem / stride_local;
    rem %= stride_local;
    flat += (idx + p.full_offset[d]) * stride_full;
  }
  return full.values().data<float>()[f.offset + flat];
}

constexpr float kSentinel = -1234.5f;

// A flat buffer laid out like part's parameters, filled with a sentinel
// (so that writes outside the parameters show).
Tensor sentinel_flat(const ParameterStore& ps, DType dtype) {
  Tensor t = Tensor::empty({ps.padded_numel()}, dtype, MemoryCategory::Workspace);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == DType::F32) t.data<float>()[i] = kSentinel;
    else t.data<double>()[i] = kSentinel;
  }
  return t;
}

double at(const Tensor& t, int64_t i) { return t.dtype() == DType::F32 ? t.data<float>()[i] : t.data<double>()[i]; }

// Every element of every parameter of `part` equals `expect(full value)`
// bitwise; everything else of the flat buffer is untouched.
void expect_loaded(const ParameterStore& full, const ParameterStore& part, const Tensor& flat, const std::string& what,
                   const std::function<double(double)>& expect = [](double x) { return x; }) {
  std::vector<char> covered(static_cast<size_t>(flat.numel()), 0);
  for (const auto& p : part.infos())
    for (int64_t i = 0; i < p.numel; ++i) {
      covered[static_cast<size_t>(p.offset + i)] = 1;
      const double want = expect(full_value(full, p, i)), got = at(flat, p.offset + i);
      if (std::memcmp(&want, &got, sizeof(double)) != 0) {
        ADD_FAILURE() << what << ": " << p.name << " local element " << i << ": " << got << " != " << want;
        return;
      }
    }
  for (int64_t i = 0; i < flat.numel(); ++i)
    if (!covered[static_cast<size_t>(i)]) {
      ASSERT_EQ(at(flat, i), kSentinel) << what << ": padding element " << i;
    }
}

struct Reference {
  ModelConfig cfg;
  std::unique_ptr<LlamaModel> full;
};

Reference exported(const std::string& dir, bool tie, DType dtype = DType::F32) {
  Reference r{tiny_config(tie), nullptr};
  r.full = std::make_unique<LlamaModel>(r.cfg);
  r.full->initialize(kSeed);
  export_hf(*r.full, "", dir, dtype);
  return r;
}

// A safetensors file's tensors with their raw bytes, to rewrite test files.
struct RawTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<char> bytes;
};

std::vector<RawTensor> read_raw(const std::string& path) {
  SafetensorsReader r(path);
  std::vector<RawTensor> v;
  for (const auto& [name, e] : r.entries()) {
    Tensor t = Tensor::empty(e.shape, e.dtype, MemoryCategory::Workspace);
    r.read_into(name, t);
    const char* b = static_cast<const char*>(t.raw());
    v.push_back({name, e.dtype, e.shape, std::vector<char>(b, b + t.nbytes())});
  }
  return v;
}

void write_raw(const std::string& path, const std::vector<RawTensor>& tensors) {
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const auto& t : tensors) w.add_raw(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
  w.write(path);
}

// Applies f to dir/model.safetensors' tensor list and writes it back.
void rewrite(const std::string& dir, const std::function<void(std::vector<RawTensor>&)>& f) {
  const std::string path = dir + "/model.safetensors";
  auto v = read_raw(path);
  f(v);
  write_raw(path, v);
}

void edit_config(const std::string& dir, const std::function<void(nlohmann::json&)>& f) {
  nlohmann::json j;
  {
    std::ifstream in(dir + "/config.json");
    j = nlohmann::json::parse(in);
  }
  f(j);
  std::ofstream(dir + "/config.json") << j.dump(2);
}

// Splits dir/model.safetensors into two shards + index in out_dir (config.json copied).
void shard(const std::string& dir, const std::string& out_dir) {
  fs::create_directories(out_dir);
  fs::copy_file(dir + "/config.json", out_dir + "/config.json");
  const auto all = read_raw(dir + "/model.safetensors");
  std::vector<RawTensor> parts[2];
  nlohmann::json map = nlohmann::json::object();
  size_t total = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const int k = i < all.size() / 2 ? 0 : 1;
    parts[k].push_back(all[i]);
    map[all[i].name] = "model-0000" + std::to_string(k + 1) + "-of-00002.safetensors";
    total += all[i].bytes.size();
  }
  for (int k = 0; k < 2; ++k)
    write_raw(out_dir + "/model-0000" + std::to_string(k + 1) + "-of-00002.safetensors", parts[k]);
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", map}};
  std::ofstream(out_dir + "/model.safetensors.index.json") << index.dump(2);
}

// The message of the runtime_error that f throws ("" if none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

std::string load_error(const std::string& dir, const ModelConfig& cfg, const Layout& l = {"whole model"}) {
  Part p = make_part(cfg, l);
  Tensor flat = sentinel_flat(p.model->params(), DType::F32);
  return error_of([&] { load_hf_parameters(dir, cfg, p.model->params(), flat); });
}

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

void round_trip(bool tie) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, tie);
  for (const auto& l : layouts(ref.cfg.num_layers)) {
    Part p = make_part(ref.cfg, l);
    for (DType dt : {DType::F32, DType::F64}) {
      Tensor flat = sentinel_flat(p.model->params(), dt);
      std::vector<std::string> warnings;
      load_hf_parameters(dir, ref.cfg, p.model->params(), flat, &warnings);
      EXPECT_TRUE(warnings.empty()) << l.name << ": " << warnings.front();
      expect_loaded(ref.full->params(), p.model->params(), flat, l.name + (dt == DType::F64 ? " (f64)" : ""));
    }
  }
}

}  // namespace

TEST(HfImport, EveryLayoutGetsItsBoxOfTheUntiedModel) { round_trip(false); }

TEST(HfImport, EveryLayoutGetsItsBoxOfTheTiedModel) {
  round_trip(true);
  // The tied copy on the last stage of several is read from embed_tokens.
  Part last = make_part(tiny_config(true), {"last", 0, 1, {PipelineStage::balanced(4, 1, 2)}});
  EXPECT_TRUE(last.model->params().has("model.embed_tokens.weight"));
}

TEST(HfImport, SplitsAreRowsAndColumnsOfTheFullTensors) {
  // The layouts above must really cover both kinds of split (and the vocab split).
  Part p = make_part(tiny_config(false), {"tp", 1, 2});
  const ParameterStore& ps = p.model->params();
  EXPECT_EQ(ps.info("model.layers.0.self_attn.q_proj.weight").full_offset, (std::vector<int64_t>{8, 0}));
  EXPECT_EQ(ps.info("model.layers.0.self_attn.o_proj.weight").full_offset, (std::vector<int64_t>{0, 8}));
  EXPECT_EQ(ps.info("model.layers.0.mlp.down_proj.weight").full_offset, (std::vector<int64_t>{0, 12}));
  EXPECT_EQ(ps.info("model.embed_tokens.weight").full_offset, (std::vector<int64_t>{6, 0}));
  EXPECT_EQ(ps.info("lm_head.weight").full_offset, (std::vector<int64_t>{6, 0}));
}

TEST(HfImport, Bf16ExportImportsAsTheRoundedValues) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false, DType::BF16);
  const auto rounded = [](double x) { return static_cast<double>(static_cast<float>(bf16(static_cast<float>(x)))); };
  for (const auto& l : layouts(ref.cfg.num_layers)) {
    Part p = make_part(ref.cfg, l);
    Tensor flat = sentinel_flat(p.model->params(), DType::F32);
    load_hf_parameters(dir, ref.cfg, p.model->params(), flat);
    expect_loaded(ref.full->params(), p.model->params(), flat, l.name + " (bf16)", rounded);
  }
}

TEST(HfImport, F16AndF64TensorsConvertExactly) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  // Every third tensor as F16, every third as F64, the rest F32.
  std::map<std::string, int> kind;
  rewrite(dir, [&](std::vector<RawTensor>& v) {
    for (size_t i = 0; i < v.size(); ++i) {
      RawTensor& t = v[i];
      const int64_t n = static_cast<int64_t>(t.bytes.size() / 4);
      std::vector<float> f(static_cast<size_t>(n));
      std::memcpy(f.data(), t.bytes.data(), t.bytes.size());
      kind[t.name] = static_cast<int>(i % 3);
      if (i % 3 == 1) {
        t.dtype = DType::F16;
        t.bytes.resize(static_cast<size_t>(n) * 2);
        for (int64_t j = 0; j < n; ++j) {
          const uint16_t h = float_to_half(f[static_cast<size_t>(j)]);
          std::memcpy(t.bytes.data() + 2 * j, &h, 2);
        }
      } else if (i % 3 == 2) {
        t.dtype = DType::F64;
        t.bytes.resize(static_cast<size_t>(n) * 8);
        for (int64_t j = 0; j < n; ++j) {
          const double d = f[static_cast<size_t>(j)];
          std::memcpy(t.bytes.data() + 8 * j, &d, 8);
        }
      }
    }
  });
  for (const auto& l : {Layout{"whole model"}, Layout{"tp rank 1 of 2", 1, 2}}) {
    Part p = make_part(ref.cfg, l);
    for (DType dt : {DType::F32, DType::F64}) {
      Tensor flat = sentinel_flat(p.model->params(), dt);
      load_hf_parameters(dir, ref.cfg, p.model->params(), flat);
      for (const auto& info : p.model->params().infos()) {
        for (int64_t i = 0; i < info.numel; ++i) {
          const float x = static_cast<float>(full_value(ref.full->params(), info, i));
          const double want = kind[info.name] == 1 ? static_cast<double>(half_to_float(float_to_half(x))) : x;
          ASSERT_EQ(at(flat, info.offset + i), want) << l.name << " " << info.name << " element " << i;
        }
      }
    }
  }
}

TEST(HfImport, ShardedCheckpointEqualsSingleFile) {
  TempDir tmp;
  const std::string dir = tmp / "hf", sharded = tmp / "sharded";
  Reference ref = exported(dir, false);
  shard(dir, sharded);
  ASSERT_FALSE(fs::exists(sharded + "/model.safetensors"));
  for (const auto& l : layouts(ref.cfg.num_layers)) {
    Part p = make_part(ref.cfg, l);
    Tensor a = sentinel_flat(p.model->params(), DType::F32), b = sentinel_flat(p.model->params(), DType::F32);
    load_hf_parameters(dir, ref.cfg, p.model->params(), a);
    std::vector<std::string> warnings;
    load_hf_parameters(sharded, ref.cfg, p.model->params(), b, &warnings);
    EXPECT_TRUE(warnings.empty());
    ASSERT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << l.name;
  }
  // Inference tools read the sharded directory too.
  InferenceModel m = load_for_inference(sharded);
  EXPECT_EQ(m.source, "hf");
  ASSERT_EQ(m.model->params().values().nbytes(), ref.full->params().values().nbytes());
  EXPECT_EQ(std::memcmp(m.model->params().values().raw(), ref.full->params().values().raw(),
                        ref.full->params().values().nbytes()),
            0);
}

TEST(HfImport, LoadHfWeightsLoadsTheWholeModel) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, true);
  LlamaModel m(read_hf_config(dir));
  load_hf_weights(dir, m);
  ASSERT_EQ(std::memcmp(m.params().values().raw(), ref.full->params().values().raw(),
                        ref.full->params().values().nbytes()),
            0);
}

TEST(HfImport, ExtraTensorsWarnAndInvFreqAndTiedLmHeadAreIgnored) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, true);
  rewrite(dir, [](std::vector<RawTensor>& v) {
    RawTensor lm = v.front();  // any [V, d] tensor: an lm_head that transformers would tie anyway
    for (const auto& t : v)
      if (t.name == "model.embed_tokens.weight") lm = t;
    lm.name = "lm_head.weight";
    std::memset(lm.bytes.data(), 0, lm.bytes.size());
    v.push_back(lm);
    v.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", DType::F32, {2}, std::vector<char>(8, 0)});
    v.push_back({"model.extra_scale", DType::F32, {1}, std::vector<char>(4, 0)});
    v.push_back({"model.position_ids", DType::I32, {3}, std::vector<char>(12, 0)});
  });
  Part p = make_part(ref.cfg, {"last stage", 0, 1, {PipelineStage::balanced(4, 1, 2)}});
  Tensor flat = sentinel_flat(p.model->params(), DType::F32);
  std::vector<std::string> warnings;
  load_hf_parameters(dir, ref.cfg, p.model->params(), flat, &warnings);
  expect_loaded(ref.full->params(), p.model->params(), flat, "tied, with extras");
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_TRUE(has(warnings[0], "model.extra_scale") || has(warnings[1], "model.extra_scale"));
  EXPECT_TRUE(has(warnings[0], "model.position_ids") || has(warnings[1], "model.position_ids"));
  EXPECT_TRUE(has(warnings[0], dir + "/model.safetensors"));
}

TEST(HfImport, ConfigMismatchNamesConfigJsonAndBothValues) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  ModelConfig other = ref.cfg;
  other.hidden_size = 32;
  std::string e = load_error(dir, other);
  EXPECT_TRUE(has(e, dir + "/config.json")) << e;
  EXPECT_TRUE(has(e, "hidden_size is 16")) << e;
  EXPECT_TRUE(has(e, "configured with 32")) << e;
  EXPECT_TRUE(has(e, "--hidden-size")) << e;

  ModelConfig tied = ref.cfg;
  tied.tie_embeddings = true;
  e = load_error(dir, tied);
  EXPECT_TRUE(has(e, "tie_word_embeddings is false")) << e;
  EXPECT_TRUE(has(e, "configured with true")) << e;

  edit_config(dir, [](nlohmann::json& j) {
    j["rope_theta"] = 500000.0;
    j["rms_norm_eps"] = 1e-6;
    j["num_key_value_heads"] = 4;
  });
  e = load_error(dir, ref.cfg);
  EXPECT_TRUE(has(e, "rope_theta is 500000.0")) << e;
  EXPECT_TRUE(has(e, "rms_norm_eps is 1e-06")) << e;
  EXPECT_TRUE(has(e, "num_key_value_heads is 4 but the model is configured with 2")) << e;

  // seq_length and init_std do not matter for the parameters.
  edit_config(dir, [&](nlohmann::json& j) {
    j["rope_theta"] = ref.cfg.rope_theta;
    j["rms_norm_eps"] = ref.cfg.norm_eps;
    j["num_key_value_heads"] = ref.cfg.num_query_groups;
  });
  ModelConfig longer = ref.cfg;
  longer.seq_length = 64;
  longer.init_std = 0.02;
  EXPECT_EQ(load_error(dir, longer), "");
}

TEST(HfImport, MissingTensorFailsOnEveryRank) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  rewrite(dir, [](std::vector<RawTensor>& v) {
    std::erase_if(v, [](const RawTensor& t) { return t.name == "model.layers.3.mlp.up_proj.weight"; });
  });
  // Also the first stage, which does not hold layer 3.
  for (const Layout& l : {Layout{"whole"}, Layout{"stage 0", 0, 1, {PipelineStage::balanced(4, 0, 2)}}}) {
    const std::string e = load_error(dir, ref.cfg, l);
    EXPECT_TRUE(has(e, dir + "/model.safetensors")) << e;
    EXPECT_TRUE(has(e, "'model.layers.3.mlp.up_proj.weight'")) << e;
  }
}

TEST(HfImport, UntiedModelNeedsLmHead) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  rewrite(dir, [](std::vector<RawTensor>& v) {
    std::erase_if(v, [](const RawTensor& t) { return t.name == "lm_head.weight"; });
  });
  const std::string e = load_error(dir, ref.cfg);
  EXPECT_TRUE(has(e, dir + "/model.safetensors")) << e;
  EXPECT_TRUE(has(e, "'lm_head.weight'")) << e;
  EXPECT_TRUE(has(e, "tie_word_embeddings")) << e;
}

TEST(HfImport, WrongShapeNamesTensorAndBothShapes) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  rewrite(dir, [](std::vector<RawTensor>& v) {
    for (auto& t : v)
      if (t.name == "model.layers.1.self_attn.o_proj.weight") t.shape = {8, 32};  // same bytes, wrong shape
  });
  const std::string e = load_error(dir, ref.cfg, {"tp rank 0 of 2", 0, 2});
  EXPECT_TRUE(has(e, dir + "/model.safetensors")) << e;
  EXPECT_TRUE(has(e, "'model.layers.1.self_attn.o_proj.weight'")) << e;
  EXPECT_TRUE(has(e, "[8, 32]")) << e;
  EXPECT_TRUE(has(e, "[16, 16]")) << e;
}

TEST(HfImport, UnsupportedDtypeIsRefused) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  rewrite(dir, [](std::vector<RawTensor>& v) {
    for (auto& t : v)
      if (t.name == "model.norm.weight") t.dtype = DType::I32;
  });
  const std::string e = load_error(dir, ref.cfg);
  EXPECT_TRUE(has(e, dir + "/model.safetensors")) << e;
  EXPECT_TRUE(has(e, "'model.norm.weight'")) << e;
  EXPECT_TRUE(has(e, "I32")) << e;
}

TEST(HfImport, TruncatedFileIsRefusedBeforeReading) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  const std::string path = dir + "/model.safetensors";
  const auto size = fs::file_size(path);
  fs::resize_file(path, size - 100);
  std::string e = load_error(dir, ref.cfg);
  EXPECT_TRUE(has(e, path)) << e;
  EXPECT_TRUE(has(e, "truncated")) << e;
  fs::resize_file(path, 20);  // inside the header
  e = load_error(dir, ref.cfg);
  EXPECT_TRUE(has(e, path)) << e;
  EXPECT_TRUE(has(e, "truncated")) << e;
}

TEST(HfImport, IndexNamingAMissingFileIsRefused) {
  TempDir tmp;
  const std::string dir = tmp / "hf", sharded = tmp / "sharded";
  Reference ref = exported(dir, false);
  shard(dir, sharded);
  fs::remove(sharded + "/model-00002-of-00002.safetensors");
  // Even a rank that needs nothing from the missing file fails.
  const std::string e = load_error(sharded, ref.cfg, {"stage 0", 0, 1, {PipelineStage::balanced(4, 0, 3)}});
  EXPECT_TRUE(has(e, sharded + "/model.safetensors.index.json")) << e;
  EXPECT_TRUE(has(e, sharded + "/model-00002-of-00002.safetensors")) << e;
  EXPECT_TRUE(has(e, "does not exist")) << e;
}

TEST(HfImport, DirectoryWithoutWeightsIsRefused) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  fs::remove(dir + "/model.safetensors");
  const std::string e = load_error(dir, ref.cfg);
  EXPECT_TRUE(has(e, "model.safetensors.index.json")) << e;
  EXPECT_TRUE(has(e, dir)) << e;
}

TEST(HfImport, LargeTensorsAreReadInSpansAndStridedColumnsRowByRow) {
  // Sizes that take the reader's other paths: a tied embedding of 270000 x 16
  // floats (17 MB, more than one 16 MiB read) and down_proj [16, 4096] whose
  // column halves are 8 KB apart (one read per row).
  TempDir tmp;
  const std::string dir = tmp / "hf";
  ModelConfig cfg;
  cfg.vocab_size = 270000;
  cfg.hidden_size = 16;
  cfg.ffn_hidden_size = 4096;
  cfg.num_layers = 1;
  cfg.num_attention_heads = 2;
  cfg.seq_length = 8;
  cfg.tie_embeddings = true;
  LlamaModel full(cfg);
  full.initialize(kSeed);
  export_hf(full, "", dir, DType::F32);
  for (const auto& l : {Layout{"whole model"}, Layout{"tp rank 0 of 2", 0, 2}, Layout{"tp rank 1 of 2", 1, 2}}) {
    Part p = make_part(cfg, l);
    Tensor flat = sentinel_flat(p.model->params(), DType::F64);
    load_hf_parameters(dir, cfg, p.model->params(), flat);
    expect_loaded(full.params(), p.model->params(), flat, l.name);
  }
}

namespace {

// A tensor of any safetensors dtype name (SafetensorsWriter only writes ours).
struct AnyTensor {
  std::string name, dtype;
  Shape shape;
  std::vector<char> bytes;
};

// Writes a safetensors file of `tensors` in order, after `edit` changes its header.
void write_any(const std::string& path, const std::vector<AnyTensor>& tensors,
               const std::function<void(nlohmann::json&)>& edit = {}) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data.append(t.bytes.data(), t.bytes.size());
  }
  header["__metadata__"] = {{"format", "pt"}};
  if (edit) edit(header);
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[static_cast<size_t>(i)] = static_cast<char>((uint64_t{h.size()} >> (8 * i)) & 0xff);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << len << h << data;
}

std::vector<AnyTensor> read_any(const std::string& path) {
  std::vector<AnyTensor> v;
  for (auto& t : read_raw(path)) v.push_back({t.name, dtype_name(t.dtype), t.shape, std::move(t.bytes)});
  return v;
}

// Rewrites dir/model.safetensors: its tensors after `f`, its header after `edit`.
void rewrite_any(const std::string& dir, const std::function<void(std::vector<AnyTensor>&)>& f,
                 const std::function<void(nlohmann::json&)>& edit = {}) {
  const std::string path = dir + "/model.safetensors";
  auto v = read_any(path);
  if (f) f(v);
  write_any(path, v, edit);
}

}  // namespace

TEST(HfImport, ExtraTensorsOfDtypesWeDoNotReadAreIgnoredWithAWarning) {
  // Real HF files hold I64 / U8 / BOOL / FP8 buffers beside the weights.
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  rewrite_any(dir, [](std::vector<AnyTensor>& v) {
    v.insert(v.begin() + 3, {"model.position_ids", "I64", {1, 8}, std::vector<char>(64, 1)});
    v.push_back({"model.attention_mask_cache", "U8", {5}, std::vector<char>(5, 2)});
    v.push_back({"model.layers.0.flags", "BOOL", {2}, std::vector<char>(2, 1)});
    v.push_back({"model.layers.1.mlp.scale", "F8_E4M3", {3}, std::vector<char>(3, 4)});
    v.push_back({"model.layers.2.packed", "F4", {2, 3}, std::vector<char>(3, 5)});  // element size unknown
  });
  for (const auto& l : {Layout{"whole model"}, Layout{"tp rank 1 of 2", 1, 2},
                        Layout{"pp stage 1 of 2", 0, 1, {PipelineStage::balanced(4, 1, 2)}}}) {
    Part p = make_part(ref.cfg, l);
    Tensor flat = sentinel_flat(p.model->params(), DType::F32);
    std::vector<std::string> warnings;
    load_hf_parameters(dir, ref.cfg, p.model->params(), flat, &warnings);
    expect_loaded(ref.full->params(), p.model->params(), flat, l.name + ", with I64/U8/BOOL/F8/F4 extras");
    ASSERT_EQ(warnings.size(), 5u) << l.name;
    std::string all;
    for (const auto& w : warnings) {
      EXPECT_TRUE(has(w, dir + "/model.safetensors")) << w;
      EXPECT_TRUE(has(w, "ignored")) << w;
      all += w + "\n";
    }
    for (const char* want : {"'model.position_ids' I64[1, 8]", "'model.attention_mask_cache' U8[5]",
                             "'model.layers.0.flags' BOOL[2]", "'model.layers.1.mlp.scale' F8_E4M3[3]",
                             "'model.layers.2.packed' F4[2, 3]"})
      EXPECT_TRUE(has(all, want)) << want << " not in:\n" << all;
  }
  // The inference path reads the directory too.
  EXPECT_EQ(load_for_inference(dir).source, "hf");
}

TEST(HfImport, NeededTensorOfADtypeWeDoNotReadIsRefusedNamingIt) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  for (const auto& [dtype, esize] : std::vector<std::pair<std::string, size_t>>{{"I64", 8}, {"U8", 1}, {"F8_E5M2", 1}}) {
    rewrite_any(dir, [&](std::vector<AnyTensor>& v) {
      for (auto& t : v)
        if (t.name == "model.layers.3.mlp.up_proj.weight") {
          t.dtype = dtype;
          t.bytes.resize(static_cast<size_t>(shape_numel(t.shape)) * esize);
        }
    });
    // Also on a stage that does not hold layer 3: every rank fails alike.
    for (const Layout& l : {Layout{"whole"}, Layout{"stage 0", 0, 1, {PipelineStage::balanced(4, 0, 2)}}}) {
      const std::string e = load_error(dir, ref.cfg, l);
      EXPECT_TRUE(has(e, dir + "/model.safetensors")) << e;
      EXPECT_TRUE(has(e, "'model.layers.3.mlp.up_proj.weight'")) << e;
      EXPECT_TRUE(has(e, "has dtype " + dtype + ", which is not supported")) << e;
    }
    fs::remove_all(dir);
    exported(dir, false);
  }
}

TEST(HfImport, OverflowingShapesAndOverlappingOffsetsAreRefusedNamingTheFile) {
  TempDir tmp;
  const std::string dir = tmp / "hf", path = dir + "/model.safetensors";
  Reference ref = exported(dir, false);
  const std::string norm = "model.norm.weight";
  struct Case {
    std::string what;
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"2^62 F32 elements (2^64 bytes: 0 after wrapping)",
       [&](nlohmann::json& h) { h[norm]["shape"] = {uint64_t{1} << 62}; },
       {"'" + norm + "'", "too many elements"}},
      {"2^31 x 2^31 x 2 elements",
       [&](nlohmann::json& h) { h[norm]["shape"] = {uint64_t{1} << 31, uint64_t{1} << 31, 2}; },
       {"'" + norm + "'", "too many elements"}},
      {"an unneeded I64 tensor of 2^61 elements",
       [&](nlohmann::json& h) {
         h["model.position_ids"] = {{"dtype", "I64"}, {"shape", {uint64_t{1} << 61}}, {"data_offsets", {0, 0}}};
       },
       {"'model.position_ids'", "too many elements"}},
      {"a shape past int64", [&](nlohmann::json& h) { h[norm]["shape"] = {uint64_t{1} << 63}; },
       {"'" + norm + "'", "non-negative integers"}},
      {"a float shape", [&](nlohmann::json& h) { h[norm]["shape"] = {1e300}; }, {"'" + norm + "'", "non-negative integers"}},
      {"float data_offsets",
       [&](nlohmann::json& h) { h[norm]["data_offsets"] = {1e300, 1e300 + 64}; },
       {"'" + norm + "'", "two non-negative integers"}},
      {"negative data_offsets",
       [&](nlohmann::json& h) { h[norm]["data_offsets"] = {-64, 0}; },
       {"'" + norm + "'", "two non-negative integers"}},
      {"data_offsets overlapping the first tensor",
       [&](nlohmann::json& h) { h[norm]["data_offsets"] = {0, 64}; },
       {"'" + norm + "'", "overlap"}},
      {"data_offsets overlapping an unneeded U8 tensor",
       [&](nlohmann::json& h) {
         const uint64_t b = h[norm]["data_offsets"][0].get<uint64_t>();
         h["model.mask"] = {{"dtype", "U8"}, {"shape", {8}}, {"data_offsets", {b + 4, b + 12}}};
       },
       {"'" + norm + "'", "'model.mask'", "overlap"}},
  };
  const auto original = read_any(path);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    write_any(path, original, c.edit);
    // Also on a stage that does not hold the final norm.
    for (const Layout& l : {Layout{"whole"}, Layout{"stage 0", 0, 1, {PipelineStage::balanced(4, 0, 2)}}}) {
      const std::string e = load_error(dir, ref.cfg, l);
      EXPECT_TRUE(has(e, "'" + path + "' is not a valid safetensors file")) << e;
      for (const auto& n : c.needles) EXPECT_TRUE(has(e, n)) << n << " not in: " << e;
    }
  }
  write_any(path, original);
  EXPECT_EQ(load_error(dir, ref.cfg), "");
}

TEST(HfImport, ConfigSizesMustBePositiveIntegers) {
  TempDir tmp;
  const std::string dir = tmp / "hf";
  Reference ref = exported(dir, false);
  const std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"hidden_size", 16.5}, {"hidden_size", 1e300}, {"num_attention_heads", 0}, {"vocab_size", -12},
      {"intermediate_size", "24"}, {"head_dim", 1e300}, {"num_key_value_heads", nullptr}};
  for (const auto& [key, value] : cases) {
    SCOPED_TRACE(key + " = " + value.dump());
    nlohmann::json saved;
    edit_config(dir, [&](nlohmann::json& j) {
      saved = j;
      j[key] = value;
    });
    const std::string e = load_error(dir, ref.cfg);
    EXPECT_TRUE(has(e, dir + "/config.json")) << e;
    EXPECT_TRUE(has(e, "\"" + key + "\" is " + value.dump() + ", not a positive integer")) << e;
    edit_config(dir, [&](nlohmann::json& j) { j = saved; });
  }
  edit_config(dir, [](nlohmann::json& j) { j.erase("vocab_size"); });
  EXPECT_TRUE(has(load_error(dir, ref.cfg), "\"vocab_size\" is missing"));
  edit_config(dir, [](nlohmann::json& j) { j = nlohmann::json::array(); });
  EXPECT_TRUE(has(load_error(dir, ref.cfg), "not a JSON object"));
}
