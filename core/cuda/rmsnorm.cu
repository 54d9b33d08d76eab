// RMSNorm on the GPU (semantics of core/cpu/rmsnorm.h), with the residual add
// fused into the forward pass:
//   y = (x·rstd)·w,  rstd = 1/sqrt(mean(x²) + eps)              (fp32 math)
//   add_rmsnorm: h = x + residual rounded to h's dtype first, then the norm of
//                the rounded h, as the CPU's two passes compute it.
// Backward adds into dx and dw:
//   dx_j += rstd·w_j·dy_j − (rstd³/dim)·x_j·S,  S = Σ_k dy_k w_k x_k
//   dw_j += Σ_rows dy_j·x_j·rstd
// dw is a sum over rows, taken without atomics: blocks own fixed chunks of rows
// (the chunking depends only on `rows`, not on the device) and write per-chunk
// fp32 partial sums; a second kernel adds those in a fixed tree per column. Both
// results are bitwise reproducible.
//
// One block per row (forward) or per chunk of rows (backward); each thread keeps
// up to kHold 16-byte vectors of its row in registers across the row's reduction
// (the whole row for hidden sizes up to 8192 in 16 bits), so inputs are read once.
//
// Bytes moved (rows R, dim D, element size s):
//   rmsnorm_forward:      2·R·D·s (x, y) + 4R (rstd) + D·s (w)
//   add_rmsnorm_forward:  4·R·D·s (x, residual, h, y) + 4R + D·s
//   rmsnorm_backward:     4·R·D·s (dy, x, dx read and written) + 4R
//                         + 8·C·D (fp32 partials written and read, C chunks) + 2·D·s (dw)
#include <initializer_list>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/kernel_utils.cuh"

namespace llm::ops::cuda {
using namespace kernels;
namespace {

constexpr int kMaxThreads = 256;

// Threads for a row of `dim` elements, N per vector: a multiple of 32, at most 256.
int row_threads(int64_t dim, int n) {
  const int64_t v = ceil_div(ceil_div(dim, n), 32) * 32;
  return static_cast<int>(v < 32 ? 32 : (v > kMaxThreads ? kMaxThreads : v));
}

template <class T, int N, bool kAdd>
__global__ void __launch_bounds__(kMaxThreads)
    rmsnorm_forward_kernel(const T* x, const T* residual, const T* w, T* h, T* y, float* rstd, int64_t dim,
                           float eps) {
  constexpr int kHold = 4;
  const int64_t r = blockIdx.x, stride = static_cast<int64_t>(blockDim.x) * N, c0 = threadIdx.x * N;
  const T* xr = x + r * dim;
  const T* rr = kAdd ? residual + r * dim : nullptr;
  T* hr = kAdd ? h + r * dim : nullptr;
  T* yr = y + r * dim;
  // The norm's input: x, or h = x + residual rounded to T (written out here).
  auto input = [&](int64_t c, float (&a)[N]) {
    load_floats<N>(xr + c, a);
    if constexpr (kAdd) {
      float b[N];
      load_floats<N>(rr + c, b);
#pragma unroll
      for (int k = 0; k < N; ++k) a[k] = to_float(from_float<T>(a[k] + b[k]));
      store_floats<N>(hr + c, a);  // exact: a holds T values
    }
  };
  float held[kHold][N];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < kHold; ++j) {
    const int64_t c = c0 + j * stride;
    if (c < dim) {
      input(c, held[j]);
#pragma unroll
      for (int k = 0; k < N; ++k) ss += held[j][k] * held[j][k];
    }
  }
  for (int64_t c = c0 + kHold * stride; c < dim; c += stride) {
    float a[N];
    input(c, a);
#pragma unroll
    for (int k = 0; k < N; ++k) ss += a[k] * a[k];
  }
  ss = block_allreduce(ss, SumOp{}, 0.f);
  const float rs = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  if (threadIdx.x == 0) rstd[r] = rs;

