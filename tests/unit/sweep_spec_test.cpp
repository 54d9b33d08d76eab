// Sweep specs: a good spec plans the runs the README describes (names,
// iterations, IsoFLOP token counts, learning-rate rule, warm-up); bad specs
// (empty axes, N too small, a budget below one iteration, unknown keys and
// sections, malformed or non-positive numbers, clashing keys) are refused
// with a message naming the key.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "sweep/flops.h"
#include "sweep/results.h"
#include "sweep/spec.h"

using namespace llm::sweep;

namespace {

const std::string kData = R"([data]
data-path = runs/data/train
tokenizer-model = runs/data/tok.model
)";

std::string spec_with(const std::string& model, const std::string& budget, const std::string& train,
                      const std::string& more = "") {
  return "[model]\n" + model + "\nhead-dim = 16\nffn-multiple-of = 16\n[budget]\n" + budget + "\n[train]\n" + train +
         "\n" + kData + more;
}

const std::string kModel = "n = 0.2M, 400k";
const std::string kTrain = "global-batch-size = 8\nseq-length = 32\nlr = 1e-3";

// The error message of parsing and planning `text` (vocabulary 512), or "".
std::string error_of(const std::string& text) {
  try {
    plan_runs(parse_spec(text, "t.cfg"), 512);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR(text, ...)                                                   \
  do {                                                                            \
    const std::string msg_ = error_of(text);                                      \
    ASSERT_FALSE(msg_.empty()) << "accepted:\n" << (text);                        \
    for (const std::string part_ : {__VA_ARGS__})                                 \
      EXPECT_NE(msg_.find(part_), std::string::npos) << "'" << part_ << "' not in: " << msg_; \
  } while (0)

}  // namespace

TEST(SweepSpec, PlansIsoFlopRuns) {
  const SweepSpec s = parse_spec(spec_with(kModel, "flops = 1e11, 3e11",
                                           kTrain + "\nmin-lr-ratio = 0.2\nwarmup-fraction = 0.1\nlr-exponent = 0.5\n"
                                                    "lr-reference-n = 200k"),
                                 "t.cfg");
  EXPECT_TRUE(s.flops_axis);
  EXPECT_EQ(s.micro_batch(), 8);
  const auto runs = plan_runs(s, 512);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].name, "n0.2M_c1e11");
  EXPECT_EQ(runs[1].name, "n0.2M_c3e11");
  EXPECT_EQ(runs[2].name, "n400k_c1e11");
  for (const RunPlan& r : runs) {
    SCOPED_TRACE(r.name);
    EXPECT_LE(std::abs(static_cast<double>(r.n_params) / r.n_target - 1.0), 0.10);  // the default n-tolerance
    EXPECT_EQ(r.n_params, r.model.num_parameters());
    EXPECT_DOUBLE_EQ(r.token_budget, r.flops_budget / (6.0 * static_cast<double>(r.n_params)));
    EXPECT_EQ(r.train_iters, std::llround(r.token_budget / 256.0));  // 8 sequences × 32 tokens per iteration
    EXPECT_EQ(r.tokens, r.train_iters * 256);
    EXPECT_DOUBLE_EQ(r.flops_6nd, 6.0 * static_cast<double>(r.n_params) * static_cast<double>(r.tokens));
    EXPECT_DOUBLE_EQ(r.flops_exact, r.model.flops_per_token() * static_cast<double>(r.tokens));
    EXPECT_NEAR(r.flops_6nd / r.flops_budget, 1.0, 0.01);  // only the rounding to whole iterations
    EXPECT_DOUBLE_EQ(r.lr, 1e-3 * std::pow(static_cast<double>(r.n_params) / 200e3, -0.5));
    EXPECT_DOUBLE_EQ(r.min_lr, 0.2 * r.lr);
    EXPECT_EQ(r.warmup_iters, std::llround(0.1 * static_cast<double>(r.train_iters)));
    EXPECT_EQ(r.save_interval, (r.train_iters + 3) / 4);
    EXPECT_EQ(r.log_interval, std::max<int64_t>(1, r.train_iters / 100));
    const std::string cfg = r.train_config(s);
    EXPECT_NE(cfg.find("train-iters = " + std::to_string(r.train_iters) + "\n"), std::string::npos) << cfg;
    EXPECT_NE(cfg.find("ffn-hidden-size = " + std::to_string(r.model.ffn()) + "\n"), std::string::npos) << cfg;
    EXPECT_NE(cfg.find("spike-action = none\n"), std::string::npos) << cfg;  // the sweep's default
  }
  // Equal budgets: the bigger model trains on fewer tokens.
  EXPECT_GT(runs[0].tokens, runs[2].tokens);
  // The definition (what a run computes) is stable and changes with the plan.
  EXPECT_EQ(runs[0].definition(s), plan_runs(s, 512)[0].definition(s));
  EXPECT_NE(runs[0].definition(s), runs[1].definition(s));
}

