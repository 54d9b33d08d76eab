// PLACEHOLDER until the kernel lands (replaced by its own file).
#include <stdexcept>

#include "core/cuda/cuda_ops.h"

namespace llm::ops::cuda {

void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  throw std::logic_error("ops::cuda::rmsnorm_forward: not implemented yet");
}

void add_rmsnorm_forward(const Tensor& x, const Tensor& residual, const Tensor& w, double eps, Tensor& h, Tensor& y, Tensor& rstd) {
  throw std::logic_error("ops::cuda::add_rmsnorm_forward: not implemented yet");
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx, Tensor& dw) {
  throw std::logic_error("ops::cuda::rmsnorm_backward: not implemented yet");
}

}  // namespace llm::ops::cuda
