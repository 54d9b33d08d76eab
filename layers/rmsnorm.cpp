#include "layers/rmsnorm.h"

#include "core/ops.h"

namespace llm {

RMSNorm::RMSNorm(ParameterStore& store, const std::string& name, int64_t hidden, double eps)
    : store_(store), weight_(store.add(name, {hidden}, InitRule::Ones, 0.0, /*weight_decay=*/false)), eps_(eps) {}

void RMSNorm::forward(const Tensor& x, Tensor& y, Saved& saved) const {
  const int64_t rows = x.numel() / weight_.shape[0];
  saved.x = x;
  saved.rstd = Tensor::empty({rows}, statistics_dtype(x.dtype()), MemoryCategory::Activations, x.device());
  ops::rmsnorm_forward(x, store_.value(weight_), eps_, y, saved.rstd);
}

Tensor RMSNorm::forward_add(const Tensor& x, const Tensor& residual, Tensor& y, Saved& saved) const {
  const int64_t rows = x.numel() / weight_.shape[0];
  Tensor h = Tensor::empty(x.shape(), x.dtype(), MemoryCategory::Activations, x.device());
  saved.rstd = Tensor::empty({rows}, statistics_dtype(x.dtype()), MemoryCategory::Activations, x.device());
  ops::add_rmsnorm_forward(x, residual, store_.value(weight_), eps_, h, y, saved.rstd);
  saved.x = h;
  return h;
}

void RMSNorm::backward(const Tensor& dy, const Saved& saved, Tensor& dx) const {
  Tensor dw = store_.grad(weight_);
  ops::rmsnorm_backward(dy, saved.x, store_.value(weight_), saved.rstd, dx, dw);
}

}  // namespace llm
