// SwiGLU gating on the GPU (semantics of core/cpu/swiglu.h) for a fused
// [rows, 2F] gate_up buffer (gate in columns [0, F), up in [F, 2F)):
//   forward:  out = silu(g)·u = g / (1 + e^−g) · u                      (overwrites out)
//   backward: dup += dout·silu(g),  dgate += dout·u·σ(g)·(1 + g·(1 − σ(g)))  (adds)
// fp32 math with IEEE expf and division, one rounding on store; 16-byte vectors
// when F is a multiple of the vector width and the buffers are aligned.
//
// Bytes moved (rows R, F, element size s):
//   forward:  3·R·F·s (gate and up read, out written)
//   backward: 7·R·F·s (dout, gate and up read; dgate and dup read and written)
#include <initializer_list>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/kernel_utils.cuh"

namespace llm::ops::cuda {
using namespace kernels;
namespace {

constexpr int kThreads = 256;

template <class T, int N>
__global__ void swiglu_forward_kernel(const T* gate_up, T* out, int64_t rows, int64_t F) {
  const int64_t per_row = F / N, total = rows * per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t r = i / per_row, c = (i - r * per_row) * N;
    const T* g_row = gate_up + r * 2 * F;
    float g[N], u[N], o[N];
    load_floats<N>(g_row + c, g);
    load_floats<N>(g_row + F + c, u);
#pragma unroll
    for (int k = 0; k < N; ++k) o[k] = g[k] / (1.0f + expf(-g[k])) * u[k];  // g → −inf: −0, not NaN
    store_floats<N>(out + r * F + c, o);
  }
}

template <class T, int N>
__global__ void swiglu_backward_kernel(const T* dout, const T* gate_up, T* dgate_up, int64_t rows, int64_t F) {
  const int64_t per_row = F / N, total = rows * per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t r = i / per_row, c = (i - r * per_row) * N;
    const T* g_row = gate_up + r * 2 * F;
    T* dg_row = dgate_up + r * 2 * F;
    float d[N], g[N], u[N], dg[N], du[N];
    load_floats<N>(dout + r * F + c, d);
    load_floats<N>(g_row + c, g);
    load_floats<N>(g_row + F + c, u);
    load_floats<N>(dg_row + c, dg);
    load_floats<N>(dg_row + F + c, du);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float s = 1.0f / (1.0f + expf(-g[k]));
      du[k] += d[k] * (g[k] * s);
      dg[k] += d[k] * u[k] * (s * (1.0f + g[k] * (1.0f - s)));
    }
    store_floats<N>(dg_row + c, dg);
    store_floats<N>(dg_row + F + c, du);
  }
}

template <class T>
bool vectorizable(int64_t F, std::initializer_list<const void*> ptrs) {
  if (F % kVec16<T> != 0) return false;
  for (const void* p : ptrs)
    if (!aligned(p, 16)) return false;
  return true;
}

// F from out/dout's last dimension; rows from its numel (as core/ops.cpp does).
int64_t features(const char* op, const char* what, const Tensor& t) {
  if (t.dim() < 1) fail(op, std::string(what) + " " + t.str() + " has no feature dimension");
  return t.size(-1);
}

}  // namespace

void swiglu_forward(const Tensor& gate_up, Tensor& out) {
  const char* op = "swiglu_forward";
  const Device dev = gate_up.device();
  expect_floating(op, "gate_up", gate_up);
  expect(op, "out", out, dev, gate_up.dtype());
  const int64_t F = features(op, "out", out), rows = F ? out.numel() / F : 0;
  expect_numel(op, "gate_up", gate_up, rows * 2 * F);
  if (rows == 0 || F == 0) return;
  dispatch_floating(op, "gate_up", gate_up, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gu = ptr<const T>(gate_up);
    T* o = ptr<T>(out);
    if (vectorizable<T>(F, {gu, o})) {
      constexpr int N = kVec16<T>;
      swiglu_forward_kernel<T, N><<<grid_for(rows * (F / N), kThreads), kThreads, 0, stream()>>>(gu, o, rows, F);
    } else {
      swiglu_forward_kernel<T, 1><<<grid_for(rows * F, kThreads), kThreads, 0, stream()>>>(gu, o, rows, F);
    }
    LLM_CUDA_CHECK(cudaGetLastError());
  });
}

void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) {
  const char* op = "swiglu_backward";
  const Device dev = dout.device();
  expect_floating(op, "dout", dout);
  expect(op, "gate_up", gate_up, dev, dout.dtype());
  expect(op, "dgate_up", dgate_up, dev, dout.dtype());
  const int64_t F = features(op, "dout", dout), rows = F ? dout.numel() / F : 0;
  expect_numel(op, "gate_up", gate_up, rows * 2 * F);
  expect_numel(op, "dgate_up", dgate_up, rows * 2 * F);
  if (rows == 0 || F == 0) return;
  dispatch_floating(op, "dout", dout, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* d = ptr<const T>(dout);
    const T* gu = ptr<const T>(gate_up);
    T* dgu = ptr<T>(dgate_up);
    if (vectorizable<T>(F, {d, gu, dgu})) {
      constexpr int N = kVec16<T>;
      swiglu_backward_kernel<T, N><<<grid_for(rows * (F / N), kThreads), kThreads, 0, stream()>>>(d, gu, dgu,
                                                                                                   rows, F);
    } else {
      swiglu_backward_kernel<T, 1><<<grid_for(rows * F, kThreads), kThreads, 0, stream()>>>(d, gu, dgu, rows, F);
    }
    LLM_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace llm::ops::cuda
