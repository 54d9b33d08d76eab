// PLACEHOLDER until the kernel lands (replaced by its own file).
#include <stdexcept>

#include "core/cuda/cuda_ops.h"

namespace llm::ops::cuda {

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  throw std::logic_error("ops::cuda::linear_forward: not implemented yet");
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor& dw) {
  throw std::logic_error("ops::cuda::linear_backward: not implemented yet");
}

}  // namespace llm::ops::cuda
