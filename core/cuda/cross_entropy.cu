// PLACEHOLDER until the kernel lands (replaced by its own file).
#include <stdexcept>

#include "core/cuda/cuda_ops.h"

namespace llm::ops::cuda {

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor& lse) {
  throw std::logic_error("ops::cuda::cross_entropy_forward: not implemented yet");
}

void cross_entropy_backward_inplace(Tensor& logits, const Tensor& lse, const Tensor& targets, const Tensor& dloss, int64_t col_begin, int64_t total_V) {
  throw std::logic_error("ops::cuda::cross_entropy_backward_inplace: not implemented yet");
}

void cross_entropy_row_max(const Tensor& logits, Tensor& row_max) {
  throw std::logic_error("ops::cuda::cross_entropy_row_max: not implemented yet");
}

void cross_entropy_partial_sums(const Tensor& logits, const Tensor& targets, int64_t col_begin, int64_t total_V, const Tensor& row_max, Tensor& stats) {
  throw std::logic_error("ops::cuda::cross_entropy_partial_sums: not implemented yet");
}

}  // namespace llm::ops::cuda
