// Fused softmax cross-entropy on the GPU (semantics of core/cpu/cross_entropy.h).
// Probabilities are never stored: the forward keeps lse per row, the backward
// recomputes exp(x − lse) into the logits buffer itself.
//
// Forward: one block per row, one pass over the logits. Each thread keeps an
// online (max, Σ exp(x − max)) over its 16-byte vectors (one rescale per vector,
// not per element), the block combines the pairs in a fixed tree, and
// lse = max + log(sum) is formed in double. As on the CPU an infinite max is
// replaced by 0 before subtracting (no inf − inf).
// Backward (in place, overwrite): dlogits = (softmax − onehot)·dloss[row], zeros
// for ignored rows; vocab-parallel via col_begin/total_V as on the CPU.
// Vocab-parallel forward parts: row_max (F32), and stats F64 [2, rows]: the sums
// of exp(x − max) (fp32 per thread, double across threads) and the target logit
// where this part holds it (else 0).
//
// Targets outside [−1, V) (total_V for the vocab-parallel ops): the CPU throws;
// the GPU does not synchronise to find out. Targets come from token files that
// the data loader validates against the vocabulary (TokenFile::check_vocab); as a
// safety net such a row gets a NaN loss (forward), NaN stats (partial sums) and
// NaN gradients (backward), so the loss and the non-finite check report it, and
// no kernel reads outside the row.
//
// Bytes moved (rows R, V columns, element size s):
//   forward:        R·V·s + 4R (targets) + 8R (loss, lse)
//   backward:       2·R·V·s + 12R (targets, lse, dloss)
//   row_max:        R·V·s + 4R
//   partial_sums:   R·V·s + 8R (targets, row_max) + 16R (stats)
#include <cmath>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/kernel_utils.cuh"

