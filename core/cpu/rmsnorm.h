// RMSNorm, as in LLaMA / Hugging Face LlamaRMSNorm, computed in T (fp32 for float):
//   y = x * rstd * w,   rstd = 1 / sqrt(mean(x²) + eps)
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/cpu/vec_math.h"

namespace llm::cpu {

// x, y: [rows, dim]; w: [dim]; rstd: [rows], saved for the backward pass.
template <class T>
void rmsnorm_forward(const T* x, const T* w, int64_t rows, int64_t dim, double eps, T* y, T* rstd) {
  const T teps = static_cast<T>(eps);
#pragma omp parallel for schedule(static) if (rows * dim >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    const T ss = vec::lane_sum<T, vec::kLanes<T>>(dim, [&](int64_t j) { return xr[j] * xr[j]; });
    const T rs = T(1) / std::sqrt(ss / static_cast<T>(dim) + teps);
    rstd[r] = rs;
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) yr[j] = (xr[j] * rs) * w[j];  // HF's order: (x·rstd)·w
  }
}

// Adds into dx [rows, dim] and dw [dim]. With S = sum_k dy_k w_k x_k:
//   dx_j = rstd·w_j·dy_j − (rstd³/dim)·x_j·S,    dw_j = sum_rows dy_j·x_j·rstd
// dw is a sum over rows: rows are cut into chunks whose size depends only on `rows`, each
// chunk sums its rows in order into its own buffer, and the buffers are added in chunk
// order, so dw is bitwise the same for any thread count.
template <class T>
void rmsnorm_backward(const T* dy, const T* x, const T* w, const T* rstd, int64_t rows, int64_t dim,
                      T* dx, T* dw) {
  if (rows <= 0 || dim <= 0) return;
  constexpr int64_t kMaxChunks = 64, kMinChunkRows = 16;
  const int64_t nchunks = std::clamp<int64_t>(rows / kMinChunkRows, 1, kMaxChunks);
  const int64_t chunk_rows = (rows + nchunks - 1) / nchunks;
  std::vector<T> partial(static_cast<size_t>(nchunks * dim), T(0));
  const bool par = rows * dim >= (1 << 15);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t c = 0; c < nchunks; ++c) {
    T* pw = partial.data() + c * dim;
    const int64_t r1 = std::min(rows, (c + 1) * chunk_rows);
    for (int64_t r = c * chunk_rows; r < r1; ++r) {
      const T* xr = x + r * dim;
      const T* dyr = dy + r * dim;
      T* dxr = dx + r * dim;
      const T rs = rstd[r];
      const T s =
          vec::lane_sum<T, vec::kLanes<T>>(dim, [&](int64_t j) { return dyr[j] * w[j] * xr[j]; });
      const T coef = s * rs * rs * rs / static_cast<T>(dim);
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) {
        dxr[j] += rs * w[j] * dyr[j] - coef * xr[j];
        pw[j] += dyr[j] * xr[j] * rs;
      }
    }
  }
  // Fixed-order sum of the chunk buffers; threads split the columns.
  constexpr int64_t kBlock = 1024;
#pragma omp parallel for schedule(static) if (par && dim > kBlock)
  for (int64_t j0 = 0; j0 < dim; j0 += kBlock) {
    const int64_t j1 = std::min(dim, j0 + kBlock);
    T* acc = partial.data();
    for (int64_t c = 1; c < nchunks; ++c) {
      const T* pc = partial.data() + c * dim;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) acc[j] += pc[j];
    }
#pragma omp simd
    for (int64_t j = j0; j < j1; ++j) dw[j] += acc[j];
  }
}

}  // namespace llm::cpu
