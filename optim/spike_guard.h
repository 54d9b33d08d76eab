// Loss-spike detection: every iteration the global loss and gradient norm are
// compared with exponentially weighted running statistics of the recent
// clean iterations; a value more than `zscore` standard deviations above its
// mean (after `warmup` clean iterations), or a non-finite one, is a spike.
// Spikes do not enter the statistics, unless max_consecutive of them in a row
// show that the level itself moved: then the statistics restart there. What to do about one (skip the update,
// roll back, skip data, lower the learning rate) is the trainer's business;
// this class only decides and counts.
//
// Why these defaults: an EMA with β = 0.99 remembers about 100 iterations,
// long enough to be a stable baseline and short enough to follow the loss
// curve's normal descent; with a floor on the deviation (1% of the mean for
// the loss, 25% for the gradient norm, which is far noisier, so that a flat
// stretch does not turn noise into spikes) a z-score of 6 fires on
// the jumps PaLM and OPT describe (several times the usual step-to-step
// change) but essentially never on Gaussian noise (p ≈ 1e-9 per iteration).
// 20 clean iterations of warm-up keep the first, fast-falling steps out.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace llm {

struct SpikeGuardConfig {
  double zscore = 6.0;     // threshold, in standard deviations above the running mean
  double beta = 0.99;      // EMA decay of the running mean and variance
  int64_t warmup = 20;     // clean iterations before spikes are judged (non-finite ones always are)
  // The deviation used is at least this × |mean|: the loss moves little from
  // step to step, the gradient norm routinely by a quarter of itself.
  double loss_min_relative_std = 0.01, grad_norm_min_relative_std = 0.25;
  // This many spikes in a row are not a spike but a new level (the gradient norm
  // settling higher after warm-up, say): the statistics restart from the current
  // values instead of rejecting every step from then on. 0: never.
  int64_t max_consecutive = 10;
};

class SpikeGuard {
 public:
  explicit SpikeGuard(const SpikeGuardConfig& cfg = {}) : cfg_(cfg) {}

  struct Verdict {
    bool spike = false;
    bool non_finite = false;
    std::string reason;  // "loss 9.1 is 7.2σ above its running mean 5.3 (σ 0.53)"
    double loss_z = 0.0, grad_norm_z = 0.0;
    bool level_shift = false;  // max_consecutive finite spikes: accepted, statistics restarted
  };
  // Judges one iteration; a clean one updates the statistics.
  Verdict observe(double loss, double grad_norm);
  int64_t clean_iterations() const { return count_; }

  // The state, saved in checkpoints and snapshots so a resumed run judges alike.
  nlohmann::json state() const;
  void set_state(const nlohmann::json& j);

 private:
  struct Ema {
    double mean = 0.0, var = 0.0;
    double z(double x, double min_relative_std) const;
    void add(double x, double beta, bool first);
  };
  SpikeGuardConfig cfg_;
  Ema loss_, grad_norm_;
  int64_t count_ = 0;
  int64_t consecutive_ = 0;  // finite spikes in a row
};

}  // namespace llm
