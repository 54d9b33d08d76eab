#include "optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/ops.h"

namespace llm {

AdamW::AdamW(ParameterStore& params, const AdamWConfig& cfg) : AdamW(params, cfg, params.device()) {}

AdamW::AdamW(ParameterStore& params, const AdamWConfig& cfg, Device state_device) : params_(&params), cfg_(cfg) {
  // One segment per run of adjacent parameters with the same decay rule.
  const auto& infos = params.infos();
  const bool whole = params.values().defined() && params.grads().defined();
  for (size_t i = 0; whole && i < infos.size();) {
    size_t j = i + 1;
    while (j < infos.size() && infos[j].weight_decay == infos[i].weight_decay &&
           infos[j].offset == infos[j - 1].offset + infos[j - 1].numel)
      ++j;
    const int64_t lo = infos[i].offset, n = infos[j - 1].offset + infos[j - 1].numel - lo;
    segments_.push_back({params.values().flat_view(lo, {n}), params.grads().flat_view(lo, {n}), lo,
                         infos[i].weight_decay});
    i = j;
  }
  const DType state = params.dtype() == DType::F64 ? DType::F64 : DType::F32;
  exp_avg_ = Tensor::zeros({params.padded_numel()}, state, MemoryCategory::OptimizerState, state_device);
  exp_avg_sq_ = Tensor::zeros({params.padded_numel()}, state, MemoryCategory::OptimizerState, state_device);
}

AdamW::AdamW(const AdamWConfig& cfg, std::vector<AdamWSegment> segments, int64_t state_numel, DType state_dtype,
             Device device)
    : cfg_(cfg), segments_(std::move(segments)) {
  for (const auto& s : segments_)
    if (s.state_offset < 0 || s.state_offset + s.param.numel() > state_numel || s.grad.numel() != s.param.numel())
      throw std::logic_error("AdamW: a segment lies outside the state or its gradient has another size");
  exp_avg_ = Tensor::zeros({state_numel}, state_dtype, MemoryCategory::OptimizerState, device);
  exp_avg_sq_ = Tensor::zeros({state_numel}, state_dtype, MemoryCategory::OptimizerState, device);
}

const ParameterStore& AdamW::params() const {
  if (!params_) throw std::logic_error("AdamW: this optimizer updates a shard, not a whole parameter store");
  return *params_;
}

void AdamW::step(double lr, double grad_scale) {
  ++step_;
  // Every segment in one call: one launch of the multi-tensor kernel on a GPU.
  std::vector<ops::AdamWSegmentTensors> segs;
  segs.reserve(segments_.size());
  for (auto& s : segments_)
    segs.push_back({s.param, s.grad, exp_avg_.flat_view(s.state_offset, {s.param.numel()}),
                    exp_avg_sq_.flat_view(s.state_offset, {s.param.numel()}), s.model_copy,
                    s.decay ? cfg_.weight_decay : 0.0});
  ops::adamw_multi_step(segs, {lr, cfg_.beta1, cfg_.beta2, cfg_.eps, 0.0, step_, grad_scale});
}

double global_grad_norm(const ParameterStore& params) { return norm_of_sums(grad_sums_of_squares(params)); }

std::vector<double> grad_sums_of_squares(const ParameterStore& params) {
  std::vector<Tensor> grads;  // one batched call: one launch and one copy back on a GPU
  for (const auto& p : params.infos()) grads.push_back(params.grads().flat_view(p.offset, {p.numel}));
  return ops::sums_of_squares(grads);
}

double norm_of_sums(const std::vector<double>& sums_of_squares) {
  double total = 0.0;
  for (double s : sums_of_squares) total += s;
  return std::sqrt(total);
}

double clip_coefficient(double grad_norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0;
  return std::min(1.0, max_norm / (grad_norm + 1e-6));
}

}  // namespace llm