  auto output = [&](int64_t c, const float (&a)[N]) {
    float wv[N], o[N];
    load_floats<N>(w + c, wv);
#pragma unroll
    for (int k = 0; k < N; ++k) o[k] = (a[k] * rs) * wv[k];  // HF's order: (x·rstd)·w
    store_floats<N>(yr + c, o);
  };
#pragma unroll
  for (int j = 0; j < kHold; ++j) {
    const int64_t c = c0 + j * stride;
    if (c < dim) output(c, held[j]);
  }
  // Beyond the registers: read the input again (h: this thread's own writes).
  const T* src = kAdd ? hr : xr;
  for (int64_t c = c0 + kHold * stride; c < dim; c += stride) {
    float a[N];
    load_floats<N>(src + c, a);
    output(c, a);
  }
}

// Rows [blockIdx.x·chunk_rows, +chunk_rows): adds into dx, writes the chunk's dw
// sums to partial[blockIdx.x, :]. Each thread owns the same columns in every
// row, so its dw sums need no synchronisation: registers for its first kHold
// vectors, dynamic shared memory (indexed from column kHold·stride) for the rest.
template <class T, int N>
__global__ void __launch_bounds__(kMaxThreads)
    rmsnorm_backward_kernel(const T* dy, const T* x, const T* w, const float* rstd, T* dx, float* partial,
                            int64_t rows, int64_t dim, int64_t chunk_rows) {
  constexpr int kHold = 2;
  extern __shared__ float dw_spill[];
  const int64_t stride = static_cast<int64_t>(blockDim.x) * N, c0 = threadIdx.x * N, held_cols = kHold * stride;
  float wh[kHold][N], dwh[kHold][N];
#pragma unroll
  for (int j = 0; j < kHold; ++j) {
    const int64_t c = c0 + j * stride;
#pragma unroll
    for (int k = 0; k < N; ++k) dwh[j][k] = 0.f;
    if (c < dim) load_floats<N>(w + c, wh[j]);
  }
  for (int64_t c = c0 + held_cols; c < dim; c += stride) {
#pragma unroll
    for (int k = 0; k < N; ++k) dw_spill[c - held_cols + k] = 0.f;
  }
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  for (int64_t r = r0; r < r1; ++r) {
    const T* dyr = dy + r * dim;
    const T* xr = x + r * dim;
    T* dxr = dx + r * dim;
    float dyh[kHold][N], xh[kHold][N];
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < kHold; ++j) {
      const int64_t c = c0 + j * stride;
      if (c < dim) {
        load_floats<N>(dyr + c, dyh[j]);
        load_floats<N>(xr + c, xh[j]);
#pragma unroll
        for (int k = 0; k < N; ++k) s += dyh[j][k] * wh[j][k] * xh[j][k];
      }
    }
    for (int64_t c = c0 + held_cols; c < dim; c += stride) {
      float a[N], b[N], wv[N];
      load_floats<N>(dyr + c, a);
      load_floats<N>(xr + c, b);
      load_floats<N>(w + c, wv);
#pragma unroll
      for (int k = 0; k < N; ++k) s += a[k] * wv[k] * b[k];
    }
    s = block_allreduce(s, SumOp{}, 0.f);
    const float rs = rstd[r];
    const float coef = s * rs * rs * rs / static_cast<float>(dim);
    // dx += rs·w·dy − coef·x for one vector; returns its dw terms dy·x·rs in inc.
    auto update = [&](int64_t c, const float (&g)[N], const float (&xv)[N], const float (&wv)[N], float (&inc)[N]) {
      float d[N];
      load_floats<N>(dxr + c, d);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        d[k] += rs * wv[k] * g[k] - coef * xv[k];
        inc[k] = g[k] * xv[k] * rs;
      }
      store_floats<N>(dxr + c, d);
    };
#pragma unroll
    for (int j = 0; j < kHold; ++j) {
      const int64_t c = c0 + j * stride;
      if (c < dim) {
        float inc[N];
        update(c, dyh[j], xh[j], wh[j], inc);
#pragma unroll
        for (int k = 0; k < N; ++k) dwh[j][k] += inc[k];
      }
    }
    for (int64_t c = c0 + held_cols; c < dim; c += stride) {
      float a[N], b[N], wv[N], inc[N];
      load_floats<N>(dyr + c, a);
      load_floats<N>(xr + c, b);
      load_floats<N>(w + c, wv);
      update(c, a, b, wv, inc);
#pragma unroll
      for (int k = 0; k < N; ++k) dw_spill[c - held_cols + k] += inc[k];
    }
  }
  float* out = partial + static_cast<int64_t>(blockIdx.x) * dim;
