// The hang watchdog on 2 ranks: rank 1 holds back from an all-reduce, a recv
// and a barrier; rank 0's wait ends after --comm-timeout with a report naming
// the operation, group, peer and iteration. A test handler stands in for the
// job abort (the abort itself is tested by tests/launch/watchdog_test.cpp),
// so the operation can still finish once rank 1 takes part.
#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <thread>

#include "parallel/mpi_communicator.h"
#include "parallel/watchdog.h"
#include "tests/support/mpi_test_main.h"

namespace llm {
namespace {

constexpr auto kCat = MemoryCategory::Communication;
constexpr double kTimeout = 0.5;
// Generous: the machine running the tests may be loaded.
constexpr double kSlack = 20.0;

MpiCommunicator& world() {
  static MpiCommunicator c(MPI_COMM_WORLD, "world");
  return c;
}

struct Hang : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The watchdog on with kTimeout and a handler that throws Hang, for one test.
class Watchdog : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(world().size(), 2);
    set_comm_timeout(kTimeout);
    set_comm_context_iteration(7);
    set_comm_hang_handler([](const std::string& report) { throw Hang(report); });
  }
  void TearDown() override {
    set_comm_hang_handler({});
    set_comm_timeout(0);
    set_comm_context_iteration(0);
  }
  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }
};

TEST_F(Watchdog, AllReduceWithAMissingRankTimesOutNamingItThenCompletes) {
  auto& c = world();
  Tensor t = Tensor::empty({4}, DType::F32, kCat);
  for (int i = 0; i < 4; ++i) t.data<float>()[i] = float(c.rank() + i);
  if (c.rank() == 0) {
    auto h = c.all_reduce_async(t, ReduceOp::Sum);
    const auto start = std::chrono::steady_clock::now();
    std::string report;
    try {
      h->wait();
    } catch (const Hang& e) {
      report = e.what();
    }
    const double waited = seconds_since(start);
    EXPECT_GE(waited, kTimeout);
    EXPECT_LT(waited, kTimeout + kSlack);
    EXPECT_EQ(report.rfind("hang: all_reduce on group 'world' (ranks 0,1) of 16 bytes has waited 0.", 0), 0u)
        << report;
    EXPECT_NE(report.find("(--comm-timeout 0.5) at iteration 7; a peer may have died or stalled"),
              std::string::npos)
        << report;
    EXPECT_FALSE(h->done());              // still in flight
    MPI_Barrier(MPI_COMM_WORLD);          // now rank 1 joins
    h->wait();
  } else {
    MPI_Barrier(MPI_COMM_WORLD);  // after rank 0 timed out
    c.all_reduce(t, ReduceOp::Sum);
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(t.data<float>()[i], float(1 + 2 * i));
}

TEST_F(Watchdog, RecvFromASilentPeerNamesThePeerAndTag) {
  auto& c = world();
  Tensor t = Tensor::empty({8}, DType::F32, kCat);
  if (c.rank() == 0) {
    auto h = c.recv_async(t, 1, 5);
    std::string report;
    try {
      h->wait();
    } catch (const Hang& e) {
      report = e.what();
    }
    EXPECT_EQ(report.rfind("hang: recv from rank 1 (tag 5) on group 'world' (ranks 0,1) of 32 bytes has waited", 0),
              0u)
        << report;
    MPI_Barrier(MPI_COMM_WORLD);
    h->wait();
    for (int i = 0; i < 8; ++i) EXPECT_EQ(t.data<float>()[i], float(i));
  } else {
    for (int i = 0; i < 8; ++i) t.data<float>()[i] = float(i);
    MPI_Barrier(MPI_COMM_WORLD);
    c.send(t, 0, 5);
  }
}

// A handler that returns lets the wait go on: it is called once per timeout.
TEST_F(Watchdog, BarrierIsWatchedAndAReturningHandlerKeepsWaiting) {
  auto& c = world();
  std::vector<std::string> reports;
  set_comm_hang_handler([&](const std::string& report) { reports.push_back(report); });
  if (c.rank() == 1) std::this_thread::sleep_for(std::chrono::duration<double>(3.5 * kTimeout));
  c.barrier();
  if (c.rank() == 0) {
    ASSERT_GE(reports.size(), 1u);
    EXPECT_LE(reports.size(), 4u);
    EXPECT_EQ(reports[0].rfind("hang: barrier on group 'world' (ranks 0,1) has waited", 0), 0u) << reports[0];
  }
  set_comm_hang_handler({});
  c.barrier();
}

TEST_F(Watchdog, OffByTimeoutZeroAndRejectsBadValues) {
  set_comm_timeout(0);
  EXPECT_EQ(comm_timeout(), 0.0);
  auto& c = world();
  if (c.rank() == 1) std::this_thread::sleep_for(std::chrono::duration<double>(2 * kTimeout));
  c.barrier();  // waits as long as it takes: the handler would throw
  EXPECT_THROW(set_comm_timeout(-1), std::invalid_argument);
  EXPECT_THROW(set_comm_timeout(std::numeric_limits<double>::infinity()), std::invalid_argument);
  EXPECT_EQ(comm_timeout(), 0.0);
}

TEST(WatchdogReport, RankListsAreCut) {
  EXPECT_EQ(rank_list({0, 2, 4}), "0,2,4");
  std::vector<int> many(64);
  std::iota(many.begin(), many.end(), 0);
  EXPECT_EQ(rank_list(many), "0,1,2,3,4,5,6,7,... (64 ranks)");
  EXPECT_EQ(world().describe("send", 12, 1, 3), "send to rank 1 (tag 3) on group 'world' (ranks 0,1) of 12 bytes");
}

}  // namespace
}  // namespace llm
