// PLACEHOLDER until the kernel lands (replaced by its own file).
#include <stdexcept>

#include "core/cuda/cuda_ops.h"

namespace llm::ops::cuda {

void swiglu_forward(const Tensor& gate_up, Tensor& out) {
  throw std::logic_error("ops::cuda::swiglu_forward: not implemented yet");
}

void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) {
  throw std::logic_error("ops::cuda::swiglu_backward: not implemented yet");
}

}  // namespace llm::ops::cuda
