// PLACEHOLDER until the kernel lands (replaced by its own file).
#include <stdexcept>

#include "core/cuda/cuda_ops.h"

namespace llm::ops::cuda {

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWParams& p) {
  throw std::logic_error("ops::cuda::adamw_step: not implemented yet");
}

void adamw_multi_step(const std::vector<AdamWSegmentTensors>& segments, const AdamWParams& p) {
  throw std::logic_error("ops::cuda::adamw_multi_step: not implemented yet");
}

}  // namespace llm::ops::cuda
