// The hang watchdog: the polling wait with its deadline, the report, and the
// testing hooks (a stalled rank, a handler in place of the abort).
#include "parallel/watchdog.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

namespace llm {
namespace {

std::atomic<double> g_timeout{0.0};
std::atomic<int64_t> g_iteration{0};
std::atomic<int64_t> g_stall_iteration{0};
std::atomic<int> g_stall_rank{1};
std::mutex g_handler_mutex;
CommHangHandler g_handler;

int world_rank() {
  int init = 0, fin = 0, r = -1;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// "llm-train" (glibc's short program name), or "llm" if unknown.
const char* program() {
  const char* p = program_invocation_short_name;
  return p && *p ? p : "llm";
}

std::string format(const char* fmt, double a, double b) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, a, b);
  return buf;
}

}  // namespace

void set_comm_timeout(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0)
    throw std::invalid_argument("communication timeout " + std::to_string(seconds) +
                                " s: must be a finite number >= 0 (0 turns the hang watchdog off)");
  g_timeout.store(seconds, std::memory_order_relaxed);
}
double comm_timeout() { return g_timeout.load(std::memory_order_relaxed); }

void set_comm_context_iteration(int64_t iteration) { g_iteration.store(iteration, std::memory_order_relaxed); }
int64_t comm_context_iteration() { return g_iteration.load(std::memory_order_relaxed); }

void set_comm_stall_injection(int64_t iteration, int world_rank) {
  g_stall_rank.store(world_rank, std::memory_order_relaxed);
  g_stall_iteration.store(iteration, std::memory_order_relaxed);
}

void comm_stall_point(const std::function<std::string()>& what) {
  const int64_t at = g_stall_iteration.load(std::memory_order_relaxed);
  if (at <= 0 || comm_context_iteration() != at) return;
  const int me = world_rank();
  if (me != g_stall_rank.load(std::memory_order_relaxed)) return;
  std::fprintf(stderr, "[rank %d] %s: --inject-comm-stall-at %lld: stalling for good before %s\n", me, program(),
               static_cast<long long>(at), what().c_str());
  std::fflush(stderr);
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));  // until the job is ended
}

void set_comm_hang_handler(CommHangHandler handler) {
  std::lock_guard<std::mutex> lock(g_handler_mutex);
  g_handler = std::move(handler);
}

std::string rank_list(const std::vector<int>& ranks) {
  constexpr size_t kShown = 8;
  std::string s;
  for (size_t i = 0; i < ranks.size() && i < kShown; ++i) {
    if (i > 0) s += ',';
    s += std::to_string(ranks[i]);
  }
  if (ranks.size() > kShown) s += ",... (" + std::to_string(ranks.size()) + " ranks)";
  return s;
}

void watchdog_wait(const std::function<bool()>& test, const std::function<std::string()>& describe) {
  using Clock = std::chrono::steady_clock;
  using std::chrono::microseconds;
  const double timeout = comm_timeout();
  const auto start = Clock::now();
  const auto limit = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout));
  auto deadline = timeout > 0 ? start + limit : Clock::time_point::max();
  for (;;) {
    if (test()) return;
    const auto now = Clock::now();
    const auto waited = now - start;
    if (now >= deadline) {
      const int64_t it = comm_context_iteration();
      const std::string report =
          "hang: " + describe() + " has waited " +
          format("%.1f s (--comm-timeout %g)", std::chrono::duration<double>(waited).count(), timeout) +
          (it >= 1 ? " at iteration " + std::to_string(it) : std::string(" before the first training iteration")) +
          "; a peer may have died or stalled";
      CommHangHandler handler;
      {
        std::lock_guard<std::mutex> lock(g_handler_mutex);
        handler = g_handler;
      }
      if (handler) {
        handler(report);  // may throw: the operation stays in flight
        deadline = Clock::now() + limit;
        continue;
      }
      std::fflush(stdout);
      std::fprintf(stderr, "[rank %d] %s: error: %s\n", world_rank(), program(), report.c_str());
      std::fflush(stderr);
      int init = 0;
      MPI_Initialized(&init);
      if (init) MPI_Abort(MPI_COMM_WORLD, kCommHangExitCode);  // every rank, the stalled one too
      std::_Exit(kCommHangExitCode);
    }
    // Poll as MPI_Wait does (every poll drives the operation's rounds, so a
    // sleeping rank would slow its peers; MPI yields the core itself when the
    // node is oversubscribed), and only in waits past 1 s, which are no longer
    // normal traffic, sleep between polls: 100 µs, growing to 1 ms at 10 s.
    if (waited < std::chrono::seconds(1)) continue;
    const auto nap = std::clamp(std::chrono::duration_cast<microseconds>(waited) / 10000, microseconds(100),
                                microseconds(1000));
    std::this_thread::sleep_for(nap);
  }
}

}  // namespace llm
