// Element-wise ops on the GPU: add_ (y += x).
//
// 16-byte vectors over the part of the buffers where both are aligned (a scalar
// head before it when both start equally misaligned, a scalar tail after it);
// buffers misaligned differently take the scalar kernel. fp32 math, one rounding
// on store. Bytes moved: 3·n·sizeof(T) (read y and x, write y).
#include "core/cuda/cuda_ops.h"
#include "core/cuda/kernel_utils.cuh"

namespace llm::ops::cuda {
using namespace kernels;
namespace {

// Scalars [0, head) and [head + nvec·N, n); vectors in between.
template <class T, int N>
__global__ void add_kernel(T* y, const T* x, int64_t n, int64_t head) {
  const int64_t nvec = (n - head) / N, tail = head + nvec * N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < nvec; i += stride) {
    float a[N], b[N];
    load_floats<N>(y + head + i * N, a);
    load_floats<N>(x + head + i * N, b);
#pragma unroll
    for (int k = 0; k < N; ++k) a[k] += b[k];
    store_floats<N>(y + head + i * N, a);
  }
  const int64_t nscalar = head + (n - tail);
  for (int64_t i = tid; i < nscalar; i += stride) {
    const int64_t j = i < head ? i : tail + (i - head);
    y[j] = from_float<T>(to_float(y[j]) + to_float(x[j]));
  }
}

}  // namespace

void add_(Tensor& y, const Tensor& x) {
  const char* op = "add_";
  const Device dev = y.device();
  expect_floating(op, "y", y);
  expect(op, "x", x, dev, y.dtype());
  expect_numel(op, "x", x, y.numel());
  const int64_t n = y.numel();
  if (n == 0) return;
  dispatch_floating(op, "y", y, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int N = kVec16<T>;
    T* py = ptr<T>(y);
    const T* px = ptr<const T>(x);
    const int64_t head = elements_to_align16(py);
    constexpr int kThreads = 256;
    if (elements_to_align16(px) == head) {
      add_kernel<T, N><<<grid_for(ceil_div(n, N), kThreads), kThreads, 0, stream()>>>(
          py, px, n, head < n ? head : n);
    } else {
      add_kernel<T, 1><<<grid_for(n, kThreads), kThreads, 0, stream()>>>(py, px, n, 0);
    }
    LLM_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace llm::ops::cuda