namespace llm::ops::cuda {
using namespace kernels;
namespace {

constexpr int kThreads = 256;

// The CPU's guard: an infinite max is replaced by 0 before it is subtracted.
__device__ __forceinline__ float shift_of(float m) { return isinf(m) ? 0.f : m; }

struct MaxSum {
  float m, s;  // s = Σ exp(x − shift_of(m)) over the elements seen
};

__device__ __forceinline__ float rescaled(const MaxSum& a, float to_shift) {
  return a.s == 0.f ? 0.f : a.s * expf(shift_of(a.m) - to_shift);
}

__device__ __forceinline__ MaxSum combine(const MaxSum& a, const MaxSum& b) {
  const float m = fmaxf(a.m, b.m), sh = shift_of(m);
  return {m, rescaled(a, sh) + rescaled(b, sh)};
}

// Block-wide combine in a fixed tree (blockDim a multiple of 32; all threads call it).
__device__ MaxSum block_combine(MaxSum v) {
  __shared__ MaxSum partial[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
    v = combine(v, other);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : MaxSum{-INFINITY, 0.f};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
    v = combine(v, other);
  }
  return v;
}

template <class T, int N>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_forward_kernel(const T* logits, const int32_t* targets, int64_t V, float* loss, float* lse) {
  const int64_t r = blockIdx.x;
  const T* x = logits + r * V;
  MaxSum st{-INFINITY, 0.f};
  for (int64_t c = threadIdx.x * N; c < V; c += static_cast<int64_t>(blockDim.x) * N) {
    float f[N];
    load_floats<N>(x + c, f);
    float vm = f[0];
#pragma unroll
    for (int k = 1; k < N; ++k) vm = fmaxf(vm, f[k]);
    const float m = fmaxf(st.m, vm);
    if (m != st.m) {
      st.s = rescaled(st, shift_of(m));
      st.m = m;
    }
    const float sh = shift_of(st.m);
#pragma unroll
    for (int k = 0; k < N; ++k) st.s += expf(f[k] - sh);
  }
  st = block_combine(st);
  if (threadIdx.x == 0) {
    const float l = static_cast<float>(static_cast<double>(shift_of(st.m)) + log(static_cast<double>(st.s)));
    lse[r] = l;
    const int32_t t = targets[r];
    loss[r] = t == -1 ? 0.f : (t < -1 || t >= V) ? __int_as_float(0x7fc00000) : l - to_float(x[t]);
  }
}

template <class T, int N>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_backward_kernel(T* logits, const float* lse, const int32_t* targets, const float* dloss, int64_t V,
                                  int64_t col_begin, int64_t total_V) {
  const int64_t r = blockIdx.x;
  T* x = logits + r * V;
  const int64_t t = targets[r], tl = t - col_begin;
  const bool ignore = t == -1, bad = t < -1 || t >= total_V, mine = t >= 0 && !bad && tl >= 0 && tl < V;
  const float l = lse[r], g = dloss[r];
  for (int64_t c = threadIdx.x * N; c < V; c += static_cast<int64_t>(blockDim.x) * N) {
    float f[N];
    if (ignore || bad) {
#pragma unroll
      for (int k = 0; k < N; ++k) f[k] = ignore ? 0.f : __int_as_float(0x7fc00000);
    } else {
      load_floats<N>(x + c, f);
#pragma unroll
      for (int k = 0; k < N; ++k)
        f[k] = (mine && c + k == tl) ? (expf(f[k] - l) - 1.0f) * g : expf(f[k] - l) * g;
    }
    store_floats<N>(x + c, f);
  }
}

template <class T, int N>
__global__ void __launch_bounds__(kThreads) cross_entropy_row_max_kernel(const T* logits, int64_t V, float* row_max) {
  const int64_t r = blockIdx.x;
  const T* x = logits + r * V;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x * N; c < V; c += static_cast<int64_t>(blockDim.x) * N) {
    float f[N];
    load_floats<N>(x + c, f);
#pragma unroll
    for (int k = 0; k < N; ++k) m = fmaxf(m, f[k]);
  }
  m = block_allreduce(m, MaxOp{}, -INFINITY);
  if (threadIdx.x == 0) row_max[r] = m;
}

template <class T, int N>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_partial_sums_kernel(const T* logits, const int32_t* targets, int64_t rows, int64_t V,
                                      int64_t col_begin, int64_t total_V, const float* row_max, double* stats) {
  const int64_t r = blockIdx.x;
  const T* x = logits + r * V;
  const float sh = shift_of(row_max[r]);
  float s = 0.f;
  for (int64_t c = threadIdx.x * N; c < V; c += static_cast<int64_t>(blockDim.x) * N) {
    float f[N];
    load_floats<N>(x + c, f);
#pragma unroll
    for (int k = 0; k < N; ++k) s += expf(f[k] - sh);
  }
  const double sum = block_allreduce(static_cast<double>(s), SumOp{}, 0.0);
  if (threadIdx.x == 0) {
    const int64_t t = targets[r], tl = t - col_begin;
    const bool bad = t < -1 || t >= total_V;
    stats[r] = sum;
    stats[rows + r] = bad ? __longlong_as_double(0x7ff8000000000000ll)
                          : (t >= 0 && tl >= 0 && tl < V) ? static_cast<double>(to_float(x[tl])) : 0.0;
  }
}

// Runs launch(TypeTag<T>, N) with the 16-byte width when rows of V elements stay aligned.
template <class F>
void dispatch_rows(const char* op, const Tensor& logits, int64_t V, F&& launch) {
  dispatch_floating(op, "logits", logits, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (V % kVec16<T> == 0 && aligned(logits.raw(), 16)) launch(tag, std::integral_constant<int, kVec16<T>>{});
    else launch(tag, std::integral_constant<int, 1>{});
    LLM_CUDA_CHECK(cudaGetLastError());
  });
}

