// Reductions and scaling over whole gradient buffers, for clipping and overflow checks.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/cpu/vec_math.h"

namespace llm::cpu {

namespace grad_norm_detail {
// The type an element is read as: itself for float and double; float for the 16-bit
// storage types (bf16, f16), which convert to it exactly.
template <class T>
using Wide = std::conditional_t<std::is_floating_point_v<T>, T, float>;
}  // namespace grad_norm_detail

// sum_i x[i]², accumulated in double. The buffer is cut into fixed-size chunks, each
// summed over fixed lanes, and the chunk sums are added in order: bitwise the same
// result for any thread count.
template <class T>
double sum_of_squares(const T* x, int64_t n) {
  if (n <= 0) return 0.0;
  constexpr int64_t kChunk = 1 << 15;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(nchunks));
#pragma omp parallel for schedule(static) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; ++c) {
    const T* xc = x + c * kChunk;
    const int64_t len = std::min(kChunk, n - c * kChunk);
    partial[c] = vec::lane_sum<double, vec::kLanes<double>>(len, [&](int64_t i) {
      const double d = static_cast<double>(static_cast<grad_norm_detail::Wide<T>>(xc[i]));
      return d * d;  // exact for float (and 16-bit) inputs
    });
  }
  double total = 0.0;
  for (int64_t c = 0; c < nchunks; ++c) total += partial[c];
  return total;
}

// x ← x · s, with s rounded to T first.
template <class T>
void scale_inplace(T* x, int64_t n, double s) {
  const T ts = static_cast<T>(s);
#pragma omp parallel for simd schedule(static) if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) x[i] *= ts;
}

// True if no element is inf or NaN. Scans everything (no early exit): the branch-free
// loop vectorises and the answer does not depend on the order. 16-bit elements are
// read as float (a 16-bit value is finite exactly when its float is).
template <class T>
bool all_finite(const T* x, int64_t n) {
  using W = grad_norm_detail::Wide<T>;
  constexpr W kMax = std::numeric_limits<W>::max();
  int bad = 0;
#pragma omp parallel for simd schedule(static) reduction(| : bad) if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) bad |= !(std::abs(static_cast<W>(x[i])) <= kMax);  // false for NaN too
  return bad == 0;
}

}  // namespace llm::cpu
