// Tensor, pipeline and data parallel layouts against one process: llm-train
// launched with mpiexec over every layout the tiny model admits, the losses
// of 10 iterations and the final parameters compared with a one-process run;
// communication counters against the analytic byte counts; invalid layouts.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <map>

#include "checkpoint/checkpoint.h"
#include "layers/llama_model.h"
#include "tests/support/run_tool.h"
#include "tests/support/training_runs.h"

using namespace llm::test;

namespace {

using ParallelLayouts = TinyModelRuns;

struct Layout {
  int tp, pp, dp;
  std::string options;  // sequence parallelism, schedule, recomputation
  std::string name() const {
    return "tp" + std::to_string(tp) + "·pp" + std::to_string(pp) + "·dp" + std::to_string(dp) + options;
  }
  std::string flags() const {
    return " --tensor-model-parallel-size " + std::to_string(tp) + " --pipeline-model-parallel-size " +
           std::to_string(pp) + options;
  }
};

TEST_F(ParallelLayouts, EveryLayoutTrainsLikeOneProcess) {
  TempDir run;
  auto one = train(1, " --metrics-file " + (run / "one.jsonl") + " --save " + (run / "one_ck"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const auto a = iterations(run / "one.jsonl");
  ASSERT_EQ(a.size(), 10u);
  const std::vector<float> final_one = load_unsplit(run / "one_ck");

  const std::string sp = " --sequence-parallel", afab = " --pipeline-schedule afab";
  const std::string full = " --recompute-granularity full", selective = " --recompute-granularity selective";
  const std::string interleaved = " --num-layers-per-virtual-pipeline-stage 1";  // 2 chunks per rank at pp 2
  // Each layout of {tp, pp, dp} ⊂ {1, 2, 4}, tp·pp·dp ≤ 8, that the model admits,
  // with sequence parallelism, both schedules (and the interleaved one) and both
  // recomputations spread over them.
  const std::vector<Layout> layouts = {
      {2, 1, 1, ""},          {2, 1, 1, sp + selective}, {1, 2, 1, ""},           {1, 2, 1, afab + full},
      {1, 1, 2, ""},          {1, 1, 2, selective},      {4, 1, 1, sp},           {4, 1, 1, full},
      {1, 4, 1, ""},          {1, 4, 1, afab + selective}, {2, 2, 1, sp},         {2, 2, 1, afab + full},
      {2, 1, 2, sp + full},   {2, 1, 2, ""},             {1, 2, 2, afab},         {1, 2, 2, selective},
      {2, 2, 2, ""},          {2, 2, 2, sp + afab + full}, {4, 2, 1, sp + selective}, {4, 1, 2, ""},
      {1, 4, 2, full},        {1, 2, 1, interleaved},    {2, 2, 1, sp + interleaved + full},
      {1, 2, 2, interleaved + selective}, {2, 2, 2, interleaved},
  };
  for (const auto& l : layouts) {
    SCOPED_TRACE(l.name());
    const std::string tag = std::to_string(&l - layouts.data());
    auto r = train(l.tp * l.pp * l.dp, l.flags() + " --metrics-file " + (run / (tag + ".jsonl")) + " --save " +
                                           (run / (tag + "_ck")));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto b = iterations(run / (tag + ".jsonl"));
    ASSERT_EQ(b.size(), 10u) << r.output;
    for (int64_t it = 1; it <= 10; ++it) {
      const double la = a.at(it)["lm_loss"], lb = b.at(it)["lm_loss"];
      EXPECT_NEAR(lb, la, 1e-5 * la) << "iteration " << it;
      const double ga = a.at(it)["grad_norm"], gb = b.at(it)["grad_norm"];
      // The norm sums squares of split tensors in other orders: looser than the loss.
      EXPECT_NEAR(gb, ga, 1e-4 * ga) << "grad norm, iteration " << it;
    }
    EXPECT_NEAR(val_loss(run / (tag + ".jsonl")), val_loss(run / "one.jsonl"), 1e-5 * val_loss(run / "one.jsonl"));
    // The checkpoint, whatever layout wrote it, loads into one process and
    // holds the parameters one process trained.
    EXPECT_LT(relative_difference(final_one, load_unsplit(run / (tag + "_ck"))), 1e-5);
  }
}

TEST_F(ParallelLayouts, SameLayoutTwiceIsBitwiseIdentical) {
  TempDir run;
  const std::string layout = " --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --sequence-parallel";
  auto r1 = train(8, layout + " --metrics-file " + (run / "a.jsonl"));
  auto r2 = train(8, layout + " --metrics-file " + (run / "b.jsonl"));
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  const auto a = iterations(run / "a.jsonl"), b = iterations(run / "b.jsonl");
  ASSERT_EQ(a.size(), 10u);
  ASSERT_EQ(b.size(), 10u);
  for (int64_t it = 1; it <= 10; ++it) {
    EXPECT_EQ(a.at(it)["lm_loss"].get<double>(), b.at(it)["lm_loss"].get<double>()) << it;
    EXPECT_EQ(a.at(it)["grad_norm"].get<double>(), b.at(it)["grad_norm"].get<double>()) << it;
  }
}

TEST_F(ParallelLayouts, TiedEmbeddingsSplitOverTensorAndPipelineRanks) {
  TempDir run;
  auto one = train(1, " --tie-embeddings --metrics-file " + (run / "one.jsonl"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const auto a = iterations(run / "one.jsonl");
  for (const std::string layout : {" --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2",
                                   " --tensor-model-parallel-size 4 --sequence-parallel",
                                   " --pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 1"
                                   " --tensor-model-parallel-size 2"}) {
    SCOPED_TRACE(layout);
    auto r = train(4, layout + " --tie-embeddings --metrics-file " + (run / "tp.jsonl"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto b = iterations(run / "tp.jsonl");
    ASSERT_EQ(b.size(), 10u) << r.output;
    for (int64_t it = 1; it <= 10; ++it)
      EXPECT_NEAR(b.at(it)["lm_loss"].get<double>(), a.at(it)["lm_loss"].get<double>(),
                  1e-5 * a.at(it)["lm_loss"].get<double>()) << it;
    std::filesystem::remove(run / "tp.jsonl");
  }
}

TEST_F(ParallelLayouts, CheckpointResumesUnderAnotherLayout) {
  TempDir run;
  auto one = train(1, " --metrics-file " + (run / "one.jsonl"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const auto a = iterations(run / "one.jsonl");
  // Saved at iteration 5 by tp2·pp2 (weights split along rows and columns,
  // layers over two stages), resumed by tp4, by pp2·dp2, by interleaved pp2
  // (two chunks per rank) and by one process.
  auto first = train(4, " --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --exit-interval 5 --save " +
                            (run / "ck"));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const std::vector<std::pair<int, std::string>> resumes = {
      {4, " --tensor-model-parallel-size 4 --sequence-parallel"}, {4, " --pipeline-model-parallel-size 2"},
      {2, " --pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 1"}, {1, ""}};
  for (const auto& [ranks, layout] : resumes) {
    SCOPED_TRACE(layout);
    const std::string metrics = run / ("resume" + std::to_string(ranks) + std::to_string(layout.size()) + ".jsonl");
    auto r = train(ranks, layout + " --load " + (run / "ck") + " --metrics-file " + metrics);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto b = iterations(metrics);
    ASSERT_EQ(b.size(), 5u) << r.output;
    for (int64_t it = 6; it <= 10; ++it)
      EXPECT_NEAR(b.at(it)["lm_loss"].get<double>(), a.at(it)["lm_loss"].get<double>(),
                  1e-5 * a.at(it)["lm_loss"].get<double>()) << it;
  }
}

// Bytes world rank 0 (tp rank 0, dp rank 0, first of two stages) sends per
// iteration, from the configuration: activations [rows, hidden] in fp32.
TEST_F(ParallelLayouts, CommunicationEqualsTheAnalyticCount) {
  const llm::ModelConfig m = model_config();
  const int64_t tp = 2, pp = 2, dp = 2, micro = 2, global = 8;
  const int64_t micro_batches = global / (micro * dp);  // per rank and step
  const int64_t stage_layers = m.num_layers / pp;
  const uint64_t act = static_cast<uint64_t>(micro * m.seq_length * m.hidden_size) * 4;  // one activation, bytes
  const int64_t D = m.head_dim(), F = m.ffn(), d = m.hidden_size;
  // This rank's parameters: the embedding's rows and each layer's split weights, plus the whole norms.
  const int64_t per_layer = 2 * d + (m.num_attention_heads + 2 * m.groups()) * D / tp * d +
                            d * m.num_attention_heads * D / tp + 3 * F / tp * d;
  const int64_t local_params = m.vocab_size / tp * d + stage_layers * per_layer;
  const int64_t local_tensors = 1 + 9 * stage_layers;
  const int64_t stage_norm_elements = 2 * stage_layers * d;
  // Ring all-reduce of B bytes over p ranks sends 2·B·(p−1)/p; all-gather and
  // reduce-scatter of a B-byte whole B·(p−1)/p.
  auto ring_all_reduce = [](uint64_t bytes, int64_t p) { return 2 * bytes * (p - 1) / p; };
  auto ring_part = [](uint64_t bytes, int64_t p) { return bytes * (p - 1) / p; };

  TempDir run;
  for (const bool sp : {false, true}) {
    SCOPED_TRACE(sp ? "sequence parallel" : "tensor parallel");
    const std::string metrics = run / (sp ? "sp.jsonl" : "tp.jsonl");
    // Evaluations every 3 iterations and a checkpoint every 4 must not count as training traffic.
    auto r = train(8, " --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --eval-interval 3"
                      " --save-interval 4 --save " + (run / (sp ? "ck_sp" : "ck")) +
                          (sp ? " --sequence-parallel" : "") + " --metrics-file " + metrics);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto its = iterations(metrics);
    ASSERT_EQ(its.size(), 10u);
    // Per micro-batch on the first stage: the embedding's reduce, two per
    // layer forward (attention, MLP) and two per layer backward.
    const uint64_t joins = static_cast<uint64_t>(micro_batches * (1 + 4 * stage_layers));
    uint64_t tp_all_reduce = ring_all_reduce(static_cast<uint64_t>(local_tensors) * 8, tp);  // grad-norm sums (f64)
    uint64_t tp_all_gather = 0, tp_reduce_scatter = 0, pp_send = micro_batches * act;
    if (!sp) {
      tp_all_reduce += joins * ring_all_reduce(act, tp);
    } else {
      // Each join is a reduce-scatter, each fork an all-gather (the same count
      // per micro-batch: 2 per layer each way, plus the embedding's backward
      // gather), and backward gathers again the two branch inputs per layer
      // that forward kept as row shards; norm gradients summed once;
      // activations sent are a tp-th.
      tp_reduce_scatter = joins * ring_part(act, tp);
      tp_all_gather = (joins + static_cast<uint64_t>(micro_batches * 2 * stage_layers)) * ring_part(act, tp);
      tp_all_reduce += ring_all_reduce(static_cast<uint64_t>(stage_norm_elements) * 4, tp);
      pp_send = micro_batches * act / tp;
    }
    const uint64_t dp_all_reduce = ring_all_reduce(static_cast<uint64_t>(local_params) * 4, dp) +
                                   ring_all_reduce(8, dp);  // gradients, and the loss
    for (int64_t it = 2; it <= 10; ++it) {
      const auto& c = its.at(it)["comm_bytes_per_iter"];
      EXPECT_EQ(c["tp"]["all_reduce"].get<uint64_t>(), tp_all_reduce) << it;
      EXPECT_EQ(c["tp"]["all_gather"].get<uint64_t>(), tp_all_gather) << it;
      EXPECT_EQ(c["tp"]["reduce_scatter"].get<uint64_t>(), tp_reduce_scatter) << it;
      EXPECT_EQ(c["pp"]["send"].get<uint64_t>(), pp_send) << it;
      EXPECT_EQ(c["dp"]["all_reduce"].get<uint64_t>(), dp_all_reduce) << it;
    }
  }
}

TEST_F(ParallelLayouts, InvalidLayoutsFailOnEveryRankWithoutHanging) {
  struct Case {
    int ranks;
    std::string flags, expect;
  };
  const std::vector<Case> cases = {
      {3, " --tensor-model-parallel-size 2", "world size 3 (mpirun -n) is not divisible by --tensor-model-parallel-size 2"},
      {3, " --tensor-model-parallel-size 3", "--num-attention-heads 8 is not divisible by --tensor-model-parallel-size 3"},
      {4, " --tensor-model-parallel-size 4 --num-query-groups 2",
       "--num-query-groups 2 is not divisible by --tensor-model-parallel-size 4"},
      {4, " --tensor-model-parallel-size 4 --ffn-hidden-size 250",
       "--ffn-hidden-size 250 is not divisible by --tensor-model-parallel-size 4"},
      {2, " --pipeline-model-parallel-size 2 --num-layers 1",
       "--num-layers 1 is less than --pipeline-model-parallel-size 2"},
      {2, " --global-batch-size 6 --micro-batch-size 4",
       "--global-batch-size 6 is not divisible by --micro-batch-size 4 × data-parallel size 2"},
      {2, " --sequence-parallel", "--sequence-parallel needs --tensor-model-parallel-size > 1"},
      {2, " --zero-stage 4", "--zero-stage must be 0, 1, 2 or 3"},
      {2, " --bf16 --fp16", "--bf16 and --fp16 are mutually exclusive: choose one"},
      {2, " --pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 1 --global-batch-size 6",
       "the interleaved schedule needs the micro-batches per step (--global-batch-size / (--micro-batch-size × "
       "data-parallel size) = 3) to be a multiple of --pipeline-model-parallel-size 2"},
      {2, " --pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 2",
       "--num-layers-per-virtual-pipeline-stage 2: --num-layers 4 must be a multiple of --pipeline-model-parallel-size 2 × 2 "
       "with at least two chunks per rank"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.flags);
    // Flags given later override flags() (Boost keeps the first: so build the line without duplicates).
    std::string base = flags();
    for (const std::string flag : {"--num-query-groups 4", "--num-layers 4", "--global-batch-size 8",
                                   "--micro-batch-size 2"}) {
      const std::string name = flag.substr(0, flag.find(' '));
      if (c.flags.find(name + " ") != std::string::npos) base.replace(base.find(flag), flag.size(), "");
    }
    const auto r = run_tool(mpiexec(c.ranks) + bin("llm-train") + base + c.flags);
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "the job hung until the timeout:\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("[rank "), std::string::npos) << "errors carry the rank:\n" << r.output;
  }
  // The vocabulary must split too (here without a tokenizer, so --vocab-size counts).
  std::string base = flags();
  base.replace(base.find(" --tokenizer-model"), std::string::npos, "");
  const auto r = run_tool(mpiexec(4) + bin("llm-train") + base + " --vocab-size 510 --tensor-model-parallel-size 4");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("vocabulary size (--vocab-size / --tokenizer-model) 510 is not divisible"), std::string::npos)
      << r.output;
}

}  // namespace
