#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

#include "core/ops.h"

namespace llm {

AdamW::AdamW(ParameterStore& params, const AdamWConfig& cfg) : params_(params), cfg_(cfg) {
  const Device dev = params.values().device();
  exp_avg_ = Tensor::zeros({params.numel()}, params.dtype(), MemoryCategory::OptimizerState, dev);
  exp_avg_sq_ = Tensor::zeros({params.numel()}, params.dtype(), MemoryCategory::OptimizerState, dev);
}

void AdamW::step(double lr, double grad_scale) {
  ++step_;
  // Adjacent parameters with the same decay form one range: one kernel call each.
  const auto& infos = params_.infos();
  size_t i = 0;
  while (i < infos.size()) {
    size_t j = i;
    int64_t n = 0;
    while (j < infos.size() && infos[j].weight_decay == infos[i].weight_decay) n += infos[j++].numel;
    const int64_t off = infos[i].offset;
    Tensor p = params_.values().flat_view(off, {n});
    Tensor g = params_.grads().flat_view(off, {n});
    Tensor m = exp_avg_.flat_view(off, {n});
    Tensor v = exp_avg_sq_.flat_view(off, {n});
    ops::adamw_step(p, g, m, v,
                    {lr, cfg_.beta1, cfg_.beta2, cfg_.eps, infos[i].weight_decay ? cfg_.weight_decay : 0.0, step_,
                     grad_scale});
    i = j;
  }
}

double global_grad_norm(const ParameterStore& params) { return norm_of_sums(grad_sums_of_squares(params)); }

std::vector<double> grad_sums_of_squares(const ParameterStore& params) {
  std::vector<double> out;
  for (const auto& p : params.infos()) out.push_back(ops::sum_of_squares(params.grads().flat_view(p.offset, {p.numel})));
  return out;
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
