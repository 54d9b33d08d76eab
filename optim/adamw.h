// AdamW over flat parameter ranges (decoupled weight decay, none on norm
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

// A run of elements updated together: views of the parameters (fp32 master
// weights in mixed precision) and of their gradients (any float dtype), and
// where the run's moments start in the optimizer's state buffers.
struct AdamWSegment {
  Tensor param, grad;
  int64_t state_offset = 0;
  bool decay = true;
  Tensor model_copy;  // optional: a 16-bit copy of param, rewritten in the update's pass
};

class AdamW {
 public:
  // Every parameter of the store, moments laid out like the flat buffers
  // (padded_numel() elements). When the store holds no flat values or
  // gradients (ZeRO-3) this is state only: the moments, for checkpoints.
  AdamW(ParameterStore& params, const AdamWConfig& cfg);
  // The same, with the moments on `state_device` (e.g. host memory for a GPU model's
  // checkpoint state: written or read by the CPU, never stepped).
  AdamW(ParameterStore& params, const AdamWConfig& cfg, Device state_device);
  // Given segments (a ZeRO shard); moments for state_numel elements.
  AdamW(const AdamWConfig& cfg, std::vector<AdamWSegment> segments, int64_t state_numel, DType state_dtype,
        Device device);
  // One update of every segment with learning rate lr; gradients are first multiplied by grad_scale.
  void step(double lr, double grad_scale);
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  Tensor& exp_avg() { return exp_avg_; }
  Tensor& exp_avg_sq() { return exp_avg_sq_; }
  const Tensor& exp_avg() const { return exp_avg_; }
  const Tensor& exp_avg_sq() const { return exp_avg_sq_; }
  const AdamWConfig& config() const { return cfg_; }
  const std::vector<AdamWSegment>& segments() const { return segments_; }
  // The store whose layout the moments follow (the first constructor only).
  const ParameterStore& params() const;

 private:
  ParameterStore* params_ = nullptr;
  AdamWConfig cfg_;
  std::vector<AdamWSegment> segments_;
  Tensor exp_avg_, exp_avg_sq_;
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
