// PLACEHOLDER until the kernel lands (replaced by its own file).
#include <stdexcept>

#include "core/cuda/cuda_ops.h"

namespace llm::ops::cuda {

void attention_forward(const Tensor& qkv, const QkvLayout& l, Tensor& out, Tensor& lse) {
  throw std::logic_error("ops::cuda::attention_forward: not implemented yet");
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const QkvLayout& l, const Tensor& out, const Tensor& lse, Tensor& dqkv) {
  throw std::logic_error("ops::cuda::attention_backward: not implemented yet");
}

void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t tk, int64_t heads, int64_t groups, int64_t head_dim, Tensor& out) {
  throw std::logic_error("ops::cuda::attention_decode: not implemented yet");
}

}  // namespace llm::ops::cuda
