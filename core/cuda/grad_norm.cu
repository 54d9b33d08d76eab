// PLACEHOLDER until the kernel lands (replaced by its own file).
#include <stdexcept>

#include "core/cuda/cuda_ops.h"

namespace llm::ops::cuda {

double sum_of_squares(const Tensor& x) {
  throw std::logic_error("ops::cuda::sum_of_squares: not implemented yet");
}

std::vector<double> sums_of_squares(const std::vector<Tensor>& xs) {
  throw std::logic_error("ops::cuda::sums_of_squares: not implemented yet");
}

bool all_finite(const Tensor& x) {
  throw std::logic_error("ops::cuda::all_finite: not implemented yet");
}

}  // namespace llm::ops::cuda
