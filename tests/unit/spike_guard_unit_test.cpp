// The spike guard's decisions on constructed sequences: a lone jump is a
// spike and stays out of the statistics; a lasting jump to a new level is
// accepted after max_consecutive iterations (instead of rejecting every
// later step); non-finite values are always spikes; the state round-trips.
#include <gtest/gtest.h>

#include <cmath>

#include "optim/spike_guard.h"

using namespace llm;

namespace {

// Loss 3 ± 1%, gradient norm 0.4 ± 10% (deterministic wiggle).
void warm_up(SpikeGuard& g, int n) {
  for (int i = 0; i < n; ++i) {
    const auto v = g.observe(3.0 + 0.03 * std::sin(i), 0.4 + 0.04 * std::cos(i));
    ASSERT_FALSE(v.spike) << i;
  }
}

}  // namespace

TEST(SpikeGuard, ALoneJumpIsASpikeAndStaysOutOfTheStatistics) {
  SpikeGuard g;
  warm_up(g, 40);
  const auto v = g.observe(3.0, 4.0);  // 10× the gradient norm
  EXPECT_TRUE(v.spike);
  EXPECT_FALSE(v.level_shift);
  EXPECT_GT(v.grad_norm_z, 6.0);
  EXPECT_EQ(g.clean_iterations(), 40);
  EXPECT_FALSE(g.observe(3.0, 0.4).spike);  // back to normal: clean
}

TEST(SpikeGuard, ALastingNewLevelIsAcceptedAfterMaxConsecutiveSpikes) {
  SpikeGuardConfig cfg;
  cfg.max_consecutive = 10;
  SpikeGuard g(cfg);
  warm_up(g, 40);
  // The gradient norm settles at 1.8 (4.5×) for good.
  for (int i = 1; i < 10; ++i) EXPECT_TRUE(g.observe(3.0, 1.8).spike) << i;
  const auto shift = g.observe(3.0, 1.8);
  EXPECT_FALSE(shift.spike);
  EXPECT_TRUE(shift.level_shift);
  EXPECT_NE(shift.reason.find("10 iterations in a row"), std::string::npos) << shift.reason;
  EXPECT_EQ(g.clean_iterations(), 1);  // warming up again from the new level
  for (int i = 0; i < 60; ++i) {
    const auto v = g.observe(3.0 + 0.03 * std::sin(i), 1.8 + 0.18 * std::cos(i));
    EXPECT_FALSE(v.spike) << i << ": " << v.reason;
  }
}

TEST(SpikeGuard, WithoutTheLimitEveryStepAtTheNewLevelIsASpike) {
  SpikeGuardConfig cfg;
  cfg.max_consecutive = 0;
  SpikeGuard g(cfg);
  warm_up(g, 40);
  for (int i = 0; i < 50; ++i) EXPECT_TRUE(g.observe(3.0, 1.8).spike) << i;
}

TEST(SpikeGuard, NonFiniteValuesAreAlwaysSpikesAndNeverALevel) {
  SpikeGuardConfig cfg;
  cfg.max_consecutive = 3;
  SpikeGuard g(cfg);
  for (int i = 0; i < 10; ++i) {
    const auto v = g.observe(NAN, 0.4);
    EXPECT_TRUE(v.spike && v.non_finite);
    EXPECT_FALSE(v.level_shift);
  }
  EXPECT_EQ(g.clean_iterations(), 0);
}

TEST(SpikeGuard, StateRoundTripsIncludingTheRunOfSpikes) {
  SpikeGuard a;
  warm_up(a, 30);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(a.observe(3.0, 2.0).spike);
  SpikeGuard b;
  b.set_state(a.state());
  EXPECT_EQ(b.state(), a.state());
  // Both reach the level shift at the same step.
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a.observe(3.0, 2.0).level_shift, b.observe(3.0, 2.0).level_shift) << i;
}
