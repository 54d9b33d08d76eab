// llm-sweep end to end on three very small runs: a sweep interrupted
// (SIGINT) in the middle of its second run resumes without rerunning the
// finished one (its done.json untouched), the interrupted run continues from
// its checkpoint, and every run ends with the losses of an uninterrupted
// sweep, bit for bit; a run made to fail (an injected bad flag) is reported
// as failed in results.csv with a non-zero exit code after the allowed
// retries, also under mpirun with two ranks; a changed spec for an existing
// output folder is refused; --dry-run plans without writing anything.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "sweep/results.h"
#include "tests/support/run_tool.h"

using namespace llm::test;
namespace fs = std::filesystem;

namespace {

class Sweep : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const auto r = prepare_test_corpus(*dir_);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { delete dir_; }

  // Three shapes × one token budget of 200 iterations of 4 × 32 tokens.
  static std::string spec(const std::string& extra_train = "", const std::string& more = "",
                          const std::string& shapes = "1x32x2, 2x32x2, 2x48x3", const std::string& tokens = "25600") {
    return "[sweep]\nfit = false\n[model]\nshapes = " + shapes + "\nffn-multiple-of = 16\n[budget]\ntokens = " + tokens +
           "\n[train]\nseq-length = 32\nglobal-batch-size = 4\nlr = 3e-3\nlog-interval = 1\neval-iters = 2\n"
           "save-interval = 20\n" + extra_train + "\n[data]\ndata-path = " + (*dir_ / "gpl") +
           "\ntokenizer-model = " + (*dir_ / "tok.model") + "\n" + more;
  }
  static std::string write_spec(const TempDir& d, const std::string& name, const std::string& text) {
    std::ofstream(d / name) << text;
    return d / name;
  }
  static std::string sweep_cmd(const std::string& spec_file, const std::string& out, const std::string& flags = "") {
    return bin("llm-sweep") + " --spec " + spec_file + " --out " + out + " --progress-interval 1000" + flags;
  }
  static std::map<std::string, std::map<std::string, std::string>> rows(const std::string& out) {
    std::map<std::string, std::map<std::string, std::string>> by_run;
    for (auto& r : llm::sweep::read_results_csv(out + "/results.csv")) by_run[r["run"]] = r;
    return by_run;
  }
  static nlohmann::json json_file(const std::string& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in);
  }
  static TempDir* dir_;
};
TempDir* Sweep::dir_ = nullptr;

const std::vector<std::string> kRuns = {"s1x32x2_d25600", "s2x32x2_d25600", "s2x48x3_d25600"};

int64_t logged_iterations(const std::string& metrics) {
  int64_t last = 0;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("lm_loss")) last = std::max<int64_t>(last, j["iteration"].get<int64_t>());
    } catch (const nlohmann::json::exception&) {
    }
  }
  return last;
}

