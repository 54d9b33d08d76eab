// Checkpoints as tested promises: a run saved at iteration 5 and resumed
// equals the uninterrupted run bitwise under tp·pp·dp = 2·2·2 for every ZeRO
// stage and precision (synchronous and asynchronous saves); a checkpoint
// loads under any other layout and stage and continues within 1e-5; a crash
// in the middle of a save leaves the previous checkpoint loadable; retention.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/support/run_tool.h"
#include "tests/support/training_runs.h"

using namespace llm::test;
namespace fs = std::filesystem;

namespace {

using Checkpoints = TinyModelRuns;

const std::string k222 = " --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2";

void expect_same_iterations(const std::map<int64_t, nlohmann::json>& resumed,
                            const std::map<int64_t, nlohmann::json>& full, int64_t from, double tolerance) {
  ASSERT_EQ(resumed.size(), static_cast<size_t>(10 - from + 1));
  for (int64_t it = from; it <= 10; ++it) {
    const double a = full.at(it)["lm_loss"], b = resumed.at(it)["lm_loss"];
    const double ga = full.at(it)["grad_norm"], gb = resumed.at(it)["grad_norm"];
    if (tolerance == 0) {
      EXPECT_EQ(b, a) << "iteration " << it;
      EXPECT_EQ(gb, ga) << "grad norm, iteration " << it;
    } else {
      EXPECT_NEAR(b, a, tolerance * a) << "iteration " << it;
    }
  }
}

TEST_F(Checkpoints, ResumeIsBitwiseForEveryStageAndPrecision) {
  TempDir run;
  for (const std::string precision : {"", " --bf16", " --fp16"})
    for (int stage = 0; stage <= 3; ++stage) {
      // Asynchronous saves for half the cases: they must write the same state.
      const std::string async = (stage % 2 == 1) ? " --async-save" : "";
      const std::string flags = k222 + precision + " --zero-stage " + std::to_string(stage);
      SCOPED_TRACE(flags + async);
      const std::string ck = run / "ck";
      fs::remove_all(ck);
      auto full = train(8, flags + async + " --save-interval 5 --save " + ck + " --metrics-file " + (run / "full.jsonl"));
      ASSERT_EQ(full.exit_code, 0) << full.output;
      auto resumed = train(8, flags + " --load " + (fs::path(ck) / "iter_0000005").string() + " --metrics-file " +
                                  (run / "resumed.jsonl"));
      ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
      expect_same_iterations(iterations(run / "resumed.jsonl"), iterations(run / "full.jsonl"), 6, 0.0);
      EXPECT_EQ(val_loss(run / "resumed.jsonl"), val_loss(run / "full.jsonl"));
      fs::remove(run / "full.jsonl");
      fs::remove(run / "resumed.jsonl");
    }
}

// Saved under 2·2·2 with ZeRO-1, continued under other layouts and stages;
// and from one process up to 2·2·2 with ZeRO-2.
TEST_F(Checkpoints, LoadUnderAnyOtherLayoutAndStage) {
  TempDir run;
  const std::string ck = run / "ck";
  auto full = train(8, k222 + " --zero-stage 1 --save-interval 5 --save " + ck + " --metrics-file " +
                           (run / "full.jsonl"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const auto f = iterations(run / "full.jsonl");
  const std::string at5 = (fs::path(ck) / "iter_0000005").string();
  const std::vector<std::pair<int, std::string>> targets = {
      {1, ""},
      {8, " --tensor-model-parallel-size 4"},
      {8, " --pipeline-model-parallel-size 4"},
      {8, " --tensor-model-parallel-size 2 --zero-stage 3"},
  };
  for (const auto& [ranks, layout] : targets) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks" + layout);
    auto r = train(ranks, layout + " --load " + at5 + " --metrics-file " + (run / "r.jsonl"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    expect_same_iterations(iterations(run / "r.jsonl"), f, 6, 1e-5);
    fs::remove(run / "r.jsonl");
  }
  const std::string one_ck = run / "one_ck";
  auto one = train(1, " --save-interval 5 --save " + one_ck + " --metrics-file " + (run / "one.jsonl"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto up = train(8, k222 + " --zero-stage 2 --load " + (fs::path(one_ck) / "iter_0000005").string() +
                         " --metrics-file " + (run / "up.jsonl"));
  ASSERT_EQ(up.exit_code, 0) << up.output;
  expect_same_iterations(iterations(run / "up.jsonl"), iterations(run / "one.jsonl"), 6, 1e-5);
}

// World rank 0 dies after writing its shard of iteration 6, before the
// commit: `latest` still names iteration 3, which loads, and the run
// continues exactly; the half-written directory is ignored and cleaned up.
TEST_F(Checkpoints, CrashDuringSaveLeavesThePreviousCheckpoint) {
  TempDir run;
  const std::string ck = run / "ck", layout = " --tensor-model-parallel-size 2 --zero-stage 2";
  auto full = train(4, layout + " --metrics-file " + (run / "full.jsonl"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  auto crashed = train(4, layout + " --save-interval 3 --inject-save-crash-at 6 --save " + ck);
  EXPECT_NE(crashed.exit_code, 0) << crashed.output;
  EXPECT_NE(crashed.exit_code, 124) << "the job hung:\n" << crashed.output;
  EXPECT_TRUE(fs::exists(fs::path(ck) / "iter_0000006.tmp"));
  EXPECT_FALSE(fs::exists(fs::path(ck) / "iter_0000006"));
  auto resumed = train(4, layout + " --save-interval 3 --keep-last 1 --save " + ck + " --load " + ck +
                              " --metrics-file " + (run / "resumed.jsonl"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("iter_0000003 at iteration 3"), std::string::npos) << resumed.output;
  expect_same_iterations(iterations(run / "resumed.jsonl"), iterations(run / "full.jsonl"), 4, 0.0);
  // --keep-last 1: only the newest checkpoint is left, and no unfinished save.
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(ck)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"iter_0000010", "latest"}));
}

// --async-save reports how long training stood still per save, which is the
// copy only; the files are the same as a synchronous save's.
TEST_F(Checkpoints, AsyncSaveReportsTheStallAndWritesTheSameState) {
  TempDir run;
  auto sync = train(2, " --zero-stage 1 --save-interval 5 --save " + (run / "sync"));
  auto async = train(2, " --zero-stage 1 --save-interval 5 --async-save --save " + (run / "async") +
                            " --metrics-file " + (run / "m.jsonl"));
  ASSERT_EQ(sync.exit_code, 0) << sync.output;
  ASSERT_EQ(async.exit_code, 0) << async.output;
  int saves = 0;
  for (const auto& j : read_jsonl(run / "m.jsonl"))
    if (j.value("event", "") == "checkpoint_saved") {
      ++saves;
      EXPECT_TRUE(j["async"].get<bool>());
      EXPECT_GE(j["stall_seconds"].get<double>(), 0.0);
      EXPECT_LE(j["stall_seconds"].get<double>(), j["seconds"].get<double>());
    }
  EXPECT_EQ(saves, 2);
  for (const std::string it : {"iter_0000005", "iter_0000010"}) {
    const auto a = load_unsplit((fs::path(run / "sync") / it).string());
    const auto b = load_unsplit((fs::path(run / "async") / it).string());
    EXPECT_EQ(a, b) << it;
  }
}

// Continued pretraining from Hugging Face weights: a checkpoint exported
// with llm-export and imported with --load-hf under one process and under
// tp2·pp2 holds the same weights (bitwise, after a step of learning rate
// 1e-30, which changes nothing) and so evaluates to the same loss.
TEST_F(Checkpoints, HuggingFaceImportUnderAnyLayoutEvaluatesIdentically) {
  TempDir run;
  auto base = train(1, " --exit-interval 5 --save " + (run / "ck"));
  ASSERT_EQ(base.exit_code, 0) << base.output;
  auto exported = run_tool(bin("llm-export") + " --load " + (run / "ck") + " --output " + (run / "hf"));
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  auto eval = [&](const std::string& dir) {
    auto r = run_tool(bin("llm-eval") + " --load " + dir + " --data-path " + (*dir_ / "gpl") + " --eval-samples 16");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return nlohmann::json::parse(r.output.substr(r.output.rfind('{')))["val_loss"].get<double>();
  };
  const double reference = eval(run / "ck");
  const std::vector<float> weights = load_unsplit(run / "ck");
  // flags() without its learning-rate and iteration flags (the parser refuses duplicates).
  std::string f = flags();
  for (const std::string flag : {" --lr 3e-3", " --lr-warmup-iters 2", " --train-iters 10"}) f.erase(f.find(flag), flag.size());
  const std::string frozen = " --train-iters 1 --lr 1e-30 --lr-warmup-iters 0 --lr-decay-style constant --load-hf " + (run / "hf");
  for (const auto& [ranks, layout] : std::vector<std::pair<int, std::string>>{{1, ""}, {4, k222}}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks" + layout);
    const std::string out = run / ("imported" + std::to_string(ranks));
    const std::string cmd = (ranks == 1 ? std::string("OMP_NUM_THREADS=1 ") : mpiexec(ranks)) + bin("llm-train") + f +
                            layout + frozen + " --save " + out;
    auto r = run_tool(cmd);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("initialised from the Hugging Face model"), std::string::npos) << r.output;
    EXPECT_EQ(load_unsplit(out), weights);
    EXPECT_EQ(eval(out), reference);
  }
  // --load and --load-hf together: refused, naming both.
  auto both = run_tool(bin("llm-train") + flags() + " --load-hf " + (run / "hf") + " --load " + (run / "ck"));
  EXPECT_NE(both.exit_code, 0);
  EXPECT_NE(both.output.find("--load and --load-hf exclude each other"), std::string::npos) << both.output;
}

}  // namespace
