// Reductions over whole gradient buffers on the GPU (semantics of
// core/cpu/grad_norm.h): sum_of_squares / sums_of_squares in double, and
// all_finite. 16-bit values are read directly (no converted copy).
//
// sums_of_squares is deterministic and takes one launch and one copy back for
// any number of tensors: every tensor is cut into fixed blocks of 1024 16-byte
// vectors (the cut depends only on its size and alignment, never on the device),
// each block sums its squares in double in a fixed order and a fixed tree, and
// writes its partial; the last block of a tensor to finish (a per-tensor ticket)
// adds that tensor's partials in a fixed order and tree. Squares of fp32 values
// are exact in double, so only the additions round.
// The table of tensors, the tickets and the results (zeroed) are staged to the
// device in one copy on the current stream; the results come back in one copy.
//
// all_finite tests the exponent bits (all ones: inf or NaN) of every element,
// with no early exit; one flag comes back.
//
// Bytes moved: sum_of_squares n·s (+ 8 bytes per 1024 vectors of partials);
//              all_finite n·s.
#include <vector>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/kernel_utils.cuh"

namespace llm::ops::cuda {
using namespace kernels;
namespace {

constexpr int kThreads = 256;
constexpr int64_t kBlockVecs = kThreads * 4;  // 16-byte vectors per block

enum ElemType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2 };

struct Item {
  const void* x;
  int64_t n;
  int64_t head;  // scalar elements before the 16-byte-aligned vectors
  int64_t block_begin, nblocks;
  uint8_t type;
};

// Block `local` of item s: its vectors, and for block 0 the scalar head and tail.
template <class T>
__device__ double block_squares(const Item& s, int64_t local) {
  constexpr int N = kVec16<T>;
  const T* x = static_cast<const T*>(s.x);
  const int64_t nvec = (s.n - s.head) / N, tail = s.head + nvec * N;
  const int64_t v0 = local * kBlockVecs, v1 = v0 + kBlockVecs < nvec ? v0 + kBlockVecs : nvec;
  double acc = 0.0;
  for (int64_t v = v0 + threadIdx.x; v < v1; v += kThreads) {
    float f[N];
    load_floats<N>(x + s.head + v * N, f);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const double d = f[k];
      acc = fma(d, d, acc);  // d·d is exact in double
    }
  }
  if (local == 0) {
    const int64_t nscalar = s.head + (s.n - tail);
    for (int64_t j = threadIdx.x; j < nscalar; j += kThreads) {
      const double d = to_float(x[j < s.head ? j : tail + (j - s.head)]);
      acc = fma(d, d, acc);
    }
  }
  return acc;
}

__global__ void __launch_bounds__(kThreads)
    sums_of_squares_kernel(const Item* items, int nitems, unsigned* tickets, double* results, double* partials) {
  const int64_t b = blockIdx.x;
  int lo = 0, hi = nitems - 1;  // the last item starting at or before block b
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (items[mid].block_begin <= b) lo = mid;
    else hi = mid - 1;
  }
  const Item s = items[lo];
  const int64_t local = b - s.block_begin;
  double acc;
  switch (s.type) {
    case kF32: acc = block_squares<float>(s, local); break;
    case kBF16: acc = block_squares<__nv_bfloat16>(s, local); break;
    default: acc = block_squares<__half>(s, local); break;
  }
  acc = block_allreduce(acc, SumOp{}, 0.0);
  __shared__ bool last;
  if (threadIdx.x == 0) {
    partials[b] = acc;
    __threadfence();  // the partial is visible device-wide before the ticket is taken
    last = atomicAdd(&tickets[lo], 1u) == static_cast<unsigned>(s.nblocks - 1);
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  double sum = 0.0;
  for (int64_t k = threadIdx.x; k < s.nblocks; k += kThreads) sum += __ldcg(partials + s.block_begin + k);
  sum = block_allreduce(sum, SumOp{}, 0.0);
  if (threadIdx.x == 0) results[lo] = sum;
}

// Element bits U with exponent mask kExp: an element is inf or NaN when all its exponent bits are set.
template <class U, U kExp>
__global__ void __launch_bounds__(kThreads) all_finite_kernel(const U* x, int64_t n, int64_t head, int* flag) {
  constexpr int N = 16 / sizeof(U);
  const int64_t nvec = (n - head) / N, tail = head + nvec * N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  bool bad = false;
  for (int64_t v = tid; v < nvec; v += stride) {
    const Vec<U, N> e = load_vec<N>(x + head + v * N);
#pragma unroll
    for (int k = 0; k < N; ++k) bad |= (e.v[k] & kExp) == kExp;
  }
  const int64_t nscalar = head + (n - tail);
  for (int64_t j = tid; j < nscalar; j += stride) bad |= (x[j < head ? j : tail + (j - head)] & kExp) == kExp;
  if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;  // every writer writes the same value
}