TEST(SweepSpec, PlansTokenBudgetsAndExplicitShapes) {
  const SweepSpec s = parse_spec(
      "[sweep]\nname = t\nfit = false\n[model]\nshapes = 2x32x2, 3x64x4x128\nffn-multiple-of = 32\n"
      "[budget]\ntokens = 10k, 20k\n[train]\n" + kTrain + "\nwarmup-iters = 3\nsave-interval = 5\n" + kData +
      "[layout]\nranks = 2\ntensor-model-parallel-size = 2\nthreads-per-rank = 1\n",
      "t.cfg");
  const auto runs = plan_runs(s, 512);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].name, "s2x32x2_d10k");
  EXPECT_EQ(runs[3].name, "s3x64x4x128_d20k");
  EXPECT_EQ(runs[0].model.ffn(), 96);  // 8·32/3 = 85 → 96
  EXPECT_EQ(runs[3].model.ffn(), 128);
  EXPECT_EQ(runs[0].train_iters, 39);  // 10000 / 256 = 39.06
  EXPECT_EQ(runs[1].train_iters, 78);
  EXPECT_EQ(runs[0].flops_budget, 0.0);
  EXPECT_EQ(runs[0].warmup_iters, 3);
  EXPECT_EQ(runs[0].save_interval, 5);
  EXPECT_EQ(s.cores_per_run(), 2);
  EXPECT_EQ(s.micro_batch(), 8);  // dp 1
}

TEST(SweepSpec, ParsesQuantities) {
  EXPECT_DOUBLE_EQ(parse_quantity("0.5M", "k"), 5e5);
  EXPECT_DOUBLE_EQ(parse_quantity("2k", "k"), 2e3);
  EXPECT_DOUBLE_EQ(parse_quantity("3e13", "k"), 3e13);
  EXPECT_DOUBLE_EQ(parse_quantity("1.5G", "k"), 1.5e9);
  EXPECT_DOUBLE_EQ(parse_quantity("7B", "k"), 7e9);
  EXPECT_DOUBLE_EQ(parse_quantity("1T", "k"), 1e12);
  EXPECT_THROW(parse_quantity("1m", "k"), std::invalid_argument);
  EXPECT_THROW(parse_quantity("abc", "k"), std::invalid_argument);
  EXPECT_THROW(parse_quantity("", "k"), std::invalid_argument);
}

TEST(SweepSpec, EmptyAxesAreRefused) {
  EXPECT_ERROR(spec_with("n =", "tokens = 10k", kTrain), "t.cfg", "[model] n", "empty");
  EXPECT_ERROR(spec_with("shapes =", "tokens = 10k", kTrain), "[model] shapes", "empty");
  EXPECT_ERROR(spec_with(kModel, "tokens =", kTrain), "[budget] tokens", "empty");
  EXPECT_ERROR(spec_with(kModel, "flops = ", kTrain), "[budget] flops", "empty");
  EXPECT_ERROR(spec_with(kModel, "flops = 1e11,,3e11", kTrain), "[budget] flops", "empty entry");
  EXPECT_ERROR(spec_with("aspect-ratio = 32", "tokens = 10k", kTrain), "[model]", "n = ", "shapes");
  EXPECT_ERROR(spec_with(kModel, "", kTrain), "[budget]", "tokens", "flops");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k\nflops = 1e11", kTrain), "[budget]", "exactly one");
  EXPECT_ERROR(spec_with("n = 1M\nshapes = 2x32x2", "tokens = 10k", kTrain), "[model]", "exactly one");
}

