// End-to-end tests of llm-train (and the tools around it), run as a user would.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <unistd.h>

#include "data/token_file.h"
#include "tests/support/run_tool.h"

using namespace llm::test;
namespace fs = std::filesystem;

namespace {

// One small corpus for the whole suite: the GPL-3 text, a 512-piece BPE tokenizer.
class TrainTool : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const auto r = prepare_test_corpus(*dir_);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string model_flags() {
    return " --num-layers 2 --hidden-size 64 --num-attention-heads 4 --num-query-groups 2 --seq-length 32"
           " --micro-batch-size 4 --global-batch-size 8";
  }
  static std::string data_flags() {
    return " --data-path " + (*dir_ / "gpl") + " --tokenizer-model " + (*dir_ / "tok.model");
  }
  static ToolResult train(const std::string& extra) {
    return run_tool("OMP_NUM_THREADS=1 " + bin("llm-train") + model_flags() + data_flags() + extra);
  }
  static TempDir* dir_;
};
TempDir* TrainTool::dir_ = nullptr;

std::map<int64_t, nlohmann::json> iterations(const std::string& metrics) {
  std::map<int64_t, nlohmann::json> out;
  for (const auto& j : read_jsonl(metrics))
    if (j.contains("lm_loss")) out[j["iteration"].get<int64_t>()] = j;
  return out;
}

}  // namespace

