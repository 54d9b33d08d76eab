// Rotary position embedding, Hugging Face "rotate_half" convention. For head dim D and
// i < D/2:  inv_freq[i] = theta^(-2i/D),  angle = pos · inv_freq[i],
//   out[i]       = x[i]·cos − x[i+D/2]·sin
//   out[i + D/2] = x[i+D/2]·cos + x[i]·sin
// i.e. each pair (x[i], x[i+D/2]) is rotated by +angle.
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace llm::cpu {

namespace rope_detail {

// cos/sin of angle(t, i) for t < seq (position pos_offset + t), i < D/2, row-major [seq, D/2].
// Computed in double, then rounded to T, so the table is accurate to T's last bit even at
// large positions. (HF computes angles in fp32, which differs by up to ~1e-4 at positions
// in the thousands.) The last table is kept per thread: the training loop asks for the
// same one for q and k in every layer, forward and backward.
template <class T>
struct Table {
  int64_t pos_offset = -1, seq = -1, head_dim = -1;
  double theta = 0;
  std::vector<T> cos, sin;
};

template <class T>
const Table<T>& table(int64_t pos_offset, int64_t seq, int64_t head_dim, double theta) {
  thread_local Table<T> tab;
  if (tab.pos_offset == pos_offset && tab.seq == seq && tab.head_dim == head_dim &&
      tab.theta == theta)
    return tab;
  const int64_t half = head_dim / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  tab.pos_offset = -1;  // invalid until filled (in case an allocation throws)
  tab.cos.resize(static_cast<size_t>(seq * half));
  tab.sin.resize(static_cast<size_t>(seq * half));
  // Plain pointers: inside the parallel region `tab` would name each worker's own thread_local.
  T* cos_out = tab.cos.data();
  T* sin_out = tab.sin.data();
  const double* freq = inv_freq.data();
#pragma omp parallel for schedule(static) if (seq * half >= 4096)
  for (int64_t t = 0; t < seq; ++t) {
    const double pos = static_cast<double>(pos_offset + t);
    for (int64_t i = 0; i < half; ++i) {
      const double a = pos * freq[i];
      cos_out[t * half + i] = static_cast<T>(std::cos(a));
      sin_out[t * half + i] = static_cast<T>(std::sin(a));
    }
  }
  tab.pos_offset = pos_offset;
  tab.seq = seq;
  tab.head_dim = head_dim;
  tab.theta = theta;
  return tab;
}

// Rotates every head of every token by +angle (sign = 1) or −angle (sign = −1).
template <class T>
void apply(T* x, int64_t ld, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
           int64_t pos_offset, double theta, bool inverse) {
  if (head_dim % 2 != 0)
    throw std::invalid_argument("rope: head_dim must be even, got " + std::to_string(head_dim));
  if (ld < heads * head_dim)
    throw std::invalid_argument("rope: row stride " + std::to_string(ld) + " < heads*head_dim " +
                                std::to_string(heads * head_dim));
  if (batch <= 0 || seq <= 0 || heads <= 0 || head_dim == 0) return;
  const Table<T>& tab = table<T>(pos_offset, seq, head_dim, theta);
  const int64_t half = head_dim / 2;
  const T* cos_tab = tab.cos.data();
  const T* sin_tab = tab.sin.data();
#pragma omp parallel for schedule(static) if (batch * seq * heads * head_dim >= (1 << 15))
  for (int64_t bt = 0; bt < batch * seq; ++bt) {
    const int64_t t = bt % seq;
    const T* c = cos_tab + t * half;
    const T* s = sin_tab + t * half;
    T* row = x + bt * ld;
    for (int64_t h = 0; h < heads; ++h) {
      T* x1 = row + h * head_dim;
      T* x2 = x1 + half;
      if (!inverse) {
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const T a = x1[i], b = x2[i];
          x1[i] = a * c[i] - b * s[i];
          x2[i] = b * c[i] + a * s[i];
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const T a = x1[i], b = x2[i];
          x1[i] = a * c[i] + b * s[i];
          x2[i] = b * c[i] - a * s[i];
        }
      }
    }
  }
}

}  // namespace rope_detail

// In place on x. Token (b, t) starts at x + (b*seq + t)*ld and sits at position
// pos_offset + t; its heads are contiguous at offsets h*head_dim (ld >= heads*head_dim,
// so rows may be slices of a fused QKV buffer).
template <class T>
void rope_forward(T* x, int64_t ld, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                  int64_t pos_offset, double theta) {
  rope_detail::apply(x, ld, batch, seq, heads, head_dim, pos_offset, theta, /*inverse=*/false);
}

// Gradient of rope_forward, in place: dx holds dL/d(out) on entry and dL/dx on return.
// The rotation is orthogonal, so this applies its transpose (rotation by −angle).
// OVERWRITES dx — the one backward here that does not add into its output.
template <class T>
void rope_backward(T* dx, int64_t ld, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                   int64_t pos_offset, double theta) {
  rope_detail::apply(dx, ld, batch, seq, heads, head_dim, pos_offset, theta, /*inverse=*/true);
}

}  // namespace llm::cpu