TEST_F(Sweep, InterruptedSweepResumesWithoutRerunningFinishedRuns) {
  TempDir work;
  const std::string spec_file = write_spec(work, "sweep.cfg", spec());
  // The reference: the same sweep, uninterrupted, two runs at a time.
  const std::string ref = work / "ref";
  auto full = run_tool(sweep_cmd(spec_file, ref, " --max-concurrent 2"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const auto expected = rows(ref);
  ASSERT_EQ(expected.size(), 3u);
  for (const auto& name : kRuns) {
    EXPECT_EQ(expected.at(name).at("status"), "done") << name;
    EXPECT_EQ(expected.at(name).at("attempts"), "1") << name;
    EXPECT_FALSE(expected.at(name).at("final_val_loss").empty()) << name;
  }

  // The same sweep one run at a time, interrupted with SIGINT once the second run has logged a few iterations.
  const std::string out = work / "out", log = work / "interrupted.log";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", ("exec " + sweep_cmd(spec_file, out, " --max-concurrent 1") + " > " + log + " 2>&1").c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const std::string second = out + "/runs/" + kRuns[1];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (logged_iterations(second + "/metrics.jsonl") < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  std::ifstream in(log);
  const std::string interrupted((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(status)) << interrupted;
  EXPECT_EQ(WEXITSTATUS(status), 3) << interrupted;
  EXPECT_NE(interrupted.find("Resume with the same command"), std::string::npos) << interrupted;
  ASSERT_TRUE(fs::exists(out + "/runs/" + kRuns[0] + "/done.json")) << interrupted;
  ASSERT_FALSE(fs::exists(second + "/done.json")) << "the second run finished before the interrupt; " << interrupted;
  EXPECT_TRUE(fs::exists(second + "/checkpoints/latest")) << interrupted;
  EXPECT_FALSE(fs::exists(out + "/runs/" + kRuns[2] + "/metrics.jsonl")) << interrupted;
  auto partial = rows(out);
  EXPECT_EQ(partial.at(kRuns[0]).at("status"), "done");
  EXPECT_EQ(partial.at(kRuns[1]).at("status"), "pending");
  EXPECT_EQ(partial.at(kRuns[2]).at("status"), "pending");
  const std::string done0 = out + "/runs/" + kRuns[0] + "/done.json";
  const auto done0_time = fs::last_write_time(done0);
  const std::string done0_text = json_file(done0).dump();
  const int64_t stopped_at = logged_iterations(second + "/metrics.jsonl");
  EXPECT_LT(stopped_at, 200);

  // Resumed by the same command.
  auto resumed = run_tool(sweep_cmd(spec_file, out, " --max-concurrent 1"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("1 already done"), std::string::npos) << resumed.output;
  EXPECT_EQ(resumed.output.find("started " + kRuns[0]), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("started " + kRuns[1] + " (attempt 2, resuming from its checkpoint)"), std::string::npos)
      << resumed.output;
  EXPECT_EQ(fs::last_write_time(done0), done0_time);
  EXPECT_EQ(json_file(done0).dump(), done0_text);
  const auto got = rows(out);
  for (const auto& name : kRuns) {
    SCOPED_TRACE(name);
    EXPECT_EQ(got.at(name).at("status"), "done");
    EXPECT_EQ(got.at(name).at("attempts"), name == kRuns[1] ? "2" : "1");
    // Resumed from a checkpoint, the run trains exactly what the uninterrupted one trained.
    EXPECT_EQ(got.at(name).at("final_train_loss"), expected.at(name).at("final_train_loss"));
    EXPECT_EQ(got.at(name).at("final_val_loss"), expected.at(name).at("final_val_loss"));
    EXPECT_EQ(got.at(name).at("flops_exact"), expected.at(name).at("flops_exact"));
    const auto a = json_file(out + "/runs/" + name + "/done.json"), b = json_file(ref + "/runs/" + name + "/done.json");
    EXPECT_EQ(a["final_val_loss"].get<double>(), b["final_val_loss"].get<double>());
    EXPECT_EQ(a["final_train_loss"].get<double>(), b["final_train_loss"].get<double>());
  }
  // The resumed attempt loaded the checkpoint the interrupted one saved.
  std::ifstream metrics(second + "/metrics.jsonl");
  std::string text((std::istreambuf_iterator<char>(metrics)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("checkpoint_loaded"), std::string::npos);

  // A third invocation has nothing to do; asked to fit (fit is not part of a run's definition) without
  // llm-fit, it says how to run the fit and still succeeds.
  std::string fitting = spec();
  fitting.replace(fitting.find("fit = false"), 11, "fit = true\nmin-runs-to-fit = 3");
  auto again = run_tool(sweep_cmd(write_spec(work, "fit.cfg", fitting), out, " --llm-fit " + (work / "no-llm-fit")));
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("3 already done, 0 to run"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("llm-fit was not found at " + (work / "no-llm-fit")), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("llm-fit --results " + out + "/results.csv --out " + out), std::string::npos)
      << again.output;

  // A changed spec for the same folder would overwrite results: refused, naming the run and what changed.
  const std::string changed = write_spec(work, "changed.cfg", spec("min-lr-ratio = 0.5"));
  auto refused = run_tool(sweep_cmd(changed, out));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("defines differently"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find(kRuns[0] + ": min_lr "), std::string::npos) << refused.output;
  EXPECT_EQ(json_file(done0).dump(), done0_text);
}

// Two ranks per run through mpirun (tensor parallel 2). One run fails at its
// first attempt only, one at every attempt: with --max-retries 0 both are
// failed (exit 1); a rerun with --max-retries 2 retries them, the first
// succeeds, the second fails for good after 3 attempts; the good run is never rerun.
TEST_F(Sweep, FailedRunsAreReportedAndRetriedUpToTheLimit) {
  TempDir work;
  const std::string layout = "[layout]\nranks = 2\ntensor-model-parallel-size = 2\n";
  const std::string once = write_spec(work, "once.cfg", spec("", layout + "[test]\nfail-runs = s2x32x2_d1280\nfail-attempts = 1\n",
                                                        "1x32x2, 2x32x2", "1280"));
  const std::string out = work / "out";
  auto first = run_tool(sweep_cmd(once, out, " --max-retries 0 --max-concurrent 2"));
  EXPECT_EQ(first.exit_code, 1) << first.output;
  EXPECT_NE(first.output.find("FAILED s2x32x2_d1280"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("sweep-test-injected-failure"), std::string::npos) << first.output;  // llm-train's error
  auto r = rows(out);
  EXPECT_EQ(r.at("s1x32x2_d1280").at("status"), "done");
  EXPECT_EQ(r.at("s2x32x2_d1280").at("status"), "failed");
  EXPECT_EQ(r.at("s2x32x2_d1280").at("attempts"), "1");
  EXPECT_TRUE(r.at("s2x32x2_d1280").at("final_val_loss").empty());
  const auto state = json_file(out + "/runs/s2x32x2_d1280/state.json");
  EXPECT_EQ(state["failures"], 1);
  EXPECT_NE(state["last_exit_code"], 0);

  // Rerun with retries allowed: attempt 2 has no injected failure and trains.
  auto second = run_tool(sweep_cmd(once, out, " --max-retries 2"));
  EXPECT_EQ(second.exit_code, 0) << second.output;
  r = rows(out);
  EXPECT_EQ(r.at("s2x32x2_d1280").at("status"), "done");
  EXPECT_EQ(r.at("s2x32x2_d1280").at("attempts"), "2");
  EXPECT_EQ(r.at("s1x32x2_d1280").at("attempts"), "1");

  // Failing at every attempt: 1 + 2 retries, then reported, exit code 1; a rerun does not try again.
  const std::string always = write_spec(work, "always.cfg", spec("", layout + "[test]\nfail-runs = s2x32x2_d1280\n",
                                                            "1x32x2, 2x32x2", "1280"));
  const std::string out2 = work / "out2";
  auto failing = run_tool(sweep_cmd(always, out2, " --max-retries 2"));
  EXPECT_EQ(failing.exit_code, 1) << failing.output;
  EXPECT_NE(failing.output.find("failure 3 of at most 3), giving up"), std::string::npos) << failing.output;
  EXPECT_NE(failing.output.find("s2x32x2_d1280 failed 3 time(s)"), std::string::npos) << failing.output;
  r = rows(out2);
  EXPECT_EQ(r.at("s2x32x2_d1280").at("status"), "failed");
  EXPECT_EQ(r.at("s2x32x2_d1280").at("attempts"), "3");
  EXPECT_EQ(r.at("s1x32x2_d1280").at("status"), "done");
  auto rerun = run_tool(sweep_cmd(always, out2, " --max-retries 2"));
  EXPECT_EQ(rerun.exit_code, 1) << rerun.output;
  EXPECT_NE(rerun.output.find("1 failed earlier"), std::string::npos) << rerun.output;
  EXPECT_EQ(rows(out2).at("s2x32x2_d1280").at("attempts"), "3");
}

TEST_F(Sweep, DryRunPlansWithoutWriting) {
  TempDir work;
  const std::string spec_file = write_spec(work, "sweep.cfg", spec());
  auto r = run_tool(bin("llm-sweep") + " --spec " + spec_file + " --out " + (work / "out") + " --dry-run");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const auto& name : kRuns) EXPECT_NE(r.output.find(name), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("3 runs"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(work / "out"));
  // A bad spec: exit code 2 and the key named.
  const std::string bad = write_spec(work, "bad.cfg", spec("warmup = 3"));
  r = run_tool(bin("llm-sweep") + " --spec " + bad + " --dry-run");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("llm-sweep: error: " + bad + ":"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[train] warmup: unknown key"), std::string::npos) << r.output;
}

}  // namespace
