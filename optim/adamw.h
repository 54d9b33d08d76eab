// AdamW over the flat parameter buffer (decoupled weight decay, none on norm
// weights), with the gradient-clipping coefficient folded into the update.
#pragma once
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "layers/parameters.h"

namespace llm {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

class AdamW {
 public:
  // Updates flat elements [begin, end) of the parameters (default: all of
  // them) and keeps moments for that range only: ZeRO's optimizer-state
  // shard, one contiguous range per data-parallel rank.
  AdamW(ParameterStore& params, const AdamWConfig& cfg, int64_t begin = 0, int64_t end = -1);
  // One update with learning rate lr; gradients are first multiplied by
  // grad_scale. grads: the range's gradients (default: the store's).
  void step(double lr, double grad_scale, const Tensor* grads = nullptr);
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }
  bool covers_all() const { return begin_ == 0 && end_ == params_.numel(); }
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  Tensor& exp_avg() { return exp_avg_; }
  Tensor& exp_avg_sq() { return exp_avg_sq_; }
  const Tensor& exp_avg() const { return exp_avg_; }
  const Tensor& exp_avg_sq() const { return exp_avg_sq_; }
  const AdamWConfig& config() const { return cfg_; }
  const ParameterStore& params() const { return params_; }

 private:
  ParameterStore& params_;
  AdamWConfig cfg_;
  int64_t begin_ = 0, end_ = 0;
  Tensor exp_avg_, exp_avg_sq_;  // [end − begin]
  int64_t step_ = 0;
};

// Global L2 norm of all gradients (in double, deterministic).
double global_grad_norm(const ParameterStore& params);
// Each parameter's sum of squared gradients, in registration order. Summing
// these in order gives the same norm under any pipeline split (a stage holds
// a contiguous run of the parameters), bit for bit.
std::vector<double> grad_sums_of_squares(const ParameterStore& params);
double norm_of_sums(const std::vector<double>& sums_of_squares);
// Multiplier that clips the global norm to max_norm (PyTorch's clip_grad_norm_: max/(norm+1e-6), at most 1).
double clip_coefficient(double grad_norm, double max_norm);

}  // namespace llm
