// PLACEHOLDER until the kernel lands (replaced by its own file).
#include <stdexcept>

#include "core/cuda/cuda_ops.h"

namespace llm::ops::cuda {

void rope_forward(Tensor& qkv, const QkvLayout& l, int64_t pos_offset, double theta) {
  throw std::logic_error("ops::cuda::rope_forward: not implemented yet");
}

void rope_backward(Tensor& dqkv, const QkvLayout& l, int64_t pos_offset, double theta) {
  throw std::logic_error("ops::cuda::rope_backward: not implemented yet");
}

}  // namespace llm::ops::cuda