#pragma unroll
  for (int j = 0; j < kHold; ++j) {
    const int64_t c = c0 + j * stride;
    if (c < dim) {
#pragma unroll
      for (int k = 0; k < N; ++k) out[c + k] = dwh[j][k];
    }
  }
  for (int64_t c = c0 + held_cols; c < dim; c += stride) {
#pragma unroll
    for (int k = 0; k < N; ++k) out[c + k] = dw_spill[c - held_cols + k];
  }
}

// dw[c] += Σ_chunks partial[chunk, c]: 16 lanes per column each sum every 16th
// chunk in order, then a fixed tree over the lanes.
constexpr int kReduceCols = 32, kReduceLanes = 16;
template <class T>
__global__ void rmsnorm_dw_reduce_kernel(const float* partial, int64_t nchunks, int64_t dim, T* dw) {
  __shared__ float acc[kReduceLanes][kReduceCols];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kReduceCols + threadIdx.x;
  float s = 0.f;
  if (c < dim)
    for (int64_t k = threadIdx.y; k < nchunks; k += kReduceLanes) s += partial[k * dim + c];
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
#pragma unroll
  for (int half = kReduceLanes / 2; half > 0; half /= 2) {
    if (threadIdx.y < half) acc[threadIdx.y][threadIdx.x] += acc[threadIdx.y + half][threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.y == 0 && c < dim) dw[c] = from_float<T>(to_float(dw[c]) + acc[0][threadIdx.x]);
}

template <class T>
bool rows_vectorizable(int64_t dim, std::initializer_list<const void*> ptrs) {
  if (dim % kVec16<T> != 0) return false;
  for (const void* p : ptrs)
    if (p && !aligned(p, 16)) return false;
  return true;
}

// Shared checks of the two forwards; returns rows.
int64_t check_forward(const char* op, const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd) {
  const Device dev = x.device();
  expect_floating(op, "x", x);
  expect(op, "w", w, dev, x.dtype());
  expect(op, "y", y, dev, x.dtype());
  expect(op, "rstd", rstd, dev, DType::F32);
  const int64_t dim = w.numel();
  if (dim == 0 || x.numel() % dim != 0)
    fail(op, std::string("x ") + x.str() + " is not rows of w's " + std::to_string(dim) + " elements");
  const int64_t rows = x.numel() / dim;
  expect_numel(op, "y", y, x.numel());
  expect_numel(op, "rstd", rstd, rows);
  if (rows > INT32_MAX) fail(op, "more than 2^31 - 1 rows are not supported on the GPU");
  return rows;
}

template <bool kAdd>
void launch_forward(const char* op, const Tensor& x, const Tensor* residual, const Tensor& w, double eps, Tensor* h,
                    Tensor& y, Tensor& rstd, int64_t rows) {
  const int64_t dim = w.numel();
  if (rows == 0) return;
  dispatch_floating(op, "x", x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = ptr<const T>(x);
    const T* pr = kAdd ? ptr<const T>(*residual) : nullptr;
    T* ph = kAdd ? ptr<T>(*h) : nullptr;
    const T* pw = ptr<const T>(w);
    T* py = ptr<T>(y);
    float* prs = ptr<float>(rstd);
    const float e = static_cast<float>(eps);
    if (rows_vectorizable<T>(dim, {px, pr, ph, pw, py})) {
      constexpr int N = kVec16<T>;
      rmsnorm_forward_kernel<T, N, kAdd><<<static_cast<unsigned>(rows), row_threads(dim, N), 0, stream()>>>(
          px, pr, pw, ph, py, prs, dim, e);
    } else {
      rmsnorm_forward_kernel<T, 1, kAdd><<<static_cast<unsigned>(rows), row_threads(dim, 1), 0, stream()>>>(
          px, pr, pw, ph, py, prs, dim, e);
    }
    LLM_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  const int64_t rows = check_forward("rmsnorm_forward", x, w, y, rstd);
  launch_forward<false>("rmsnorm_forward", x, nullptr, w, eps, nullptr, y, rstd, rows);
}

void add_rmsnorm_forward(const Tensor& x, const Tensor& residual, const Tensor& w, double eps, Tensor& h,
                         Tensor& y, Tensor& rstd) {
  const char* op = "add_rmsnorm_forward";
  const int64_t rows = check_forward(op, x, w, y, rstd);
  expect(op, "residual", residual, x.device(), x.dtype());
  expect(op, "h", h, x.device(), x.dtype());
  expect_numel(op, "residual", residual, x.numel());
  expect_numel(op, "h", h, x.numel());
  launch_forward<true>(op, x, &residual, w, eps, &h, y, rstd, rows);
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                      Tensor& dw) {
  const char* op = "rmsnorm_backward";
  const Device dev = dy.device();
  expect_floating(op, "dy", dy);
  expect(op, "x", x, dev, dy.dtype());
  expect(op, "w", w, dev, dy.dtype());
  expect(op, "rstd", rstd, dev, DType::F32);
  expect(op, "dx", dx, dev, dy.dtype());
  expect(op, "dw", dw, dev, dy.dtype());
  const int64_t dim = w.numel();
  if (dim == 0 || x.numel() % dim != 0)
    fail(op, std::string("x ") + x.str() + " is not rows of w's " + std::to_string(dim) + " elements");
  const int64_t rows = x.numel() / dim;
  expect_numel(op, "dy", dy, x.numel());
  expect_numel(op, "dx", dx, x.numel());
  expect_numel(op, "rstd", rstd, rows);
  expect_numel(op, "dw", dw, dim);
  if (rows == 0) return;

  // Chunks of rows: a function of `rows` only, so dw's summation order is too.
  constexpr int64_t kChunkRows = 16, kMaxChunks = 1024;
  int64_t nchunks = ceil_div(rows, kChunkRows);
  nchunks = nchunks < kMaxChunks ? nchunks : kMaxChunks;
  const int64_t chunk_rows = ceil_div(rows, nchunks);
  nchunks = ceil_div(rows, chunk_rows);
  Tensor partial = Tensor::empty({nchunks, dim}, DType::F32, MemoryCategory::Workspace, dev);
  cudaStream_t st = stream();

  dispatch_floating(op, "dy", dy, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pdy = ptr<const T>(dy);
    const T* px = ptr<const T>(x);
    const T* pw = ptr<const T>(w);
    T* pdx = ptr<T>(dx);
    const bool vec = rows_vectorizable<T>(dim, {pdy, px, pw, pdx});
    const int n = vec ? kVec16<T> : 1;
    const int threads = row_threads(dim, n);
    const int64_t held = 2 * static_cast<int64_t>(threads) * n;  // kHold·stride of the kernel
    const size_t smem = dim > held ? static_cast<size_t>(dim - held) * sizeof(float) : 0;
    auto launch = [&](auto kernel) {
      if (smem > 48 * 1024) {
        int max_optin = 0;
        LLM_CUDA_CHECK(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                              ::llm::cuda::current_device()));
        if (smem > static_cast<size_t>(max_optin))
          fail(op, std::string("rows of ") + std::to_string(dim) + " elements are too wide for this GPU's shared memory");
        LLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem)));
      }
      kernel<<<static_cast<unsigned>(nchunks), threads, smem, st>>>(pdy, px, pw, ptr<const float>(rstd), pdx,
                                                                    ptr<float>(partial), rows, dim, chunk_rows);
      LLM_CUDA_CHECK(cudaGetLastError());
    };
    if (vec) launch(rmsnorm_backward_kernel<T, kVec16<T>>);
    else launch(rmsnorm_backward_kernel<T, 1>);
    rmsnorm_dw_reduce_kernel<T><<<static_cast<unsigned>(ceil_div(dim, kReduceCols)), dim3(kReduceCols, kReduceLanes),
                                  0, st>>>(ptr<const float>(partial), nchunks, dim, ptr<T>(dw));
    LLM_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace llm::ops::cuda
