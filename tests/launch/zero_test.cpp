// ZeRO stages 0-3 and mixed precision, launched with mpiexec: every stage
// trains like one process (fp32), holds the model-state bytes the ZeRO paper
// predicts, moves the bytes it predicts, resumes exactly; bf16/fp16 runs keep
// 16-bit weights with fp32 master weights; an fp16 overflow is skipped and
// backs the loss scale off.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "tests/support/run_tool.h"
#include "tests/support/training_runs.h"

using namespace llm::test;

namespace {

using Zero = TinyModelRuns;

// Every "ratio r" of --report-memory (measured model states / predicted) is
// within 5% of 1; returns how many rows there were.
int check_memory_ratios(const std::string& out) {
  int rows = 0;
  for (size_t at = out.find(", ratio "); at != std::string::npos; at = out.find(", ratio ", at + 1), ++rows)
    EXPECT_NEAR(std::stod(out.substr(at + 8)), 1.0, 0.05) << out.substr(out.rfind('\n', at), 240);
  return rows;
}

// Predicted model-state bytes per parameter at data-parallel size n:
// k bytes per weight and per gradient, o for the optimizer state.
double formula(int stage, double n, double k, double o) {
  return k / (stage >= 3 ? n : 1) + k / (stage >= 2 ? n : 1) + o / (stage >= 1 ? n : 1);
}

TEST_F(Zero, EveryStageTrainsLikeOneProcessWithThePredictedMemory) {
  TempDir run;
  auto one = train(1, " --metrics-file " + (run / "one.jsonl") + " --save " + (run / "one_ck"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const auto a = iterations(run / "one.jsonl");
  const std::vector<float> final_one = load_unsplit(run / "one_ck");
  const std::vector<std::pair<int, std::string>> layouts = {
      {2, ""},
      {4, ""},
      {4, " --tensor-model-parallel-size 2 --sequence-parallel"},
      {4, " --pipeline-model-parallel-size 2"},
      {4, " --pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 1 --recompute-granularity full"},
  };
  for (int stage = 1; stage <= 3; ++stage) {
    std::map<int, double> states_by_dp;  // rank 0's measured model states, dp only
    for (const auto& [ranks, layout] : layouts) {
      SCOPED_TRACE("stage " + std::to_string(stage) + ", " + std::to_string(ranks) + " ranks" + layout);
      const std::string tag = std::to_string(stage) + "_" + std::to_string(ranks) + "_" + std::to_string(layout.size());
      auto r = train(ranks, layout + " --zero-stage " + std::to_string(stage) + " --report-memory --metrics-file " +
                                (run / (tag + ".jsonl")) + " --save " + (run / (tag + "_ck")));
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_NE(r.output.find("ZeRO stage " + std::to_string(stage) + ":"), std::string::npos) << r.output;
      EXPECT_EQ(check_memory_ratios(r.output), 2 * ranks) << r.output;  // after iteration 1 and at the end
      if (layout.empty()) states_by_dp[ranks] = bytes_after(r.output, "| model states ");
      const auto b = iterations(run / (tag + ".jsonl"));
      ASSERT_EQ(b.size(), 10u) << r.output;
      for (int64_t it = 1; it <= 10; ++it) {
        const double la = a.at(it)["lm_loss"], lb = b.at(it)["lm_loss"];
        EXPECT_NEAR(lb, la, 1e-5 * la) << it;
        const double ga = a.at(it)["grad_norm"], gb = b.at(it)["grad_norm"];
        EXPECT_NEAR(gb, ga, 1e-4 * ga) << it;
      }
      EXPECT_LT(relative_difference(final_one, load_unsplit(run / (tag + "_ck"))), 1e-5);
    }
    // The measured states fall with dp as the formula says (fp32: 4, 4, 8 bytes).
    ASSERT_GT(states_by_dp[2], 0);
    EXPECT_NEAR(states_by_dp[4] / states_by_dp[2], formula(stage, 4, 4, 8) / formula(stage, 2, 4, 8), 0.01)
        << "stage " << stage;
  }
}

// Tied embeddings under ZeRO-3: on one stage the output projection borrows
// the embedding's bucket (gathered twice per pass, its gradient complete only
// after the embedding's backward); over two stages each holds a copy whose
// owned slices are summed over the embedding group.
TEST_F(Zero, TiedEmbeddingsUnderStageThree) {
  TempDir run;
  auto one = train(1, " --tie-embeddings --metrics-file " + (run / "one.jsonl"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const auto a = iterations(run / "one.jsonl");
  for (const auto& [ranks, layout] : std::vector<std::pair<int, std::string>>{
           {2, ""}, {4, " --pipeline-model-parallel-size 2"}, {4, " --tensor-model-parallel-size 2"}}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks" + layout);
    auto r = train(ranks, layout + " --tie-embeddings --zero-stage 3 --metrics-file " + (run / "z.jsonl"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto b = iterations(run / "z.jsonl");
    for (int64_t it = 1; it <= 10; ++it)
      EXPECT_NEAR(b.at(it)["lm_loss"].get<double>(), a.at(it)["lm_loss"].get<double>(),
                  1e-5 * a.at(it)["lm_loss"].get<double>()) << it;
    std::filesystem::remove(run / "z.jsonl");
  }
}

// One micro-batch per rank, so every stage reduces once per step: stages 1
// and 2 move what stage 0's all-reduce moves (reduce-scatter + all-gather =
// 2Ψ(p−1)/p per rank), stage 3 half as much again (parameters gathered for
// forward and again for backward).
TEST_F(Zero, CommunicationPerStageMatchesThePaper) {
  TempDir run;
  for (int dp : {2, 4}) {
    std::map<int, nlohmann::json> bytes;  // stage → comm_bytes_per_iter["dp"] at iteration 5
    for (int stage = 0; stage <= 3; ++stage) {
      SCOPED_TRACE(testing::Message() << "dp " << dp << ", stage " << stage);
      const std::string m = run / ("comm_dp" + std::to_string(dp) + "_stage" + std::to_string(stage) + ".jsonl");
      // flags() says --global-batch-size 8 --micro-batch-size 2: dp 4 gives one micro-batch per rank;
      // at dp 2 use micro-batches of 4.
      std::string extra = " --zero-stage " + std::to_string(stage) + " --metrics-file " + m;
      auto r = dp == 4 ? train(4, extra) : run_tool(mpiexec(2) + bin("llm-train") + [] {
        std::string f = flags();
        f.replace(f.find("--micro-batch-size 2"), 20, "--micro-batch-size 4");
        return f;
      }() + extra);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      bytes[stage] = iterations(m).at(5)["comm_bytes_per_iter"]["dp"];
    }
    const double all_reduce = bytes[0]["all_reduce"].get<double>();
    ASSERT_GT(all_reduce, 0);
    for (int stage = 1; stage <= 3; ++stage) {
      SCOPED_TRACE(testing::Message() << "dp " << dp << ", stage " << stage);
      const double rs = bytes[stage]["reduce_scatter"].get<double>(), ag = bytes[stage]["all_gather"].get<double>();
      EXPECT_EQ(ag, stage == 3 ? 2 * rs : rs);  // the same padded buckets each way
      // Padding each bucket to a multiple of dp adds a few elements: 0.5%.
      EXPECT_NEAR((rs + ag) / all_reduce, stage == 3 ? 1.5 : 1.0, 0.005) << bytes[stage].dump();
    }
  }
}

// A ZeRO-3 checkpoint (gathered on save) resumes bitwise under its own
// layout and within rounding in one process; so does a bf16 ZeRO-2 one.
TEST_F(Zero, ShardedCheckpointsResumeExactly) {
  TempDir run;
  for (const std::string flags : {" --zero-stage 3", " --zero-stage 2 --bf16"}) {
    SCOPED_TRACE(flags);
    const std::string layout = " --tensor-model-parallel-size 2" + flags;
    auto full = train(4, layout + " --metrics-file " + (run / "full.jsonl"));
    ASSERT_EQ(full.exit_code, 0) << full.output;
    auto first = train(4, layout + " --exit-interval 5 --save " + (run / "ck"));
    ASSERT_EQ(first.exit_code, 0) << first.output;
    auto same = train(4, layout + " --load " + (run / "ck") + " --metrics-file " + (run / "same.jsonl"));
    ASSERT_EQ(same.exit_code, 0) << same.output;
    const std::string precision = flags.find("bf16") != std::string::npos ? " --bf16" : "";
    auto plain = train(1, precision + " --load " + (run / "ck") + " --metrics-file " + (run / "plain.jsonl"));
    ASSERT_EQ(plain.exit_code, 0) << plain.output;
    const auto f = iterations(run / "full.jsonl"), s = iterations(run / "same.jsonl"),
               p = iterations(run / "plain.jsonl");
    ASSERT_EQ(s.size(), 5u);
    ASSERT_EQ(p.size(), 5u);
    for (int64_t it = 6; it <= 10; ++it) {
      EXPECT_EQ(s.at(it)["lm_loss"].get<double>(), f.at(it)["lm_loss"].get<double>()) << it;
      EXPECT_NEAR(p.at(it)["lm_loss"].get<double>(), f.at(it)["lm_loss"].get<double>(),
                  (flags.find("bf16") != std::string::npos ? 1e-3 : 1e-5) * f.at(it)["lm_loss"].get<double>())
          << it;
    }
    std::filesystem::remove_all(run / "ck");
  }
}

// bf16 and fp16: 16-bit weights and gradients (2Ψ + 2Ψ), fp32 master weights
// and moments (12Ψ), each divided by dp as the stage says; the losses stay
// within 16-bit rounding of fp32 training.
TEST_F(Zero, MixedPrecisionHoldsTheSixteenBitFormula) {
  TempDir run;
  auto fp32 = train(1, " --metrics-file " + (run / "fp32.jsonl"));
  ASSERT_EQ(fp32.exit_code, 0) << fp32.output;
  const auto a = iterations(run / "fp32.jsonl");
  std::map<std::string, double> states;
  for (const std::string precision : {" --bf16", " --fp16"})
    for (int stage = 0; stage <= 3; ++stage)
      for (int dp : {2, 4}) {
        if (precision == " --fp16" && (dp == 4 || stage == 1)) continue;  // bf16 covers the matrix
        const std::string tag = precision.substr(3) + std::to_string(stage) + std::to_string(dp);
        SCOPED_TRACE(tag);
        auto r = train(dp, precision + " --zero-stage " + std::to_string(stage) + " --report-memory --metrics-file " +
                               (run / (tag + ".jsonl")));
        ASSERT_EQ(r.exit_code, 0) << r.output;
        EXPECT_EQ(check_memory_ratios(r.output), 2 * dp) << r.output;
        // Measured categories: 2 bytes per weight and per gradient, 4 per master weight.
        const double psi = model_config().num_parameters();
        const double params = reported_bytes(r.output, "parameters"), masters = reported_bytes(r.output, "master_weights");
        EXPECT_NEAR(params, 2 * psi / (stage >= 3 ? dp : 1), 0.02 * params) << r.output;
        EXPECT_NEAR(masters, 4 * psi / (stage >= 1 ? dp : 1), 0.02 * masters) << r.output;
        states[tag] = bytes_after(r.output, "| model states ");
        const auto b = iterations(run / (tag + ".jsonl"));
        ASSERT_EQ(b.size(), 10u);
        for (int64_t it = 1; it <= 10; ++it) {
          EXPECT_TRUE(std::isfinite(b.at(it)["lm_loss"].get<double>())) << it;
          EXPECT_NEAR(b.at(it)["lm_loss"].get<double>(), a.at(it)["lm_loss"].get<double>(),
                      2e-3 * a.at(it)["lm_loss"].get<double>()) << it;
        }
      }
  for (int stage = 0; stage <= 3; ++stage) {
    const std::string s = std::to_string(stage);
    EXPECT_NEAR(states["bf16" + s + "4"] / states["bf16" + s + "2"], formula(stage, 4, 2, 12) / formula(stage, 2, 2, 12),
                0.01) << "stage " << stage;
  }
}

// fp16 with an overflow injected at iteration 4 (infinite loss gradient on
// one rank): that step is skipped on every rank, the scale halves, training
// goes on and the metrics count the skip.
TEST_F(Zero, Fp16OverflowIsSkippedAndTheLossScaleBacksOff) {
  TempDir run;
  auto r = train(2, " --fp16 --zero-stage 2 --initial-loss-scale 1024 --loss-scale-window 3"
                    " --inject-grad-overflow-at 4 --metrics-file " + (run / "m.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("iteration 4 skipped"), std::string::npos) << r.output;
  const auto lines = read_jsonl(run / "m.jsonl");
  const auto it = iterations(run / "m.jsonl");
  ASSERT_EQ(it.size(), 10u);
  int skipped_events = 0;
  for (const auto& j : lines)
    if (j.value("event", "") == "skipped_step") {
      ++skipped_events;
      EXPECT_EQ(j["iteration"], 4);
      EXPECT_EQ(j["loss_scale"].get<double>(), 1024.0);  // 2048 × 0.5
    }
  EXPECT_EQ(skipped_events, 1);
  // Three clean steps double the scale: 1024 → 2048 after iteration 3, 1024 after the overflow (4),
  // 2048 again after iteration 7, 4096 after iteration 10.
  EXPECT_EQ(it.at(3)["loss_scale"].get<double>(), 2048.0);
  EXPECT_EQ(it.at(4)["loss_scale"].get<double>(), 1024.0);
  EXPECT_EQ(it.at(4)["skipped"].get<int64_t>(), 1);
  EXPECT_EQ(it.at(5)["skipped"].get<int64_t>(), 0);
  EXPECT_EQ(it.at(7)["loss_scale"].get<double>(), 2048.0);
  for (int64_t i = 5; i <= 10; ++i) EXPECT_TRUE(std::isfinite(it.at(i)["lm_loss"].get<double>())) << i;
  EXPECT_LT(it.at(10)["lm_loss"].get<double>(), it.at(1)["lm_loss"].get<double>());
}

// With one data-parallel rank there is nothing to shard: any stage runs as
// stage 0, says so, and trains exactly like it.
TEST_F(Zero, OneDataParallelRankRunsAsStageZero) {
  TempDir run;
  auto plain = train(1, " --metrics-file " + (run / "plain.jsonl"));
  auto z3 = train(1, " --zero-stage 3 --metrics-file " + (run / "z3.jsonl"));
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  ASSERT_EQ(z3.exit_code, 0) << z3.output;
  EXPECT_NE(z3.output.find("--zero-stage 3 with one data-parallel rank: nothing to shard, runs as stage 0"),
            std::string::npos) << z3.output;
  const auto a = iterations(run / "plain.jsonl"), b = iterations(run / "z3.jsonl");
  for (int64_t it = 1; it <= 10; ++it) EXPECT_EQ(a.at(it)["lm_loss"], b.at(it)["lm_loss"]) << it;
}

}  // namespace