// V (the last dimension) and rows of logits.
std::pair<int64_t, int64_t> row_shape(const char* op, const Tensor& logits) {
  expect_floating(op, "logits", logits);
  if (logits.dim() < 1) fail(op, std::string("logits ") + logits.str() + " have no vocabulary dimension");
  const int64_t V = logits.size(-1), rows = V ? logits.numel() / V : 0;
  if (rows > INT32_MAX) fail(op, "more than 2^31 - 1 rows are not supported on the GPU");
  return {V, rows};
}

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor& lse) {
  const char* op = "cross_entropy_forward";
  const auto [V, rows] = row_shape(op, logits);
  const Device dev = logits.device();
  expect(op, "targets", targets, dev, DType::I32);
  expect(op, "loss", loss, dev, DType::F32);
  expect(op, "lse", lse, dev, DType::F32);
  expect_numel(op, "targets", targets, rows);
  expect_numel(op, "loss", loss, rows);
  expect_numel(op, "lse", lse, rows);
  if (rows == 0) return;
  dispatch_rows(op, logits, V, [&](auto tag, auto n) {
    using T = typename decltype(tag)::type;
    cross_entropy_forward_kernel<T, decltype(n)::value><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
        ptr<const T>(logits), ptr<const int32_t>(targets), V, ptr<float>(loss), ptr<float>(lse));
  });
}

void cross_entropy_backward_inplace(Tensor& logits, const Tensor& lse, const Tensor& targets, const Tensor& dloss,
                                    int64_t col_begin, int64_t total_V) {
  const char* op = "cross_entropy_backward";
  const auto [V, rows] = row_shape(op, logits);
  const Device dev = logits.device();
  expect(op, "lse", lse, dev, DType::F32);
  expect(op, "targets", targets, dev, DType::I32);
  expect(op, "dloss", dloss, dev, DType::F32);
  expect_numel(op, "targets", targets, rows);
  expect_numel(op, "lse", lse, rows);
  expect_numel(op, "dloss", dloss, rows);
  if (rows == 0) return;
  const int64_t total = total_V < 0 ? V : total_V;
  dispatch_rows(op, logits, V, [&](auto tag, auto n) {
    using T = typename decltype(tag)::type;
    cross_entropy_backward_kernel<T, decltype(n)::value><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
        ptr<T>(logits), ptr<const float>(lse), ptr<const int32_t>(targets), ptr<const float>(dloss), V, col_begin,
        total);
  });
}

void cross_entropy_row_max(const Tensor& logits, Tensor& row_max) {
  const char* op = "cross_entropy_row_max";
  const auto [V, rows] = row_shape(op, logits);
  expect(op, "row_max", row_max, logits.device(), DType::F32);
  expect_numel(op, "row_max", row_max, rows);
  if (rows == 0) return;
  dispatch_rows(op, logits, V, [&](auto tag, auto n) {
    using T = typename decltype(tag)::type;
    cross_entropy_row_max_kernel<T, decltype(n)::value><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
        ptr<const T>(logits), V, ptr<float>(row_max));
  });
}

void cross_entropy_partial_sums(const Tensor& logits, const Tensor& targets, int64_t col_begin, int64_t total_V,
                                const Tensor& row_max, Tensor& stats) {
  const char* op = "cross_entropy_partial_sums";
  const auto [V, rows] = row_shape(op, logits);
  const Device dev = logits.device();
  expect(op, "targets", targets, dev, DType::I32);
  expect(op, "row_max", row_max, dev, DType::F32);
  expect(op, "stats", stats, dev, DType::F64);
  expect_numel(op, "targets", targets, rows);
  expect_numel(op, "row_max", row_max, rows);
  expect_numel(op, "stats", stats, 2 * rows);
  if (rows == 0) return;
  const int64_t total = total_V < 0 ? V : total_V;
  dispatch_rows(op, logits, V, [&](auto tag, auto n) {
    using T = typename decltype(tag)::type;
    cross_entropy_partial_sums_kernel<T, decltype(n)::value><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
        ptr<const T>(logits), ptr<const int32_t>(targets), rows, V, col_begin, total, ptr<const float>(row_max),
        ptr<double>(stats));
  });
}

}  // namespace llm::ops::cuda
