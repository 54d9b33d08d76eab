// Token embedding on the GPU: a row gather forward, a deterministic row
// scatter-add backward (semantics of core/cpu/embedding.h, vocab-parallel
// arguments included).
//
// Backward without atomics: the (row, token) pairs are sorted by row with a
// stable radix sort (CUB), so the tokens of one row are adjacent and in token
// order; the block at the start of each run adds that run's gradient rows to the
// table row in token order, in fp32 starting from the row's current value, and
// rounds once. That is the CPU's order of operations, so the result is bitwise
// reproducible and, for F32, equal to the CPU's up to fma contraction.
//
// Invalid ids (outside [0, total_vocab)): the CPU throws; raising that here would
// cost a device-to-host synchronisation per call, so the GPU relies on the data
// loader's validation of token files against the model's vocabulary
// (TokenFile::check_vocab). As a safety net the kernels never read outside the
// table: the forward writes a NaN row for such an id (the loss turns NaN and the
// non-finite check reports the step), the backward skips it.
//
// Bytes moved (n tokens, dim D, element size s, u distinct ids held here):
//   forward:  n·D·s read + n·D·s written + 4n (ids)
//   backward: n·D·s read (dout) + 2·u·D·s (table rows read and written)
//             + the sort's keys and values (about 40·n bytes)
#include <bit>
#include <cub/device/device_radix_sort.cuh>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/kernel_utils.cuh"

namespace llm::ops::cuda {
using namespace kernels;
namespace {

constexpr int kThreads = 128;

template <class T, int N>
__global__ void embedding_forward_kernel(const int32_t* tokens, const T* table, T* out, int64_t vocab, int64_t dim,
                                         int64_t row_begin, int64_t total_vocab) {
  const int64_t i = blockIdx.x;
  const int64_t id = tokens[i], row = id - row_begin;
  const bool bad = id < 0 || id >= total_vocab, here = !bad && row >= 0 && row < vocab;
  const T fill = from_float<T>(bad ? __int_as_float(0x7fc00000) : 0.0f);
  T* dst = out + i * dim;
  const T* src = table + (here ? row : 0) * dim;
  const int64_t step = static_cast<int64_t>(gridDim.y) * blockDim.x * N;
  for (int64_t c = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * N; c < dim; c += step) {
    Vec<T, N> v;
    if (here) {
      v = load_vec<N>(src + c);
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) v.v[k] = fill;
    }
    store_vec<N>(dst + c, v);
  }
}

// key = the table row of token i, or `vocab` (sorts last, skipped) when another
// rank holds the id or the id is invalid; value = i.
__global__ void embedding_keys_kernel(const int32_t* tokens, int64_t n, int64_t vocab, int64_t row_begin,
                                      int64_t total_vocab, uint32_t* keys, int32_t* values) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t id = tokens[i], row = id - row_begin;
  const bool use = id >= 0 && id < total_vocab && row >= 0 && row < vocab;
  keys[i] = static_cast<uint32_t>(use ? row : vocab);
  values[i] = static_cast<int32_t>(i);
}

// Block x: sorted position p; it works only when p starts a run of equal rows.
// Tokens of the run are added in order, 8 at a time so that their loads overlap.
template <class T, int N>
__global__ void embedding_backward_kernel(const uint32_t* keys, const int32_t* tokens_of, int64_t n, const T* dout,
                                          T* dtable, int64_t vocab, int64_t dim) {
  const int64_t p = blockIdx.x;
  const uint32_t key = keys[p];
  if (key >= vocab || (p > 0 && keys[p - 1] == key)) return;
  T* row = dtable + static_cast<int64_t>(key) * dim;
  const int64_t step = static_cast<int64_t>(gridDim.y) * blockDim.x * N;
  for (int64_t c = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * N; c < dim; c += step) {
    float acc[N];
    load_floats<N>(row + c, acc);
    constexpr int kUnroll = 8;
    for (int64_t q = p;; q += kUnroll) {
      bool in_run[kUnroll];
      int64_t src[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        in_run[u] = q + u < n && keys[q + u] == key;  // the run is a prefix: keys are sorted
        src[u] = in_run[u] ? tokens_of[q + u] : 0;
      }
      float d[kUnroll][N];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (in_run[u]) load_floats<N>(dout + src[u] * dim + c, d[u]);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (in_run[u]) {
#pragma unroll
          for (int k = 0; k < N; ++k) acc[k] += d[u][k];
        }
      }
      if (!in_run[kUnroll - 1]) break;
    }
    store_floats<N>(row + c, acc);
  }
}

// Vector width for rows of `dim` elements at a and b: 16 bytes when every row start is aligned.
template <class T>
bool rows_vectorizable(int64_t dim, const void* a, const void* b) {
  return dim % kVec16<T> == 0 && aligned(a, 16) && aligned(b, 16);
}

dim3 row_grid(int64_t rows, int64_t dim, int n_per_thread) {
  const int64_t chunks = ceil_div(ceil_div(dim, n_per_thread), kThreads);
  return dim3(static_cast<unsigned>(rows), static_cast<unsigned>(chunks < 65535 ? chunks : 65535));
}

