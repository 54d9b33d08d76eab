// The process grid on 4 ranks: for each layout of 4, every group's MPI
// communicator has exactly the members the pure layout arithmetic gives, an
// all-reduce over each group sums exactly its members' ranks, pipeline
// neighbours talk, an invalid layout fails on every rank, all-reduce results
// are bitwise identical on every rank and from run to run, and the counters
// reach the report.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>

#include "parallel/process_grid.h"
#include "tests/support/mpi_test_main.h"

namespace llm {
namespace {

constexpr auto kCat = MemoryCategory::Communication;
constexpr GroupKind kAll[] = {GroupKind::World, GroupKind::TP, GroupKind::PP, GroupKind::DP,
                              GroupKind::Embedding};

class GridLayouts : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(GridLayouts, GroupsMatchTheLayoutArithmetic) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  ASSERT_EQ(world, 4);
  const auto [tp, pp] = GetParam();
  const ParallelLayout l = make_layout(world, tp, pp);
  ProcessGrid grid(l);
  const int r = grid.world_rank();
  const GridCoord c = grid_coord(l, r);
  EXPECT_EQ(grid.tp_rank(), c.tp);
  EXPECT_EQ(grid.dp_rank(), c.dp);
  EXPECT_EQ(grid.pp_rank(), c.pp);
  EXPECT_EQ(grid.global_rank_of(c.tp, c.dp, c.pp), r);
  EXPECT_NE(grid.describe().find("rank " + std::to_string(r) + ": tp " + std::to_string(c.tp)), std::string::npos)
      << grid.describe();

  for (GroupKind g : kAll) {
    Communicator& comm = grid.group(g);
    const auto want = group_members(l, r, g);
    EXPECT_EQ(comm.members(), want) << l.str() << " " << group_name(g);
    EXPECT_EQ(comm.name(), group_name(g));
    EXPECT_EQ(comm.members()[comm.rank()], r);
    Tensor t = Tensor::empty({1}, DType::I32, kCat);
    t.data<int32_t>()[0] = r;
    comm.all_reduce(t);
    EXPECT_EQ(t.data<int32_t>()[0], std::accumulate(want.begin(), want.end(), 0)) << group_name(g);
  }
  EXPECT_EQ(grid.tp().size(), tp);
  EXPECT_EQ(grid.pp().size(), pp);
  EXPECT_EQ(grid.dp().size(), l.dp);
  EXPECT_EQ(grid.pp().rank(), grid.pp_rank());
  EXPECT_EQ(grid.is_first_stage(), c.pp == 0);
  EXPECT_EQ(grid.is_last_stage(), c.pp == pp - 1);

  // Each stage sends its world rank to the next stage (wrapping around).
  Tensor out = Tensor::empty({1}, DType::I32, kCat), in = Tensor::empty({1}, DType::I32, kCat);
  out.data<int32_t>()[0] = r;
  auto h = grid.pp().send_async(out, grid.next_stage_rank(), 3);
  grid.pp().recv(in, grid.prev_stage_rank(), 3);
  h->wait();
  EXPECT_EQ(in.data<int32_t>()[0], grid.global_rank_of(c.tp, c.dp, (c.pp + pp - 1) % pp));

  // The counters reach the report, per group.
  const auto j = comm_report_json(grid);
  EXPECT_EQ(j["tp"]["all_reduce"].get<uint64_t>(), grid.tp().bytes_sent(CommOp::AllReduce));
  EXPECT_EQ(j["pp"]["send"].get<uint64_t>(), 4u);
  const std::string report = comm_report(grid);
  EXPECT_NE(report.find("world all_reduce"), std::string::npos) << report;
  EXPECT_EQ(report.find("tp all_reduce") != std::string::npos, tp > 1) << report;
  grid.reset_counters();
  EXPECT_EQ(comm_report(grid), "comm bytes sent: none");
}

INSTANTIATE_TEST_SUITE_P(World4, GridLayouts,
                         ::testing::Values(std::pair{2, 1},   // tp2·pp1·dp2
                                           std::pair{1, 2},   // tp1·pp2·dp2
                                           std::pair{2, 2},   // tp2·pp2·dp1
                                           std::pair{1, 4},   // tp1·pp4·dp1: middle stages
                                           std::pair{4, 1},   // tp4
                                           std::pair{1, 1})); // dp4

TEST(ProcessGrid, InvalidLayoutFailsOnEveryRank) {
  try {
    make_layout(4, 3, 1);
    FAIL() << "tp 3 on 4 ranks accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--tensor-model-parallel-size × --pipeline-model-parallel-size"),
              std::string::npos)
        << e.what();
  }
  try {
    ProcessGrid grid(ParallelLayout{2, 1, 1});
    FAIL() << "a layout for 2 ranks accepted on 4";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("needs 2 ranks but the job has 4"), std::string::npos) << e.what();
  }
  MPI_Barrier(MPI_COMM_WORLD);  // every rank got here: nobody waits in a split
}

// Reductions are deterministic: the same bits on every rank and on every
// repetition, for small and large messages (different algorithms).
TEST(ProcessGrid, AllReduceIsBitwiseIdenticalAcrossRanksAndRuns) {
  ProcessGrid grid(make_layout(4, 1, 1));
  Communicator& world = grid.world();
  for (int64_t n : {7, 1000, 100000}) {
    std::mt19937 rng(1234 + world.rank());
    std::normal_distribution<float> dist(0.0f, 1.0f);
    Tensor x = Tensor::empty({n}, DType::F32, kCat);
    for (int64_t i = 0; i < n; ++i) x.data<float>()[i] = dist(rng) * (1.0f + float(i % 13) * 1e3f);
    Tensor y = x.clone(kCat);
    world.all_reduce(x);
    world.all_reduce(y);
    ASSERT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << "repeat differs, n " << n;
    Tensor all = Tensor::empty({world.size() * n}, DType::F32, kCat);
    world.all_gather(x, all);
    for (int q = 0; q < world.size(); ++q)
      ASSERT_EQ(std::memcmp(all.data<float>() + q * n, x.raw(), x.nbytes()), 0) << "rank " << q << ", n " << n;
  }
}

}  // namespace
}  // namespace llm
