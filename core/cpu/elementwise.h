// Element-wise arithmetic on flat arrays.
#pragma once
#include <cstdint>

namespace llm::cpu {

// y[i] += x[i]
template <class T>
void add_inplace(T* y, const T* x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace llm::cpu