void check_vocab_args(const char* op, const Tensor& table, int64_t n) {
  if (table.dim() != 2) fail(op, std::string("the table ") + table.str() + " should be [rows, dim]");
  if (n > INT32_MAX || table.size(0) >= INT32_MAX)
    fail(op, "more than 2^31 - 1 tokens or table rows are not supported on the GPU");
}

}  // namespace

void embedding_forward(const Tensor& tokens, const Tensor& table, Tensor& out, int64_t row_begin,
                       int64_t total_vocab) {
  const char* op = "embedding_forward";
  const Device dev = table.device();
  expect_floating(op, "table", table);
  expect(op, "tokens", tokens, dev, DType::I32);
  expect(op, "out", out, dev, table.dtype());
  const int64_t n = tokens.numel();
  check_vocab_args(op, table, n);
  const int64_t vocab = table.size(0), dim = table.size(1);
  expect_numel(op, "out", out, n * dim);
  if (n == 0 || dim == 0) return;
  const int64_t total = total_vocab < 0 ? vocab : total_vocab;
  dispatch_floating(op, "table", table, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* tab = ptr<const T>(table);
    T* o = ptr<T>(out);
    const int32_t* tok = ptr<const int32_t>(tokens);
    if (rows_vectorizable<T>(dim, tab, o)) {
      constexpr int N = kVec16<T>;
      embedding_forward_kernel<T, N><<<row_grid(n, dim, N), kThreads, 0, stream()>>>(
          tok, tab, o, vocab, dim, row_begin, total);
    } else {
      embedding_forward_kernel<T, 1><<<row_grid(n, dim, 1), kThreads, 0, stream()>>>(
          tok, tab, o, vocab, dim, row_begin, total);
    }
    LLM_CUDA_CHECK(cudaGetLastError());
  });
}

void embedding_backward(const Tensor& tokens, const Tensor& dout, Tensor& dtable, int64_t row_begin,
                        int64_t total_vocab) {
  const char* op = "embedding_backward";
  const Device dev = dout.device();
  expect_floating(op, "dout", dout);
  expect(op, "tokens", tokens, dev, DType::I32);
  expect(op, "dtable", dtable, dev, dout.dtype());
  const int64_t n = tokens.numel();
  check_vocab_args(op, dtable, n);
  const int64_t vocab = dtable.size(0), dim = dtable.size(1);
  expect_numel(op, "dout", dout, n * dim);
  if (n == 0 || dim == 0 || vocab == 0) return;
  const int64_t total = total_vocab < 0 ? vocab : total_vocab;
  cudaStream_t st = stream();

  // Scratch: keys and values in and out of the sort, then CUB's temporary storage.
  const int end_bit = std::bit_width(static_cast<uint32_t>(vocab));  // the sentinel `vocab` fits
  size_t cub_bytes = 0;
  LLM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, cub_bytes, static_cast<const uint32_t*>(nullptr),
                                                 static_cast<uint32_t*>(nullptr),
                                                 static_cast<const int32_t*>(nullptr),
                                                 static_cast<int32_t*>(nullptr), static_cast<int>(n), 0, end_bit,
                                                 st));
  const size_t arr = static_cast<size_t>(ceil_div(n * 4, 256) * 256);
  Tensor scratch = device_scratch(dev, 4 * arr + cub_bytes);
  char* base = static_cast<char*>(scratch.raw());
  uint32_t* keys_in = reinterpret_cast<uint32_t*>(base);
  uint32_t* keys_out = reinterpret_cast<uint32_t*>(base + arr);
  int32_t* vals_in = reinterpret_cast<int32_t*>(base + 2 * arr);
  int32_t* vals_out = reinterpret_cast<int32_t*>(base + 3 * arr);
  void* cub_tmp = base + 4 * arr;

  embedding_keys_kernel<<<static_cast<unsigned>(ceil_div(n, 256)), 256, 0, st>>>(
      ptr<const int32_t>(tokens), n, vocab, row_begin, total, keys_in, vals_in);
  LLM_CUDA_CHECK(cudaGetLastError());
  LLM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_tmp, cub_bytes, keys_in, keys_out, vals_in, vals_out,
                                                 static_cast<int>(n), 0, end_bit, st));
  dispatch_floating(op, "dout", dout, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* d = ptr<const T>(dout);
    T* tab = ptr<T>(dtable);
    if (rows_vectorizable<T>(dim, d, tab)) {
      constexpr int N = kVec16<T>;
      embedding_backward_kernel<T, N><<<row_grid(n, dim, N), kThreads, 0, st>>>(keys_out, vals_out, n, d, tab,
                                                                                    vocab, dim);
    } else {
      embedding_backward_kernel<T, 1><<<row_grid(n, dim, 1), kThreads, 0, st>>>(keys_out, vals_out, n, d, tab,
                                                                                    vocab, dim);
    }
    LLM_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace llm::ops::cuda
