// Runs build/bin/llm-fit end to end: a results.csv in, fits.json, fit_report.md and
// plots out; usage errors exit 2, bad input exits 1 naming the file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include "sweep/plots.h"

namespace fs = std::filesystem;

namespace {

const std::string kTool = std::string(LLM_BIN_DIR) + "/llm-fit";

struct Result {
  int rc = -1;
  std::string output;
};

Result run_tool(const std::string& args) {
  const std::string cmd = "'" + kTool + "' " + args + " 2>&1";
  Result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// An IsoFLOP sweep's results from the Chinchilla law (noiseless): 4 budgets x 5 sizes.
std::string results_csv() {
  std::ostringstream s;
  s.precision(12);
  s << "run,status,attempts,n_params,n_non_embedding,num_layers,hidden_size,num_attention_heads,ffn_hidden_size,"
       "tokens,flops_budget,flops_6nd,flops_exact,train_iters,global_batch_size,seq_length,lr,final_train_loss,"
       "final_val_loss,tokens_per_sec,wall_seconds\n";
  for (int k = 0; k < 4; ++k) {
    const double c = 1e15 * std::pow(10.0, k);
    for (int i = 0; i < 5; ++i) {
      const double n = std::sqrt(c / 120) * std::pow(10.0, (i - 2) / 2.5), d = c / (6 * n);
      const double loss = 1.69 + 406.4 * std::pow(n, -0.34) + 410.7 * std::pow(d, -0.28);
      s << "c" << k << "n" << i << ",done,1," << n << "," << 0.7 * n << ",2,64,2,192," << d << "," << c << ","
        << 6 * n * d << "," << 6.2 * n * d << ",50,8,128,0.002," << loss + 0.01 << "," << loss << ",5000,3\n";
    }
  }
  return s.str();
}

class FitTool : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kTool)) << kTool << " is not built (cmake --build build --target llm-fit)";
    dir_ = fs::temp_directory_path() / ("llm_tool_fit_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "results.csv") << results_csv();
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

}  // namespace

TEST_F(FitTool, WritesFitsReportAndPlots) {
  const Result r = run_tool("--results '" + (dir_ / "results.csv").string() + "' --out '" + (dir_ / "fit").string() +
                            "' --budgets 1e18,5.76e23 --bootstrap 20 --seed 3 --start-grid thin");
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("approach 3"), std::string::npos) << r.output;
  std::ifstream jf(dir_ / "fit" / "fits.json");
  ASSERT_TRUE(jf.good());
  const auto j = nlohmann::json::parse(jf);
  EXPECT_NEAR(j["approach3"]["alpha"]["value"].get<double>(), 0.34, 1e-3);
  EXPECT_NEAR(j["approach3"]["beta"]["value"].get<double>(), 0.28, 1e-3);
  EXPECT_EQ(j["approach3"]["bootstrap"]["samples"], 20);
  ASSERT_EQ(j["allocations"]["approach3"].size(), 2u);
  // REFERENCES.md check value: rounded Hoffmann fit at C = 5.76e23 gives N_opt 3.22e10.
  EXPECT_NEAR(j["allocations"]["approach3"][1]["n_opt"].get<double>() / 3.22e10, 1.0, 0.02);
  EXPECT_TRUE(fs::exists(dir_ / "fit" / "fit_report.md"));
  if (!llm::sweep::find_gnuplot("").empty()) {
    for (const char* f : {"loss_vs_n.png", "isoflop.png", "frontier.png", "frontier.svg"})
      EXPECT_TRUE(fs::exists(dir_ / "fit" / "plots" / f)) << f;
  }
}

TEST_F(FitTool, UsageAndInputErrors) {
  Result r = run_tool("--out x");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.output.find("llm-fit: error: --results is required"), std::string::npos) << r.output;
  r = run_tool("--results a.csv --out x --budgets 1e18,abc");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.output.find("--budgets: 'abc'"), std::string::npos) << r.output;
  r = run_tool("--results a.csv --out x --n-column tokens");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.output.find("--n-column 'tokens'"), std::string::npos) << r.output;
  r = run_tool("--results '" + (dir_ / "nope.csv").string() + "' --out '" + (dir_ / "fit").string() + "'");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.output.find((dir_ / "nope.csv").string() + ": cannot open"), std::string::npos) << r.output;
  r = run_tool("--help");
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.output.find("--bootstrap"), std::string::npos);
}
