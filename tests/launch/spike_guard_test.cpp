// Loss spikes and faults: a spike injected at iteration 33 is detected,
// rolled back to the snapshot after iteration 30 and its batches skipped,
// ending bitwise where a clean run that skips iterations 31-33 from the start
// ends (one process, and 2·2·2 with ZeRO-1); a NaN gradient skips one step;
// repeated spikes stop the run with a checkpoint; SIGUSR1 to mpirun or
// SIGTERM to one rank saves and exits 0, and the resumed run equals an
// uninterrupted one.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support/run_tool.h"
#include "tests/support/training_runs.h"

using namespace llm::test;
namespace fs = std::filesystem;

namespace {

using Faults = TinyModelRuns;

// flags() with n iterations.
std::string flags_with_iters(int n) {
  std::string f = TinyModelRuns::flags();
  f.replace(f.find("--train-iters 10"), 16, "--train-iters " + std::to_string(n));
  return f;
}

ToolResult train_long(int ranks, const std::string& extra) {
  const std::string launch = ranks == 1 ? std::string("OMP_NUM_THREADS=1 ") : mpiexec(ranks);
  return run_tool(launch + bin("llm-train") + flags_with_iters(40) + extra);
}

std::vector<nlohmann::json> events(const std::string& metrics, const std::string& name) {
  std::vector<nlohmann::json> out;
  for (const auto& j : read_jsonl(metrics))
    if (j.value("event", "") == name) out.push_back(j);
  return out;
}

TEST_F(Faults, SpikeIsRolledBackAndEndsWhereACleanRunSkippingItsBatchesEnds) {
  TempDir run;
  for (const auto& [ranks, layout] : std::vector<std::pair<int, std::string>>{
           {1, ""}, {8, " --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --zero-stage 1"}}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks" + layout);
    const std::string tag = std::to_string(ranks);
    auto spiky = train_long(ranks, layout + " --spike-action rollback --snapshot-interval 5 --inject-loss-spike-at 33"
                                            " --save " + (run / ("spiky" + tag)) + " --metrics-file " +
                                            (run / ("spiky" + tag + ".jsonl")));
    ASSERT_EQ(spiky.exit_code, 0) << spiky.output;
    const auto rb = events(run / ("spiky" + tag + ".jsonl"), "rollback");
    ASSERT_EQ(rb.size(), 1u) << spiky.output;
    EXPECT_EQ(rb[0]["iteration"], 33);
    EXPECT_EQ(rb[0]["to"], 30);
    EXPECT_EQ(rb[0]["skipped_iterations"], nlohmann::json({31, 33}));
    EXPECT_GT(rb[0]["lm_loss"].get<double>(), 50.0);  // the injected ×100 loss is what triggered it
    EXPECT_NE(rb[0]["reason"].get<std::string>().find("above its running mean"), std::string::npos);
    auto clean = train_long(ranks, layout + " --skip-train-iteration-range 31-33 --save " + (run / ("clean" + tag)));
    ASSERT_EQ(clean.exit_code, 0) << clean.output;
    const auto a = load_unsplit(run / ("spiky" + tag)), b = load_unsplit(run / ("clean" + tag));
    EXPECT_EQ(a, b) << "the rolled-back run's final parameters differ from the clean run's";
  }
}

// Without in-memory snapshots the rollback reloads the newest checkpoint
// (iteration 30) and ends in the same place.
TEST_F(Faults, SpikeRollsBackToTheNewestCheckpointWithoutSnapshots) {
  TempDir run;
  auto spiky = train_long(1, " --spike-action rollback --save-interval 10 --inject-loss-spike-at 33 --save " +
                                 (run / "spiky") + " --metrics-file " + (run / "spiky.jsonl"));
  ASSERT_EQ(spiky.exit_code, 0) << spiky.output;
  const auto rb = events(run / "spiky.jsonl", "rollback");
  ASSERT_EQ(rb.size(), 1u) << spiky.output;
  EXPECT_EQ(rb[0]["source"], "the newest checkpoint");
  EXPECT_EQ(rb[0]["to"], 30);
  auto clean = train_long(1, " --skip-train-iteration-range 31-33 --save " + (run / "clean"));
  ASSERT_EQ(clean.exit_code, 0) << clean.output;
  EXPECT_EQ(load_unsplit(run / "spiky"), load_unsplit(run / "clean"));
}

TEST_F(Faults, NanGradientSkipsOneStepAndTrainingGoesOn) {
  TempDir run;
  auto r = train(2, " --inject-grad-nan-at 4 --metrics-file " + (run / "m.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto skipped = events(run / "m.jsonl", "skipped_step");
  ASSERT_EQ(skipped.size(), 1u) << r.output;
  EXPECT_EQ(skipped[0]["iteration"], 4);
  const auto it = iterations(run / "m.jsonl");
  EXPECT_EQ(it.at(4)["skipped"], 1);
  EXPECT_TRUE(std::isfinite(it.at(10)["lm_loss"].get<double>()));
  EXPECT_LT(it.at(10)["lm_loss"].get<double>(), it.at(1)["lm_loss"].get<double>());
}

// The same spike every time (its batches replayed): after --max-rollbacks the
// run stops with exit code 4 and a checkpoint that loads.
TEST_F(Faults, RepeatedSpikesStopTheRunWithACheckpoint) {
  TempDir run;
  auto r = train_long(2, " --spike-action rollback --snapshot-interval 5 --inject-loss-spike-at 28 --spike-skip-batches"
                         " false --max-rollbacks 2 --save " + (run / "ck") + " --metrics-file " + (run / "m.jsonl"));
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_NE(r.output.find("--max-rollbacks 2"), std::string::npos) << r.output;
  EXPECT_EQ(events(run / "m.jsonl", "rollback").size(), 2u);
  EXPECT_EQ(events(run / "m.jsonl", "too_many_rollbacks").size(), 1u);
  ASSERT_TRUE(fs::exists(fs::path(run / "ck") / "latest")) << r.output;
  EXPECT_FALSE(load_unsplit(run / "ck").empty());
}

// Starts llm-train on 4 ranks in the background, waits until iteration 20 is
// logged, sends `signal` to mpirun (or to one rank), and waits for the job.
// (Without the timeout wrapper of mpiexec(): that would take the signal.)
ToolResult train_and_signal(const TempDir& dir, const std::string& extra, const std::string& metrics,
                            const std::string& signal, bool to_one_rank) {
  const std::string root = ::geteuid() == 0 ? " --allow-run-as-root" : "";
  const std::string script = dir / "signal.sh";
  std::ofstream(script) << "mpiexec --oversubscribe" << root
                        << " -n 4 -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 " << bin("llm-train")
                        << flags_with_iters(200) << extra << " --metrics-file " << metrics << " &\n"
                        << "job=$!\n"
                        << "for i in $(seq 1200); do grep -q '\"iteration\":20,' " << metrics
                        << " 2>/dev/null && break; sleep 0.05; done\n"
                        << (to_one_rank ? "kill -" + signal + " $(pgrep -f -- '" + metrics + "' | grep -vx \"$job\" | head -1)\n"
                                        : "kill -" + signal + " $job\n")
                        << "wait $job\n";
  return run_tool("timeout 300 bash " + script);
}

TEST_F(Faults, PreemptionSavesEverywhereAndResumesExactly) {
  TempDir run;
  const std::string layout = " --tensor-model-parallel-size 2";
  auto full = run_tool(mpiexec(4) + bin("llm-train") + flags_with_iters(200) + layout + " --metrics-file " +
                       (run / "full.jsonl"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const auto f = iterations(run / "full.jsonl");
  for (const auto& [signal, one_rank] : std::vector<std::pair<std::string, bool>>{{"USR1", false}, {"TERM", true}}) {
    SCOPED_TRACE("SIG" + signal + (one_rank ? " to one rank" : " to mpirun"));
    const std::string ck = run / ("ck" + signal), m = run / ("m" + signal + ".jsonl");
    auto r = train_and_signal(run, layout + " --save " + ck, m, signal, one_rank);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto pre = events(m, "preempted");
    ASSERT_EQ(pre.size(), 1u) << r.output;
    const int64_t stop = pre[0]["iteration"];
    EXPECT_LT(stop, 200) << "the signal arrived after training ended";
    EXPECT_NE(r.output.find("received: stopping after iteration " + std::to_string(stop)), std::string::npos);
    // Every rank saved the same iteration: the checkpoint is complete.
    EXPECT_EQ(events(m, "checkpoint_saved").at(0)["iteration"], stop);
    auto resumed = run_tool(mpiexec(4) + bin("llm-train") + flags_with_iters(200) + layout + " --load " + ck +
                            " --metrics-file " + (run / ("r" + signal + ".jsonl")));
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    const auto r2 = iterations(run / ("r" + signal + ".jsonl"));
    ASSERT_EQ(r2.size(), static_cast<size_t>(200 - stop));
    for (int64_t it = stop + 1; it <= 200; ++it) EXPECT_EQ(r2.at(it)["lm_loss"], f.at(it)["lm_loss"]) << it;
  }
}

}  // namespace
