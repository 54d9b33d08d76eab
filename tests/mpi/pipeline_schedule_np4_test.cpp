// Pipeline schedules on 4 stages with a stand-in model whose values say which
// stages touched them: every micro-batch is forwarded and backwarded exactly
// once, in order, values arrive through every stage, 1F1B never holds more
// than (stages − stage) micro-batches in flight, all-forward-all-backward
// does every forward first, and no count of micro-batches (fewer or more
// than the stages) deadlocks. The interleaved schedule likewise over 2 and 3
// model chunks per rank (8 and 12 model stages).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "parallel/pipeline_schedule.h"
#include "tests/support/mpi_test_main.h"

namespace llm {
namespace {

Tensor filled(float v) {
  Tensor t = Tensor::empty({3}, DType::F32, MemoryCategory::Activations);
  for (int i = 0; i < 3; ++i) t.data<float>()[i] = v;
  return t;
}

struct Trace {
  std::vector<int64_t> forwards, backwards;
  int64_t max_in_flight = 0;
};

Trace run(PipelineSchedule schedule, int64_t num_micro, Communicator& pp) {
  const int stage = pp.rank(), stages = pp.size();
  Trace tr;
  PipelineStep step;
  step.activation_shape = {3};
  step.forward = [&](int64_t m, int, const Tensor& in) {
    tr.forwards.push_back(m);
    tr.max_in_flight = std::max<int64_t>(tr.max_in_flight, tr.forwards.size() - tr.backwards.size());
    // Stage 0 starts from m + 1; every later stage adds one.
    const float x = stage == 0 ? static_cast<float>(m + 1) : in.data<float>()[0] + 1;
    if (stage == stages - 1) {
      EXPECT_EQ(x, static_cast<float>(m + stages)) << "micro-batch " << m;
    }
    return filled(x);
  };
  step.backward = [&](int64_t m, int, const Tensor& g) {
    tr.backwards.push_back(m);
    // The last stage starts from 10·m; every stage adds one on the way back.
    const float x = stage == stages - 1 ? static_cast<float>(10 * m) : g.data<float>()[0];
    if (stage == 0) {
      EXPECT_EQ(x, static_cast<float>(10 * m + stages - 1)) << "micro-batch " << m;
    }
    return filled(x + 1);
  };
  run_pipeline(schedule, num_micro, pp, step);
  return tr;
}

class Schedules : public ::testing::TestWithParam<int64_t> {};

TEST_P(Schedules, EveryMicroBatchPassesEveryStageOnce) {
  MpiCommunicator pp(MPI_COMM_WORLD, "pp");
  ASSERT_EQ(pp.size(), 4);
  const int64_t m = GetParam();
  std::vector<int64_t> in_order(m);
  for (int64_t i = 0; i < m; ++i) in_order[i] = i;

  const Trace one = run(PipelineSchedule::OneFOneB, m, pp);
  EXPECT_EQ(one.forwards, in_order);
  EXPECT_EQ(one.backwards, in_order);
  EXPECT_LE(one.max_in_flight, std::min<int64_t>(m, pp.size() - pp.rank()));

  const Trace afab = run(PipelineSchedule::AllForwardAllBackward, m, pp);
  EXPECT_EQ(afab.forwards, in_order);
  EXPECT_EQ(afab.backwards, in_order);
  EXPECT_EQ(afab.max_in_flight, m);  // everything forward before the first backward

  const Trace fwd = run(PipelineSchedule::ForwardOnly, m, pp);
  EXPECT_EQ(fwd.forwards, in_order);
  EXPECT_TRUE(fwd.backwards.empty());
}

INSTANTIATE_TEST_SUITE_P(MicroBatches, Schedules, ::testing::Values(1, 2, 3, 4, 7));

struct ChunkTrace {
  std::vector<std::vector<int64_t>> forwards, backwards;  // per chunk, micro-batches in order of execution
  int64_t in_flight = 0, max_in_flight = 0;
};

// Chunk c of rank r is model stage c·p + r: values must pass all p·v stages in order.
ChunkTrace run_interleaved(PipelineSchedule schedule, int64_t num_micro, int chunks, Communicator& pp) {
  const int r = pp.rank(), p = pp.size(), stages = p * chunks;
  ChunkTrace tr;
  tr.forwards.resize(chunks);
  tr.backwards.resize(chunks);
  PipelineStep step;
  step.activation_shape = {3};
  step.chunks = chunks;
  step.forward = [&](int64_t m, int c, const Tensor& in) {
    tr.forwards[c].push_back(m);
    tr.max_in_flight = std::max(tr.max_in_flight, ++tr.in_flight);
    const int stage = c * p + r;
    const float x = stage == 0 ? static_cast<float>(m + 1) : in.data<float>()[0] + 1;
    EXPECT_EQ(x, static_cast<float>(m + 1 + stage)) << "micro-batch " << m << " model stage " << stage;
    return filled(x);
  };
  step.backward = [&](int64_t m, int c, const Tensor& g) {
    tr.backwards[c].push_back(m);
    --tr.in_flight;
    const int stage = c * p + r;
    const float x = stage == stages - 1 ? static_cast<float>(10 * m) : g.data<float>()[0];
    EXPECT_EQ(x, static_cast<float>(10 * m + stages - 1 - stage)) << "micro-batch " << m << " model stage " << stage;
    return filled(x + 1);
  };
  run_pipeline(schedule, num_micro, pp, step);
  return tr;
}

class Interleaved : public ::testing::TestWithParam<std::pair<int, int64_t>> {};

TEST_P(Interleaved, EveryMicroBatchPassesEveryModelStageOnceInOrder) {
  MpiCommunicator pp(MPI_COMM_WORLD, "pp");
  const auto [chunks, m] = GetParam();
  std::vector<int64_t> in_order(m);
  for (int64_t i = 0; i < m; ++i) in_order[i] = i;
  const ChunkTrace t = run_interleaved(PipelineSchedule::OneFOneB, m, chunks, pp);
  for (int c = 0; c < chunks; ++c) {
    // Each chunk sees the micro-batches in order both ways, so gradients
    // accumulate in the order one process adds them.
    EXPECT_EQ(t.forwards[c], in_order) << "chunk " << c;
    EXPECT_EQ(t.backwards[c], in_order) << "chunk " << c;
  }
  // Megatron's warm-up bound (or everything, when m equals the pipeline size).
  const int64_t p = pp.size(), r = pp.rank();
  const int64_t bound = m == p ? m * chunks : std::min<int64_t>(m * chunks, (p - r - 1) * 2 + (chunks - 1) * p + 1);
  EXPECT_LE(t.max_in_flight, bound);
  const ChunkTrace f = run_interleaved(PipelineSchedule::ForwardOnly, m, chunks, pp);
  for (int c = 0; c < chunks; ++c) EXPECT_EQ(f.forwards[c], in_order);
  // Micro-batches that do not fill whole groups of p are refused on every rank.
  if (m > 1) {
    EXPECT_THROW(run_interleaved(PipelineSchedule::OneFOneB, m - 1, chunks, pp), std::invalid_argument);
  }
}

INSTANTIATE_TEST_SUITE_P(ChunksAndMicroBatches, Interleaved,
                         ::testing::Values(std::pair<int, int64_t>{2, 4}, std::pair<int, int64_t>{2, 8},
                                           std::pair<int, int64_t>{3, 4}, std::pair<int, int64_t>{3, 12}));

}  // namespace
}  // namespace llm