uint8_t check_item(const char* op, const Tensor& x, Device dev) {
  expect_device(op, "x", x, dev);
  switch (x.dtype()) {
    case DType::F32: return kF32;
    case DType::BF16: return kBF16;
    case DType::F16: return kF16;
    default: expect_floating(op, "x", x);
  }
  return kF32;
}

// Scalar head: elements before x is 16-byte aligned (all of them when fewer).
int64_t head_of(const void* x, int64_t n, size_t elem) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(x) % 16;
  const int64_t h = a == 0 ? 0 : static_cast<int64_t>((16 - a) / elem);
  return h < n ? h : n;
}

}  // namespace

std::vector<double> sums_of_squares(const std::vector<Tensor>& xs) {
  const char* op = "sums_of_squares";
  std::vector<double> out(xs.size(), 0.0);
  if (xs.empty()) return out;
  const Device dev = xs.front().device();
  std::vector<Item> items;
  std::vector<size_t> item_of;  // index into xs of each item
  int64_t blocks = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    const uint8_t type = check_item(op, x, dev);
    if (x.numel() == 0) continue;
    Item s{};
    s.x = x.raw();
    s.n = x.numel();
    s.type = type;
    const size_t elem = dtype_size(x.dtype());
    s.head = head_of(s.x, s.n, elem);
    const int64_t nvec = (s.n - s.head) / static_cast<int64_t>(16 / elem);
    s.nblocks = nvec > 0 ? ceil_div(nvec, kBlockVecs) : 1;
    s.block_begin = blocks;
    blocks += s.nblocks;
    items.push_back(s);
    item_of.push_back(i);
  }
  if (items.empty()) return out;
  if (blocks > INT32_MAX || items.size() > INT32_MAX) fail(op, "too many elements for one launch");

  // One staged buffer: items, tickets (0), results (0); then the partials (no init).
  const size_t k = items.size();
  const size_t items_bytes = (k * sizeof(Item) + 15) / 16 * 16, tickets_bytes = (k * sizeof(unsigned) + 15) / 16 * 16;
  const size_t staged = items_bytes + tickets_bytes + k * sizeof(double);
  std::vector<char> host(staged, 0);
  std::memcpy(host.data(), items.data(), k * sizeof(Item));
  Tensor scratch = device_scratch(dev, (staged + 15) / 16 * 16 + static_cast<size_t>(blocks) * sizeof(double));
  char* base = static_cast<char*>(scratch.raw());
  auto* tickets = reinterpret_cast<unsigned*>(base + items_bytes);
  auto* results = reinterpret_cast<double*>(base + items_bytes + tickets_bytes);
  auto* partials = reinterpret_cast<double*>(base + (staged + 15) / 16 * 16);
  cudaStream_t st = stream();
  stage_to_device(base, host.data(), staged, st);
  sums_of_squares_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, st>>>(
      reinterpret_cast<const Item*>(base), static_cast<int>(k), tickets, results, partials);
  LLM_CUDA_CHECK(cudaGetLastError());
  std::vector<double> sums(k);
  LLM_CUDA_CHECK(cudaMemcpyAsync(sums.data(), results, k * sizeof(double), cudaMemcpyDeviceToHost, st));
  LLM_CUDA_CHECK(cudaStreamSynchronize(st));
  for (size_t j = 0; j < k; ++j) out[item_of[j]] = sums[j];
  return out;
}

double sum_of_squares(const Tensor& x) { return sums_of_squares({x})[0]; }

bool all_finite(const Tensor& x) {
  const char* op = "all_finite";
  const uint8_t type = check_item(op, x, x.device());
  const int64_t n = x.numel();
  if (n == 0) return true;
  Tensor flag = device_scratch(x.device(), sizeof(int));
  cudaStream_t st = stream();
  LLM_CUDA_CHECK(cudaMemsetAsync(flag.raw(), 0, sizeof(int), st));
  int* f = ptr<int>(flag);
  if (type == kF32) {
    const auto* p = static_cast<const uint32_t*>(x.raw());
    all_finite_kernel<uint32_t, 0x7f800000u><<<grid_for(ceil_div(n, 4), kThreads), kThreads, 0, st>>>(
        p, n, head_of(p, n, 4), f);
  } else {
    const auto* p = static_cast<const uint16_t*>(x.raw());
    const int64_t head = head_of(p, n, 2);
    if (type == kBF16)
      all_finite_kernel<uint16_t, 0x7f80u><<<grid_for(ceil_div(n, 8), kThreads), kThreads, 0, st>>>(p, n, head, f);
    else
      all_finite_kernel<uint16_t, 0x7c00u><<<grid_for(ceil_div(n, 8), kThreads), kThreads, 0, st>>>(p, n, head, f);
  }
  LLM_CUDA_CHECK(cudaGetLastError());
  int bad = 0;
  LLM_CUDA_CHECK(cudaMemcpyAsync(&bad, flag.raw(), sizeof(int), cudaMemcpyDeviceToHost, st));
  LLM_CUDA_CHECK(cudaStreamSynchronize(st));
  return bad == 0;
}

}  // namespace llm::ops::cuda
