// Shared by the tests that launch llm-train on the tiny model under several
// layouts and compare the runs: metrics and checkpoint readers, and a fixture
// holding the corpus, the model's flags and a launcher.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "layers/llama_model.h"
#include "tests/support/run_tool.h"

namespace llm::test {

// Each iteration's log line of a metrics file, by iteration.
inline std::map<int64_t, nlohmann::json> iterations(const std::string& metrics) {
  std::map<int64_t, nlohmann::json> out;
  for (const auto& j : read_jsonl(metrics))
    if (j.contains("lm_loss")) out[j["iteration"].get<int64_t>()] = j;
  return out;
}

inline double val_loss(const std::string& metrics) {
  double v = NAN;
  for (const auto& j : read_jsonl(metrics))
    if (j.contains("val_loss")) v = j["val_loss"];
  return v;
}

// A checkpoint loaded into one process holding the whole model (whatever
// layout wrote it): the flat parameter buffer in Hugging Face order.
inline std::vector<float> load_unsplit(const std::string& dir) {
  const llm::CheckpointOnDisk ck = llm::open_checkpoint(dir);
  llm::LlamaModel model(ck.model);
  llm::load_model_weights(ck, model);
  const llm::Tensor& v = model.params().values();
  return std::vector<float>(v.data<float>(), v.data<float>() + v.numel());
}

// ‖a − b‖ / ‖a‖
inline double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(a[i]) * a[i];
  }
  return std::sqrt(diff / norm);
}

// A category in llm-train's memory report, e.g. "optimizer_state 1.19 MiB (peak 1.19 MiB)".
inline double reported_bytes(const std::string& out, const std::string& category) {
  return bytes_after(out, "\n" + category + " ");
}

class TinyModelRuns : public ::testing::Test {
 public:  // the launch tests build their own command lines from these
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const auto r = prepare_test_corpus(*dir_);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { delete dir_; }

  // 4 layers (pp up to 4), 8 heads in 4 query groups (tp up to 4), 8 sequences
  // per step in micro-batches of 2 (dp up to 2 with accumulation left over);
  // clipping at 0.5 is active, so the global gradient norm must be right too.
  static std::string flags() {
    return " --num-layers 4 --hidden-size 64 --num-attention-heads 8 --num-query-groups 4 --seq-length 32"
           " --micro-batch-size 2 --global-batch-size 8 --train-iters 10 --lr 3e-3 --lr-warmup-iters 2"
           " --clip-grad 0.5 --log-interval 1 --eval-iters 3 --data-path " + (*dir_ / "gpl") +
           " --tokenizer-model " + (*dir_ / "tok.model");
  }
  // The model flags() describe (vocabulary: the 512-piece tokenizer), resolved.
  static llm::ModelConfig model_config() {
    llm::ModelConfig m;
    m.num_layers = 4;
    m.hidden_size = 64;
    m.num_attention_heads = 8;
    m.num_query_groups = 4;
    m.seq_length = 32;
    m.vocab_size = 512;
    return m.resolved();
  }
  static ToolResult train(int ranks, const std::string& extra) {
    if (ranks == 1) return run_tool("OMP_NUM_THREADS=1 " + bin("llm-train") + flags() + extra);
    return run_tool(mpiexec(ranks) + bin("llm-train") + flags() + extra);
  }
  static TempDir* dir_;
};
inline TempDir* TinyModelRuns::dir_ = nullptr;

}  // namespace llm::test
