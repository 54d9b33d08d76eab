// PLACEHOLDER until the kernel lands (replaced by its own file).
#include <stdexcept>

#include "core/cuda/cuda_ops.h"

namespace llm::ops::cuda {

void embedding_forward(const Tensor& tokens, const Tensor& table, Tensor& out, int64_t row_begin, int64_t total_vocab) {
  throw std::logic_error("ops::cuda::embedding_forward: not implemented yet");
}

void embedding_backward(const Tensor& tokens, const Tensor& dout, Tensor& dtable, int64_t row_begin, int64_t total_vocab) {
  throw std::logic_error("ops::cuda::embedding_backward: not implemented yet");
}

}  // namespace llm::ops::cuda
