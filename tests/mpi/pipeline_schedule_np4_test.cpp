// Pipeline schedules on 4 stages with a stand-in model whose values say which
// stages touched them: every micro-batch is forwarded and backwarded exactly
// once, in order, values arrive through every stage, 1F1B never holds more
// than (stages − stage) micro-batches in flight, all-forward-all-backward
// does every forward first, and no count of micro-batches (fewer or more
// than the stages) deadlocks.
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
  step.forward = [&](int64_t m, const Tensor& in) {
    tr.forwards.push_back(m);
    tr.max_in_flight = std::max<int64_t>(tr.max_in_flight, tr.forwards.size() - tr.backwards.size());
    // Stage 0 starts from m + 1; every later stage adds one.
    const float x = stage == 0 ? static_cast<float>(m + 1) : in.data<float>()[0] + 1;
    if (stage == stages - 1) EXPECT_EQ(x, static_cast<float>(m + stages)) << "micro-batch " << m;
    return filled(x);
  };
  step.backward = [&](int64_t m, const Tensor& g) {
    tr.backwards.push_back(m);
    // The last stage starts from 10·m; every stage adds one on the way back.
    const float x = stage == stages - 1 ? static_cast<float>(10 * m) : g.data<float>()[0];
    if (stage == 0) EXPECT_EQ(x, static_cast<float>(10 * m + stages - 1)) << "micro-batch " << m;
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

}  // namespace
}  // namespace llm
