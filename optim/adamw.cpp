#include "optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/ops.h"

namespace llm {

AdamW::AdamW(ParameterStore& params, const AdamWConfig& cfg, int64_t begin, int64_t end)
    : params_(params), cfg_(cfg), begin_(begin), end_(end < 0 ? params.numel() : end) {
  if (begin_ < 0 || begin_ > end_) throw std::invalid_argument("AdamW: invalid range");
  const Device dev = params.values().device();
  exp_avg_ = Tensor::zeros({end_ - begin_}, params.dtype(), MemoryCategory::OptimizerState, dev);
  exp_avg_sq_ = Tensor::zeros({end_ - begin_}, params.dtype(), MemoryCategory::OptimizerState, dev);
}

void AdamW::step(double lr, double grad_scale, const Tensor* grads) {
  ++step_;
  // The range's part of each parameter; adjacent parts with the same decay
  // form one run: one kernel call each.
  const auto& infos = params_.infos();
  const int64_t hi_all = std::min(end_, params_.numel());  // the padding holds no parameter
  size_t i = 0;
  while (i < infos.size()) {
    const bool decay = infos[i].weight_decay;
    size_t j = i;
    while (j < infos.size() && infos[j].weight_decay == decay) ++j;
    const int64_t lo = std::max(begin_, infos[i].offset);
    const int64_t hi = std::min(hi_all, infos[j - 1].offset + infos[j - 1].numel);
    if (lo < hi) {
      Tensor p = params_.values().flat_view(lo, {hi - lo});
      Tensor g = grads ? grads->flat_view(lo - begin_, {hi - lo}) : params_.grads().flat_view(lo, {hi - lo});
      Tensor m = exp_avg_.flat_view(lo - begin_, {hi - lo});
      Tensor v = exp_avg_sq_.flat_view(lo - begin_, {hi - lo});
      ops::adamw_step(p, g, m, v,
                      {lr, cfg_.beta1, cfg_.beta2, cfg_.eps, decay ? cfg_.weight_decay : 0.0, step_, grad_scale});
    }
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