TEST(SweepSpec, NTooSmallForAnyShapeIsRefused) {
  EXPECT_ERROR(spec_with("n = 1k, 400k", "tokens = 10k", kTrain), "t.cfg", "[model] n = 1k", "smallest shape");
  EXPECT_ERROR(spec_with("n = 400k, 401k", "tokens = 10k", kTrain), "n = 400k and 401k", "same shape");
  EXPECT_ERROR(spec_with("shapes = 2x30x4", "tokens = 10k", kTrain), "[model] shapes = 2x30x4", "divide");
}

TEST(SweepSpec, BudgetBelowOneIterationIsRefused) {
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k, 200", kTrain), "[budget] tokens = 200", "less than one iteration",
               "256 tokens", "global-batch-size");
  EXPECT_ERROR(spec_with(kModel, "flops = 1e11, 1e8", kTrain), "[budget] flops = 1e8", "less than one iteration");
  EXPECT_ERROR(spec_with(kModel, "tokens = 1k", kTrain + "\nwarmup-iters = 4"), "[train] warmup-iters",
               "only 4 iterations");
}

TEST(SweepSpec, UnknownKeysAndSectionsAreRefused) {
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain + "\nlearning-rate = 1e-3"), "t.cfg:", "[train] learning-rate",
               "unknown key", "lr");
  EXPECT_ERROR(spec_with(kModel + "\nlr = 1e-3", "tokens = 10k", kTrain), "[model] lr", "belongs under [train]");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain, "[optimizer]\nlr = 1\n"), "unknown section [optimizer]");
  EXPECT_ERROR("n = 1M\n" + spec_with(kModel, "tokens = 10k", kTrain), "'n' is outside any section");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain + "\nlr = 2e-3"), "[train] lr", "given twice");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain + "\nwarmup"), "'warmup' is not 'key = value'");
}

TEST(SweepSpec, MalformedAndNonPositiveNumbersAreRefused) {
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", "global-batch-size = 8\nlr = 1e-3x"), "t.cfg:", "[train] lr",
               "'1e-3x'", "suffix");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", "global-batch-size = eight\nlr = 1e-3"), "[train] global-batch-size",
               "not a number");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", "global-batch-size = 0\nlr = 1e-3"), "[train] global-batch-size",
               "positive whole number");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", "global-batch-size = 2.5\nlr = 1e-3"), "[train] global-batch-size",
               "whole number");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", "global-batch-size = 8\nlr = -1e-3"), "[train] lr", "positive");
  EXPECT_ERROR(spec_with(kModel, "tokens = -10k", kTrain), "[budget] tokens", "positive");
  EXPECT_ERROR(spec_with("n = 0.2M, 0", "tokens = 10k", kTrain), "[model] n", "'0' must be positive");
  EXPECT_ERROR(spec_with(kModel + "\nhead-dim = 15", "tokens = 10k", kTrain), "[model] head-dim");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain + "\nmin-lr-ratio = 1.5"), "[train] min-lr-ratio", "[0, 1]");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain + "\nwarmup-fraction = 1"), "[train] warmup-fraction");
  EXPECT_ERROR(spec_with(kModel + "\ntie-embeddings = maybe", "tokens = 10k", kTrain), "[model] tie-embeddings",
               "boolean");
  EXPECT_ERROR(spec_with("shapes = 2x64", "tokens = 10k", kTrain), "[model] shapes", "'2x64' is not a shape");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain + "\nspike-action = ignore"), "[train] spike-action",
               "none, skip, rollback");
}

