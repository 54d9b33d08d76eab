// One AdamW step, in the order of operations of PyTorch's torch.optim.AdamW
// (single-tensor path), so runs can be compared with it:
//   g = grad · grad_scale                       (grad_scale carries gradient clipping)
//   p ← p · (1 − lr·wd)                         (decoupled weight decay, applied first)
//   m ← lerp(m, g, 1 − β1)                      (= β1·m + (1−β1)·g; PyTorch's lerp form)
//   v ← β2·v + (1 − β2)·g²
//   p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
// Scalars are formed in double, as in Python, then rounded to T, as PyTorch does when it
// applies them to a float tensor. The element arithmetic is in T.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/cpu/vec_math.h"

namespace llm::cpu {

namespace adamw_detail {

template <class T>
struct Coefs {
  T decay, scale, lerp_coef, b2, one_minus_b2, bc2_sqrt, eps, neg_step_size;
  bool small_w;
};

// Elements [i0, i1), in blocks that stay in L1 across three passes. The sqrt has a pass
// of its own (vec::sqrt, explicit simd): with errno semantics gcc guards a scalar sqrt
// with a branch to libm and will not vectorise a loop that contains one (2-4x slower).
// c is taken by value: through a reference that might alias the arrays gcc would
// reload it every iteration.
template <class T>
void update(T* param, const T* grad, T* m, T* v, int64_t i0, int64_t i1, const Coefs<T> c) {
  constexpr int64_t kBlock = 512;
  alignas(64) T root[kBlock];
  for (int64_t b0 = i0; b0 < i1; b0 += kBlock) {
    const int64_t len = std::min(kBlock, i1 - b0);
    T* p = param + b0;
    const T* gr = grad + b0;
    T* mb = m + b0;
    T* vb = v + b0;
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) {
      const T g = gr[k] * c.scale;
      const T mi = mb[k];
      p[k] = p[k] * c.decay;
      // PyTorch's lerp: start + w·(end − start) for |w| < 0.5, else
      // end + (w − 1)·(end − start) (its vector path fuses this into one fma, as gcc does).
      mb[k] = (c.small_w ? mi : g) + c.lerp_coef * (g - mi);
      vb[k] = vb[k] * c.b2 + c.one_minus_b2 * g * g;
    }
    vec::sqrt(vb, root, len);
#pragma omp simd
    for (int64_t k = 0; k < len; ++k)
      p[k] = p[k] + c.neg_step_size * mb[k] / (root[k] / c.bc2_sqrt + c.eps);
  }
}

}  // namespace adamw_detail

// Updates param, m and v (length n) in place. step is 1-based.
template <class T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t step, double grad_scale) {
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  adamw_detail::Coefs<T> c;
  c.decay = static_cast<T>(1.0 - lr * weight_decay);
  c.scale = static_cast<T>(grad_scale);
  const T w1 = static_cast<T>(1.0 - beta1);  // lerp weight
  c.small_w = std::abs(w1) < T(0.5);
  c.lerp_coef = c.small_w ? w1 : w1 - T(1);
  c.b2 = static_cast<T>(beta2);
  c.one_minus_b2 = static_cast<T>(1.0 - beta2);
  c.bc2_sqrt = static_cast<T>(std::sqrt(bc2));
  c.eps = static_cast<T>(eps);
  c.neg_step_size = static_cast<T>(-(lr / bc1));
  constexpr int64_t kChunk = 1 << 14;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (nchunks > 4)
  for (int64_t k = 0; k < nchunks; ++k)
    adamw_detail::update(param, grad, m, v, k * kChunk, std::min(n, (k + 1) * kChunk), c);
}

}  // namespace llm::cpu
