// The hang watchdog end to end (llm-train under mpiexec): a rank that stalls
// before a collective or a pipeline send is named by the rank waiting on it
// and the job exits non-zero soon after --comm-timeout; a rank killed with
// SIGKILL ends the job within the timeout, whether the launcher ends it
// (mpiexec's default, measured at 1-2 s) or keeps the survivors running (then
// their watchdog does), and the last committed checkpoint loads.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "tests/support/run_tool.h"
#include "tests/support/training_runs.h"

using namespace llm::test;
namespace fs = std::filesystem;

namespace {

using Watchdog = TinyModelRuns;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// flags() with another value for one of its flags.
std::string with(std::string flags, const std::string& flag, const std::string& value) {
  const auto at = flags.find(" " + flag + " ");
  if (at == std::string::npos) return flags + " " + flag + " " + value;
  const auto v = at + flag.size() + 2;
  return flags.replace(v, flags.find(' ', v) - v, value);
}

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// Running (not a zombie) per /proc.
bool running(pid_t pid) {
  const std::string stat = read_first_line("/proc/" + std::to_string(pid) + "/stat");
  const auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z' && stat[paren + 2] != 'X';
}

TEST_F(Watchdog, StalledRankIsNamedAndTheJobExitsNonZero) {
  struct Case {
    std::string layout, waiting_on;
  };
  // Pure data parallelism waits in the gradient all-reduce; a pipeline in the
  // send of activations to the stalled stage; tensor parallelism in a forward all-reduce.
  const std::vector<Case> cases = {
      {"", "hang: all_reduce on group 'dp' (ranks 0,1) of "},
      {" --pipeline-model-parallel-size 2", "hang: send to rank 1 (tag 0) on group 'pp' (ranks 0,1) of "},
      {" --tensor-model-parallel-size 2", "hang: all_reduce on group 'tp' (ranks 0,1) of "},
  };
  const double timeout = 5;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.layout);
    const auto start = Clock::now();
    const auto r = train(2, c.layout + " --comm-timeout 5 --inject-comm-stall-at 3");
    const double secs = seconds_since(start);
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "the job hung:\n" << r.output;
    EXPECT_TRUE(contains(r.output, "[rank 1] llm-train: --inject-comm-stall-at 3: stalling for good before ")) << r.output;
    EXPECT_TRUE(contains(r.output, "[rank 0] llm-train: error: " + c.waiting_on)) << r.output;
    EXPECT_TRUE(contains(r.output, "(--comm-timeout 5) at iteration 3; a peer may have died or stalled")) << r.output;
    // Startup, 2 iterations, the timeout, the abort; generous for a loaded machine.
    EXPECT_LT(secs, timeout + 60) << r.output;
  }
}

TEST_F(Watchdog, KilledRankEndsTheJobWithinTheTimeoutAndTheLastCheckpointLoads) {
  struct Case {
    std::string name, launcher_flags;
    double timeout;
    bool by_watchdog;
  };
  const std::vector<Case> cases = {
      {"mpiexec ends the job", "", 30, false},
      // Like launchers that leave the other ranks running: only the watchdog ends the job.
      {"the launcher keeps the survivor running", " --mca orte_abort_on_non_zero_status 0", 10, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir run;
    const std::string ck = run / "ck", pids = run / "pid.";
    const std::string tc = std::to_string(static_cast<int>(c.timeout));
    // Trains "forever" (stopped by the kill), saving every 3 iterations.
    const std::string train_flags = with(with(flags(), "--train-iters", "100000"), "--log-interval", "50");
    // Each rank writes its pid (exec keeps it) so that the test can kill rank 1.
    const std::string cmd = mpiexec(2) + c.launcher_flags + " sh -c 'echo $$ > " + pids +
                            "$OMPI_COMM_WORLD_RANK; exec " + bin("llm-train") + train_flags + " --save " + ck +
                            " --save-interval 3 --comm-timeout " + tc + "'";
    auto job = std::async(std::launch::async, [cmd] { return run_tool(cmd); });
    const auto start = Clock::now();
    bool ready = false;
    while (!ready && seconds_since(start) < 120 && job.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready)
      ready = fs::exists(fs::path(ck) / "latest") && !read_first_line(pids + "1").empty() &&
              !read_first_line(pids + "0").empty();
    ASSERT_TRUE(ready) << "no checkpoint was committed:\n" << (job.valid() ? job.get().output : std::string());
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // mid-iteration
    const pid_t victim = std::stoi(read_first_line(pids + "1")), survivor = std::stoi(read_first_line(pids + "0"));
    ASSERT_EQ(::kill(victim, SIGKILL), 0);
    const auto killed = Clock::now();
    const ToolResult r = job.get();
    const double secs = seconds_since(killed);
    std::printf("[%s] kill -9 of rank 1 -> job exit %d after %.2f s (--comm-timeout %s)\n", c.name.c_str(),
                r.exit_code, secs, tc.c_str());
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "the job hung:\n" << r.output;
    // mpiexec may return while its SIGKILL of rank 0 is still being delivered:
    // give the kernel a few seconds on a loaded machine.
    for (int i = 0; i < 100 && running(survivor); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(running(survivor)) << "rank 0 outlived the job by more than 5 s";
    if (c.by_watchdog) {
      // The survivor's wait began before the kill: it ends within the timeout
      // of the kill, plus the abort's own time.
      EXPECT_TRUE(contains(r.output, "[rank 0] llm-train: error: hang: ")) << r.output;
      EXPECT_TRUE(contains(r.output, "(--comm-timeout " + tc + ")")) << r.output;
      EXPECT_LT(secs, c.timeout + 20) << r.output;
    } else {
      EXPECT_LT(secs, c.timeout) << r.output;
    }
    // The last committed checkpoint resumes: one more iteration, then exit.
    const std::string latest = read_first_line(fs::path(ck) / "latest");
    ASSERT_EQ(latest.rfind("iter_", 0), 0u) << latest;
    const int64_t at = std::stoll(latest.substr(5));
    EXPECT_GE(at, 3);
    const auto resumed = run_tool(mpiexec(2) + bin("llm-train") + train_flags + " --load " + ck + " --exit-interval 1");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_TRUE(contains(resumed.output, latest + " at iteration " + std::to_string(at))) << resumed.output;
    EXPECT_TRUE(contains(resumed.output, "exiting at iteration " + std::to_string(at + 1))) << resumed.output;
  }
}

}  // namespace