TEST(SweepSpec, InconsistentKeysAreRefused) {
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", "lr = 1e-3"), "[train] global-batch-size is missing");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", "global-batch-size = 8"), "[train] lr is missing");
  EXPECT_ERROR("[model]\nn = 1M\n[budget]\ntokens = 1M\n[train]\n" + kTrain, "[data] data-path is missing");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain + "\nwarmup-iters = 2\nwarmup-fraction = 0.1"),
               "warmup-fraction or warmup-iters");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain + "\nlr-exponent = 0.3"), "[train] lr-exponent",
               "lr-reference-n");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain + "\nmicro-batch-size = 3"), "[train] global-batch-size",
               "multiple of 3");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain, "[layout]\nranks = 3\ntensor-model-parallel-size = 2\n"),
               "[layout] ranks", "not divisible");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain + "\nextra-flags = --weight-decay 0 --train-iters 5"),
               "[train] extra-flags", "--train-iters", "set by llm-sweep");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain, "[sweep]\nmin-runs-to-fit = 9\n"), "[sweep] min-runs-to-fit 9",
               "exceeds the 2 runs");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k", kTrain, "[test]\nfail-runs = n9M_d10k\n"), "[test] fail-runs",
               "n9M_d10k", "not a run");
  EXPECT_ERROR(spec_with(kModel, "tokens = 10k, 10000", kTrain), "[budget] tokens", "listed twice");
}

TEST(SweepResults, MetricsAreReadOnceEvenAfterAResume) {
  const std::string path = ::testing::TempDir() + "/sweep_metrics.jsonl";
  {
    std::ofstream f(path);
    // iterations 1-6 logged, evaluation at 4, checkpoint at 4; killed; resumed from 4 and finished at 8.
    for (int it = 1; it <= 6; ++it)
      f << R"({"iteration":)" << it << R"(,"lm_loss":)" << 10 - it << R"(,"tokens_per_sec":)" << 100 * it << "}\n";
    f << R"({"iteration":4,"val_loss":9.5,"val_ppl":1})" << "\n";
    f << R"({"event":"checkpoint_saved","iteration":4})" << "\n";
    for (int it = 5; it <= 8; ++it)
      f << R"({"iteration":)" << it << R"(,"lm_loss":)" << 20 - it << R"(,"tokens_per_sec":)" << 1000 << "}\n";
    f << R"({"iteration":8,"val_loss":7.25,"val_ppl":1})" << "\n";
    f << R"({"iteration":9,"lm_lo)";  // torn line
  }
  const RunMetrics m = read_metrics(path);
  EXPECT_EQ(m.last_iteration, 8);
  EXPECT_EQ(m.val_iteration, 8);
  EXPECT_EQ(m.final_val_loss, 7.25);
  // the last 5 lines: iterations 4 (loss 6) and 5-8 (15, 14, 13, 12), one iteration each
  EXPECT_DOUBLE_EQ(m.final_train_loss, (6.0 + 15 + 14 + 13 + 12) / 5);
  EXPECT_DOUBLE_EQ(m.tokens_per_sec, 700.0);  // median of 100, 200, 300, 400 and 1000 × 4
  EXPECT_TRUE(m.complete(8));
  EXPECT_FALSE(m.complete(9));
}

TEST(SweepResults, CsvHasTheDocumentedColumns) {
  ResultRow r;
  r.summary = {{"run", "n1M_c1e13"}, {"n_params", 1000000}, {"tokens", 2048}, {"flops_budget", 1e13}, {"lr", 0.001}};
  r.status = "done";
  r.attempts = 2;
  r.final_val_loss = 3.25;
  const std::string csv = results_csv({r});
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "run,status,attempts,n_params,n_non_embedding,num_layers,hidden_size,num_attention_heads,ffn_hidden_size,"
            "tokens,flops_budget,flops_6nd,flops_exact,train_iters,global_batch_size,seq_length,lr,final_train_loss,"
            "final_val_loss,tokens_per_sec,wall_seconds");
  EXPECT_EQ(csv.substr(csv.find('\n') + 1), "n1M_c1e13,done,2,1000000,,,,,,2048,1e+13,,,,,,0.001,,3.25,,\n");
}