TEST_F(TrainTool, ValidationLossFallsWellBelowUnigramEntropy) {
  TempDir run;
  const std::string metrics = run / "m.jsonl";
  const auto r = train(" --train-iters 200 --lr 3e-3 --min-lr 3e-4 --lr-warmup-iters 20 --log-interval 50"
                       " --eval-interval 100 --eval-iters 8 --valid-fraction 0.1 --metrics-file " + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // Unigram entropy (nats) of the token distribution: the loss of the best
  // model that ignores context. A model that learned anything beats it.
  llm::data::TokenDataset data(*dir_ / "gpl");
  std::map<int32_t, double> counts;
  for (int64_t i = 0; i < data.size(); ++i) counts[data.token(i)] += 1;
  double entropy = 0;
  for (auto& [tok, c] : counts) entropy -= c / data.size() * std::log(c / data.size());

  double val_loss = NAN;
  for (const auto& j : read_jsonl(metrics))
    if (j.contains("val_loss")) val_loss = j["val_loss"];
  ASSERT_TRUE(std::isfinite(val_loss)) << r.output;
  EXPECT_LT(val_loss, 0.8 * entropy) << "unigram entropy " << entropy << "\n" << r.output;
}

TEST_F(TrainTool, ResumedRunEqualsUninterruptedRunBitwise) {
  TempDir run;
  const std::string common = " --train-iters 10 --lr 3e-3 --lr-warmup-iters 3 --log-interval 1 --eval-iters 0";
  auto full = train(common + " --metrics-file " + (run / "full.jsonl"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  auto first = train(common + " --save " + (run / "ck") + " --save-interval 5 --exit-interval 5 --metrics-file " +
                     (run / "first.jsonl"));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  ASSERT_TRUE(fs::exists(run / "ck/iter_0000005/manifest.json"));
  EXPECT_FALSE(fs::exists(run / "ck/iter_0000010")) << "--exit-interval 5 should stop at iteration 5";
  auto second = train(common + " --load " + (run / "ck") + " --metrics-file " + (run / "second.jsonl"));
  ASSERT_EQ(second.exit_code, 0) << second.output;

  const auto a = iterations(run / "full.jsonl"), b = iterations(run / "second.jsonl");
  ASSERT_EQ(a.size(), 10u);
  ASSERT_EQ(b.size(), 5u) << second.output;
  for (int64_t it = 6; it <= 10; ++it) {
    ASSERT_TRUE(b.count(it));
    // Compared as doubles with ==: bitwise, not within a tolerance.
    EXPECT_EQ(a.at(it)["lm_loss"].get<double>(), b.at(it)["lm_loss"].get<double>()) << "iteration " << it;
    EXPECT_EQ(a.at(it)["grad_norm"].get<double>(), b.at(it)["grad_norm"].get<double>()) << "iteration " << it;
    EXPECT_EQ(a.at(it)["lr"].get<double>(), b.at(it)["lr"].get<double>());
  }
  // A resume that changes the optimisation is refused, naming the flag...
  auto changed = train(common + " --load " + (run / "ck/iter_0000005") + " --min-lr 1e-4");
  EXPECT_NE(changed.exit_code, 0);
  EXPECT_NE(changed.output.find("--min-lr"), std::string::npos) << changed.output;
  EXPECT_NE(changed.output.find("--override-opt_param-scheduler"), std::string::npos) << changed.output;
  // ...unless the user says the flags win.
  auto overridden = train(common + " --load " + (run / "ck/iter_0000005") + " --min-lr 1e-4" +
                          " --override-opt_param-scheduler --save " + (run / "ck2"));
  EXPECT_EQ(overridden.exit_code, 0) << overridden.output;
  // And the first five iterations of the interrupted run equal the full run's.
  const auto f = iterations(run / "first.jsonl");
  for (int64_t it = 1; it <= 5; ++it) EXPECT_EQ(a.at(it)["lm_loss"].get<double>(), f.at(it)["lm_loss"].get<double>());
}

TEST_F(TrainTool, ExportedModelEvaluatesLikeTheCheckpointAndGenerates) {
  TempDir run;
  auto t = train(" --train-iters 4 --log-interval 2 --eval-iters 0 --save " + (run / "ck"));
  ASSERT_EQ(t.exit_code, 0) << t.output;
  auto ev_ck = run_tool(bin("llm-eval") + " --load " + (run / "ck") + " --data-path " + (*dir_ / "gpl") +
                        " --eval-samples 12", /*stdout_only=*/true);
  ASSERT_EQ(ev_ck.exit_code, 0) << ev_ck.output;
  auto ex = run_tool(bin("llm-export") + " --load " + (run / "ck") + " --output " + (run / "hf"));
  ASSERT_EQ(ex.exit_code, 0) << ex.output;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"}) EXPECT_TRUE(fs::exists(run / ("hf/" + std::string(f))));
  auto ev_hf = run_tool(bin("llm-eval") + " --load " + (run / "hf") + " --data-path " + (*dir_ / "gpl") +
                        " --eval-samples 12", /*stdout_only=*/true);
  ASSERT_EQ(ev_hf.exit_code, 0) << ev_hf.output;
  const auto jc = nlohmann::json::parse(ev_ck.output), jh = nlohmann::json::parse(ev_hf.output);
  EXPECT_EQ(jc["val_loss"].get<double>(), jh["val_loss"].get<double>());
  EXPECT_EQ(jc["tokens"].get<int64_t>(), 12 * 32);
  auto gen = run_tool(bin("llm-generate") + " --load " + (run / "hf") + " --prompt 'The licence' --max-new-tokens 8",
                      /*stdout_only=*/true);
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  EXPECT_EQ(gen.output.rfind("The licence", 0), 0u) << gen.output;
  auto bad = run_tool(bin("llm-eval") + " --load " + (run / "hf") + " --data-path " + (*dir_ / "gpl") +
                      " --eval-samples 100000");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--eval-samples"), std::string::npos) << bad.output;
}

// ---- bad input: a clear message naming the problem, and a non-zero exit ----

struct BadCase {
  std::string name, extra, expect;
};

TEST_F(TrainTool, BadInputGivesClearErrorAndNonZeroExit) {
  TempDir run;
  // A truncated copy and a foreign file of the data.
  fs::copy_file(*dir_ / "gpl.idx", run / "trunc.idx");
  {
    std::ifstream in(*dir_ / "gpl.bin", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(run / "trunc.bin", std::ios::binary) << bytes.substr(0, bytes.size() / 2 + 1);
    std::ofstream(run / "foreign.bin", std::ios::binary) << bytes;
    std::ofstream(run / "foreign.idx", std::ios::binary) << "this is not an index file at all, just text\n";
  }
  std::ofstream(run / "unreadable.cfg") << "num-layers = 2\n";
  fs::permissions(run / "unreadable.cfg", fs::perms::none);
  const bool root = ::geteuid() == 0;  // root reads any file: use a missing path then
  const std::string unreadable = root ? run / "missing.cfg" : run / "unreadable.cfg";
  const std::string it = " --train-iters 2 --eval-iters 0";
  const std::vector<BadCase> cases = {
      {"missing data", it + " --data-path " + (run / "nope") + " --tokenizer-model " + (*dir_ / "tok.model"), "nope"},
      {"truncated data", it + " --data-path " + (run / "trunc") + " --tokenizer-model " + (*dir_ / "tok.model"), "trunc"},
      {"foreign data", it + " --data-path " + (run / "foreign") + " --tokenizer-model " + (*dir_ / "tok.model"), "foreign"},
      {"ids beyond vocab", it + " --data-path " + (*dir_ / "gpl") + " --vocab-size 100", "vocab"},
      {"heads do not divide hidden", it + data_flags() + " --num-attention-heads 5", "--num-attention-heads"},
      {"groups do not divide heads", it + data_flags() + " --num-query-groups 3", "--num-query-groups"},
      {"global batch", it + data_flags() + " --global-batch-size 6", "--global-batch-size"},
      {"unknown flag", it + data_flags() + " --no-such-flag 3", "no-such-flag"},
      {"unreadable config", it + data_flags() + " --config " + unreadable, "--config"},
      {"missing train-iters", data_flags(), "--train-iters"},
  };
  for (const auto& c : cases) {
    // Each case adds the one flag that is wrong to an otherwise valid command line.
    const std::string base = " --num-layers 2 --hidden-size 64 --seq-length 32 --micro-batch-size 4";
    const auto r = run_tool("OMP_NUM_THREADS=1 " + bin("llm-train") + base + c.extra);
    EXPECT_NE(r.exit_code, 0) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.name << ": expected '" << c.expect << "' in:\n" << r.output;
    EXPECT_NE(r.output.find("error"), std::string::npos) << c.name << ": " << r.output;
    EXPECT_EQ(r.output.find("Segmentation"), std::string::npos) << c.name;
  }
}


TEST_F(TrainTool, AnInvalidLayoutEndsTheWholeJobWithoutHanging) {
  // Every rank must exit non-zero with the message, none may hang (the timeout would show it).
  const auto r = run_tool(mpiexec(2) + bin("llm-train") + model_flags() + data_flags() +
                          " --train-iters 2 --tensor-model-parallel-size 4");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "the job hung until the timeout:\n" << r.output;
  EXPECT_NE(r.output.find("--tensor-model-parallel-size 4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[rank 0]"), std::string::npos) << "errors carry the rank:\n" << r.output;
  // Layouts the model cannot be split over are named before anything is built.
  const std::string base = mpiexec(2) + bin("llm-train") + data_flags() + " --train-iters 2 --hidden-size 64";
  const auto groups = run_tool(base + " --num-attention-heads 2 --num-query-groups 1 --tensor-model-parallel-size 2");
  EXPECT_NE(groups.exit_code, 0);
  EXPECT_NE(groups.output.find("--num-query-groups 1 is not divisible by --tensor-model-parallel-size 2"),
            std::string::npos) << groups.output;
  const auto layers = run_tool(base + " --num-layers 1 --pipeline-model-parallel-size 2");
  EXPECT_NE(layers.exit_code, 0);
  EXPECT_NE(layers.output.find("--num-layers 1 is less than --pipeline-model-parallel-size 2"), std::string::npos)
      << layers.output;
}

TEST_F(TrainTool, DataParallelRunEqualsOneProcess) {
  TempDir run;
  // One process accumulates 2 micro-batches of 4; two ranks take one each. The
  // tiny bucket size makes the gradient all-reduce run in many overlapped buckets.
  const std::string common = " --train-iters 6 --lr 3e-3 --log-interval 1 --eval-iters 4";
  auto one = train(common + " --metrics-file " + (run / "one.jsonl"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const std::string dp2 = mpiexec(2) + bin("llm-train") + model_flags() + data_flags() + common + " --ddp-bucket-size 3000";
  auto two = run_tool(dp2 + " --metrics-file " + (run / "two.jsonl") + " --save " + (run / "ck"));
  ASSERT_EQ(two.exit_code, 0) << two.output;
  auto again = run_tool(dp2 + " --metrics-file " + (run / "again.jsonl"));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const auto a = iterations(run / "one.jsonl"), b = iterations(run / "two.jsonl"), c = iterations(run / "again.jsonl");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u) << two.output;
  for (int64_t it = 1; it <= 6; ++it) {
    const double la = a.at(it)["lm_loss"], lb = b.at(it)["lm_loss"];
    EXPECT_NEAR(lb, la, 1e-6 * std::abs(la)) << "iteration " << it;
    EXPECT_NEAR(b.at(it)["grad_norm"].get<double>(), a.at(it)["grad_norm"].get<double>(),
                1e-5 * a.at(it)["grad_norm"].get<double>());
    EXPECT_EQ(lb, c.at(it)["lm_loss"].get<double>()) << "two data-parallel runs must agree bitwise";
  }
  double va = NAN, vb = NAN;
  for (const auto& j : read_jsonl(run / "one.jsonl")) if (j.contains("val_loss")) va = j["val_loss"];
  for (const auto& j : read_jsonl(run / "two.jsonl")) if (j.contains("val_loss")) vb = j["val_loss"];
  EXPECT_NEAR(vb, va, 1e-6 * va);
  // The checkpoint written by rank 0 records the layout and loads in one process.
  std::ifstream in(run / "ck/iter_0000006/manifest.json");
  EXPECT_EQ(nlohmann::json::parse(in)["layout"]["data_parallel"], 2);
  auto ev = run_tool(bin("llm-eval") + " --load " + (run / "ck") + " --data-path " + (*dir_ / "gpl") + " --eval-samples 4",
                     /*stdout_only=*/true);
  EXPECT_EQ(ev.exit_code, 0) << ev.output;
}

TEST_F(TrainTool, PipelineParallelRunEqualsOneProcessAndReshardsOnLoad) {
  TempDir run;
  // 3 layers over 2 stages (2 + 1), 4 micro-batches of 2 per step.
  const std::string flags = data_flags() +
                            " --num-layers 3 --hidden-size 64 --num-attention-heads 4 --num-query-groups 2"
                            " --seq-length 32 --micro-batch-size 2 --global-batch-size 8 --train-iters 5"
                            " --lr 3e-3 --log-interval 1 --eval-iters 4 --clip-grad 0.5";  // clipping active
  auto one = run_tool("OMP_NUM_THREADS=1 " + bin("llm-train") + flags + " --metrics-file " + (run / "one.jsonl"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const auto a = iterations(run / "one.jsonl");
  ASSERT_EQ(a.size(), 5u);
  auto val = [](const std::string& metrics) {
    double v = NAN;
    for (const auto& j : read_jsonl(metrics)) if (j.contains("val_loss")) v = j["val_loss"];
    return v;
  };
  // Each stage runs the same micro-batches in the same order as one process,
  // and the gradient norm is summed per parameter in global order, so both
  // schedules reproduce its losses and norms bitwise.
  for (const std::string schedule : {"1f1b", "afab", "1f1b --decoder-first-pipeline-num-layers 1"}) {
    const std::string metrics = run / ("pp2_" + std::to_string(schedule.size()) + ".jsonl");
    auto r = run_tool(mpiexec(2) + bin("llm-train") + flags + " --pipeline-model-parallel-size 2 --pipeline-schedule " +
                      schedule + " --metrics-file " + metrics);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto b = iterations(metrics);
    ASSERT_EQ(b.size(), 5u) << r.output;
    for (int64_t it = 1; it <= 5; ++it) {
      EXPECT_EQ(a.at(it)["lm_loss"].get<double>(), b.at(it)["lm_loss"].get<double>()) << schedule << " it " << it;
      EXPECT_EQ(a.at(it)["grad_norm"].get<double>(), b.at(it)["grad_norm"].get<double>()) << schedule << " it " << it;
    }
    EXPECT_EQ(val(run / "one.jsonl"), val(metrics)) << schedule;
  }
  // pp2·dp2 on 4 ranks: equal within rounding (the data-parallel sum adds in another order);
  // its checkpoint at iteration 3 resumes in one process and under pp2 alike.
  auto four = run_tool(mpiexec(4) + bin("llm-train") + flags + " --pipeline-model-parallel-size 2 --ddp-bucket-size 2000" +
                       " --exit-interval 3 --save " + (run / "ck") + " --metrics-file " + (run / "pp2dp2.jsonl"));
  ASSERT_EQ(four.exit_code, 0) << four.output;
  const auto c = iterations(run / "pp2dp2.jsonl");
  ASSERT_EQ(c.size(), 3u) << four.output;
  for (int64_t it = 1; it <= 3; ++it)
    EXPECT_NEAR(c.at(it)["lm_loss"].get<double>(), a.at(it)["lm_loss"].get<double>(), 1e-6 * a.at(it)["lm_loss"].get<double>());
  auto r1 = run_tool("OMP_NUM_THREADS=1 " + bin("llm-train") + flags + " --load " + (run / "ck") + " --metrics-file " +
                     (run / "r1.jsonl"));
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  auto r2 = run_tool(mpiexec(2) + bin("llm-train") + flags + " --pipeline-model-parallel-size 2 --load " + (run / "ck") +
                     " --metrics-file " + (run / "r2.jsonl"));
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  const auto d = iterations(run / "r1.jsonl"), e = iterations(run / "r2.jsonl");
  ASSERT_EQ(d.size(), 2u);
  ASSERT_EQ(e.size(), 2u);
  for (int64_t it = 4; it <= 5; ++it) {
    EXPECT_EQ(d.at(it)["lm_loss"].get<double>(), e.at(it)["lm_loss"].get<double>()) << it;
    EXPECT_NEAR(d.at(it)["lm_loss"].get<double>(), a.at(it)["lm_loss"].get<double>(), 1e-6 * a.at(it)["lm_loss"].get<double>());
  }
}

TEST_F(TrainTool, TiedEmbeddingsAcrossPipelineStagesStayOneWeight) {
  TempDir run;
  // The first stage looks tokens up in the embedding, the last projects onto it:
  // their gradient halves are summed over the embedding group every step.
  const std::string flags = data_flags() +
                            " --num-layers 3 --hidden-size 64 --num-attention-heads 4 --seq-length 32"
                            " --micro-batch-size 2 --global-batch-size 8 --train-iters 5 --lr 3e-3 --log-interval 1"
                            " --eval-iters 4 --tie-embeddings";
  auto one = run_tool("OMP_NUM_THREADS=1 " + bin("llm-train") + flags + " --metrics-file " + (run / "one.jsonl"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = run_tool(mpiexec(2) + bin("llm-train") + flags + " --pipeline-model-parallel-size 2 --save " + (run / "ck") +
                      " --metrics-file " + (run / "two.jsonl"));
  ASSERT_EQ(two.exit_code, 0) << two.output;
  const auto a = iterations(run / "one.jsonl"), b = iterations(run / "two.jsonl");
  ASSERT_EQ(b.size(), 5u) << two.output;
  for (int64_t it = 1; it <= 5; ++it) {
    EXPECT_NEAR(b.at(it)["lm_loss"].get<double>(), a.at(it)["lm_loss"].get<double>(), 1e-6 * a.at(it)["lm_loss"].get<double>());
    EXPECT_NEAR(b.at(it)["grad_norm"].get<double>(), a.at(it)["grad_norm"].get<double>(),
                1e-6 * a.at(it)["grad_norm"].get<double>()) << "the shared weight's gradient is counted once";
  }
  // One copy in the checkpoint, which a single process evaluates.
  std::ifstream in(run / "ck/iter_0000005/manifest.json");
  int params = 0;
  const nlohmann::json manifest = nlohmann::json::parse(in);  // kept alive for the loop
  for (const auto& t : manifest["tensors"])
    if (t["name"] == "model.embed_tokens.weight" && t["kind"] == "param") ++params;
  EXPECT_EQ(params, 1);
  auto ev = run_tool(bin("llm-eval") + " --load " + (run / "ck") + " --data-path " + (*dir_ / "gpl") + " --eval-samples 4",
                     /*stdout_only=*/true);
  EXPECT_EQ(ev.exit_code, 0) << ev.output;
}

TEST_F(TrainTool, FullRecomputationGivesTheSameRunWithLessActivationMemory) {
  TempDir run;
  // Peak bytes of live activations, from the allocator's report at the end of a run.
  auto activation_peak = [](const std::string& out) { return bytes_after(out, "(peak ", out.find("\nactivations ")); };
  const std::string common = " --train-iters 4 --lr 3e-3 --log-interval 1 --eval-iters 0";
  auto plain = train(common + " --metrics-file " + (run / "plain.jsonl"));
  auto recompute = train(common + " --recompute-granularity full --metrics-file " + (run / "recompute.jsonl"));
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  ASSERT_EQ(recompute.exit_code, 0) << recompute.output;
  const auto a = iterations(run / "plain.jsonl"), b = iterations(run / "recompute.jsonl");
  ASSERT_EQ(a.size(), 4u);
  for (int64_t it = 1; it <= 4; ++it) {
    EXPECT_EQ(a.at(it)["lm_loss"].get<double>(), b.at(it)["lm_loss"].get<double>()) << it;
    EXPECT_EQ(a.at(it)["grad_norm"].get<double>(), b.at(it)["grad_norm"].get<double>()) << it;
  }
  const double pa = activation_peak(plain.output), pb = activation_peak(recompute.output);
  ASSERT_GT(pa, 0) << plain.output;
  ASSERT_GT(pb, 0) << recompute.output;
  EXPECT_LT(pb, 0.75 * pa) << "recomputation should keep far fewer activations";
  // Selective: only the attention core is rerun; the same run, a little less memory.
  auto selective = train(common + " --recompute-granularity selective --metrics-file " + (run / "selective.jsonl"));
  ASSERT_EQ(selective.exit_code, 0) << selective.output;
  const auto c = iterations(run / "selective.jsonl");
  ASSERT_EQ(c.size(), 4u);
  for (int64_t it = 1; it <= 4; ++it) {
    EXPECT_EQ(a.at(it)["lm_loss"].get<double>(), c.at(it)["lm_loss"].get<double>()) << it;
    EXPECT_EQ(a.at(it)["grad_norm"].get<double>(), c.at(it)["grad_norm"].get<double>()) << it;
  }
  const double pc = activation_peak(selective.output);
  EXPECT_LT(pc, pa) << "the attention outputs are not kept";
  EXPECT_GT(pc, pb) << "selective keeps more than full recomputation";
}
