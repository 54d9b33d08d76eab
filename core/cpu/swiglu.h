// SwiGLU gating of the LLaMA MLP:  h = silu(gate) * up,   silu(g) = g * sigmoid(g).
#pragma once
#include <cstdint>

#include "core/cpu/vec_math.h"

namespace llm::cpu {

// Row r of gate / up starts at gate + r*ld_in / up + r*ld_in (F elements); out is
// [rows, F] contiguous. A fused gate_up GEMM output is passed as gate=buf, up=buf+F,
// ld_in=2F.
template <class T>
void swiglu_forward(const T* gate, const T* up, int64_t ld_in, T* out, int64_t rows, int64_t F) {
#pragma omp parallel for schedule(static) if (rows * F >= (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    const T* g = gate + r * ld_in;
    const T* u = up + r * ld_in;
    T* o = out + r * F;
    // g / (1 + e^-g) is PyTorch's silu; for g -> -inf e^-g = inf gives -0, not NaN.
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) o[j] = g[j] / (T(1) + vec::exp(-g[j])) * u[j];
  }
}

// Adds into dgate and dup (row stride ld_in, like gate and up):
//   dup   += dout · silu(g)
//   dgate += dout · u · σ(g)·(1 + g·(1 − σ(g)))      (d silu/dg, as PyTorch computes it)
template <class T>
void swiglu_backward(const T* dout, const T* gate, const T* up, int64_t ld_in, T* dgate, T* dup,
                     int64_t rows, int64_t F) {
#pragma omp parallel for schedule(static) if (rows * F >= (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    const T* d = dout + r * F;
    const T* g = gate + r * ld_in;
    const T* u = up + r * ld_in;
    T* dg = dgate + r * ld_in;
    T* du = dup + r * ld_in;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) {
      const T s = T(1) / (T(1) + vec::exp(-g[j]));
      du[j] += d[j] * (g[j] * s);
      dg[j] += d[j] * u[j] * (s * (T(1) + g[j] * (T(1) - s)));
    }
  }
}

}  // namespace llm::cpu
