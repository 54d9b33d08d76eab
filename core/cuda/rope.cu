// Rotary position embedding on the GPU, HF rotate_half convention (semantics of
// core/cpu/rope.h): each pair (x[i], x[i + D/2]) of every q and k head is rotated
// by +angle (forward) or −angle (backward: the transposed rotation, overwriting
// the gradient in place), angle = (pos_offset + t)·inv_freq[i].
//
// One launch rotates q and k together: in the fused [rows, (H + 2G)·D] layout the
// H q heads and the G k heads are the first H + G heads of each row, D apart.
// One block per token row; its cos/sin are computed once into shared memory and
// used for every head. As on the CPU, inv_freq = 1/theta^(2i/D) and the angles
// are in double (inv_freq is computed on the host with the same expression, so
// it is bitwise the CPU's), cos/sin are rounded to fp32, and the rotation is in
// fp32 with one rounding on store.
//
// Bytes moved (rows R, H q heads, G k heads, head dim D, element size s):
//   forward and backward: 2·R·(H + G)·D·s (q and k read and written; v untouched)
#include <cmath>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/kernel_utils.cuh"

namespace llm::ops::cuda {
using namespace kernels;
namespace {

constexpr int kMaxHalf = 256;  // head_dim up to 512
struct InvFreq {
  double v[kMaxHalf];  // passed by value: the kernel parameter is the table
};

constexpr int kThreads = 128;

template <class T, int N, bool kInverse>
__global__ void __launch_bounds__(kThreads)
    rope_kernel(T* qkv, int64_t ld, int64_t seq, int64_t heads, int64_t head_dim, int64_t pos_offset,
                const InvFreq freq) {
  extern __shared__ float table[];  // cos [half], then sin [half]
  const int64_t half = head_dim / 2, row = blockIdx.x;
  float* cos_t = table;
  float* sin_t = table + half;
  const double pos = static_cast<double>(pos_offset + row % seq);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    double s, c;
    sincos(pos * freq.v[i], &s, &c);
    cos_t[i] = static_cast<float>(c);
    sin_t[i] = static_cast<float>(s);
  }
  __syncthreads();
  T* base = qkv + row * ld;
  const int64_t per_head = half / N, items = heads * per_head;
  for (int64_t it = threadIdx.x; it < items; it += blockDim.x) {
    const int64_t h = it / per_head, i = (it - h * per_head) * N;
    T* x1 = base + h * head_dim + i;
    T* x2 = x1 + half;
    float a[N], b[N], o1[N], o2[N];
    load_floats<N>(x1, a);
    load_floats<N>(x2, b);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float c = cos_t[i + k], s = sin_t[i + k];
      if constexpr (!kInverse) {
        o1[k] = a[k] * c - b[k] * s;
        o2[k] = b[k] * c + a[k] * s;
      } else {
        o1[k] = a[k] * c + b[k] * s;
        o2[k] = b[k] * c - a[k] * s;
      }
    }
    store_floats<N>(x1, o1);
    store_floats<N>(x2, o2);
  }
}

template <bool kInverse>
void rope(const char* op, Tensor& qkv, const QkvLayout& l, int64_t pos_offset, double theta) {
  expect_floating(op, "qkv", qkv);
  if (l.batch < 0 || l.seq < 0 || l.heads < 0 || l.groups < 0 || l.head_dim < 0)
    fail(op, "negative size in the qkv layout");
  expect_numel(op, "qkv", qkv, l.batch * l.seq * l.row_stride());
  if (l.head_dim % 2 != 0) fail(op, std::string("head_dim must be even, got ") + std::to_string(l.head_dim));
  if (l.head_dim / 2 > kMaxHalf)
    fail(op, std::string("head_dim ") + std::to_string(l.head_dim) + " is above the GPU kernel's " + std::to_string(2 * kMaxHalf));
  const int64_t rows = l.batch * l.seq, heads = l.heads + l.groups, half = l.head_dim / 2;
  if (rows == 0 || heads == 0 || half == 0) return;
  if (rows > INT32_MAX) fail(op, "more than 2^31 - 1 rows are not supported on the GPU");
  InvFreq freq{};
  for (int64_t i = 0; i < half; ++i)  // the CPU's expression (core/cpu/rope.h)
    freq.v[i] = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(l.head_dim));
  const size_t smem = 2 * static_cast<size_t>(half) * sizeof(float);
  dispatch_floating(op, "qkv", qkv, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = ptr<T>(qkv);
    // 16-byte vectors when each half-head starts aligned (the row stride is then a multiple too).
    if (half % kVec16<T> == 0 && aligned(p, 16)) {
      rope_kernel<T, kVec16<T>, kInverse><<<static_cast<unsigned>(rows), kThreads, smem, stream()>>>(
          p, l.row_stride(), l.seq, heads, l.head_dim, pos_offset, freq);
    } else {
      rope_kernel<T, 1, kInverse><<<static_cast<unsigned>(rows), kThreads, smem, stream()>>>(
          p, l.row_stride(), l.seq, heads, l.head_dim, pos_offset, freq);
    }
    LLM_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace

void rope_forward(Tensor& qkv, const QkvLayout& l, int64_t pos_offset, double theta) {
  rope<false>("rope_forward", qkv, l, pos_offset, theta);
}

void rope_backward(Tensor& dqkv, const QkvLayout& l, int64_t pos_offset, double theta) {
  rope<true>("rope_backward", dqkv, l, pos_offset, theta);
}

}  // namespace llm::ops::cuda
