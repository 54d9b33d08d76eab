// Small helpers shared by the fused kernels of core/cuda/*.cu: element types and
// their conversions through fp32, 16-byte vector loads and stores, deterministic
// warp and block reductions, launch sizes, operand checks, and the staging of
// small host tables into device memory in stream order.
//
// Everything here is inline or a template: each .cu file is its own translation
// unit (no relocatable device code).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/tensor.h"

namespace llm::ops::cuda::kernels {

// ---------------------------------------------------------------------------
// Element types: float, __nv_bfloat16 and __half in device code (the same bits
// as llm::bf16 and llm::f16 on the host). Arithmetic is always in fp32; a
// 16-bit value is rounded to nearest even once, when it is stored.

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

// Elements of T in one 16-byte access.
template <class T> inline constexpr int kVec16 = static_cast<int>(16 / sizeof(T));

// N consecutive elements moved in one access (N·sizeof(T) a power of two up to 16).
template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <int N, class T>
__device__ __forceinline__ Vec<T, N> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, N>*>(p);
}
template <int N, class T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, N>& v) {
  *reinterpret_cast<Vec<T, N>*>(p) = v;
}
// Loads N elements as floats / stores N floats rounded to T.
template <int N, class T>
__device__ __forceinline__ void load_floats(const T* p, float (&f)[N]) {
  const Vec<T, N> v = load_vec<N>(p);
#pragma unroll
  for (int k = 0; k < N; ++k) f[k] = to_float(v.v[k]);
}
template <int N, class T>
__device__ __forceinline__ void store_floats(T* p, const float (&f)[N]) {
  Vec<T, N> v;
#pragma unroll
  for (int k = 0; k < N; ++k) v.v[k] = from_float<T>(f[k]);
  store_vec<N>(p, v);
}

// ---------------------------------------------------------------------------
// Reductions. The xor butterfly leaves every lane with the same value (each step
// adds the same two operands, only in swapped order, and + is commutative), and
// the tree is fixed for a given block size: results are bitwise reproducible.

struct SumOp {
  template <class T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {  // NaN-skipping, like the CPU's lane_max
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <class T, class Op>
__device__ __forceinline__ T warp_allreduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Every thread gets op over the block. blockDim.x must be a multiple of 32 and
// every thread of the block must call it (it synchronises).
template <class T, class Op>
__device__ __forceinline__ T block_allreduce(T v, Op op, T identity) {
  __shared__ T partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_allreduce(v, op);
  __syncthreads();  // a previous call's readers are done with `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : identity;
  return warp_allreduce(v, op);
}

// ---------------------------------------------------------------------------
// Host side: alignment, launch sizes, dtype dispatch.

inline bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Elements before p + k·sizeof(T) is 16-byte aligned (p is aligned to sizeof(T)).
template <class T>
inline int64_t elements_to_align16(const T* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) % 16;
  return a == 0 ? 0 : static_cast<int64_t>((16 - a) / sizeof(T));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Multiprocessors of the current device (cached per thread and device).
inline int sm_count() {
  thread_local int device = -1, count = 0;
  int d = 0;
  LLM_CUDA_CHECK(cudaGetDevice(&d));
  if (d != device) {
    LLM_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, d));
    device = d;
  }
  return count;
}

// Blocks for a grid-stride loop over `work` items of `threads` per block: enough
// to fill the device a few times over, never more than the work needs.
inline unsigned grid_for(int64_t work, int threads, int blocks_per_sm = 16) {
  const int64_t want = ceil_div(work, threads), cap = static_cast<int64_t>(sm_count()) * blocks_per_sm;
  return static_cast<unsigned>(want < 1 ? 1 : (want < cap ? want : cap));
}

template <class T> struct TypeTag { using type = T; };

// The stream every launch of these kernels goes on.
inline cudaStream_t stream() { return ::llm::cuda::current_stream(); }

// ---------------------------------------------------------------------------
// Operand checks (std::invalid_argument "ops::<op>: <operand> ...", as ops.cpp).

[[noreturn]] inline void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("ops::") + op + ": " + what);
}

inline void expect_numel(const char* op, const char* what, const Tensor& t, int64_t n) {
  if (t.numel() != n)
    fail(op, std::string(what) + " " + t.str() + " should have " + std::to_string(n) + " elements");
}

// t is defined and lives on `device` (the op's CUDA device).
inline void expect_device(const char* op, const char* what, const Tensor& t, Device device) {
  if (!t.defined()) fail(op, std::string(what) + " is undefined");
  if (!(t.device() == device))
    fail(op, std::string(what) + " " + t.str() + " is not on " + device.str() + " with the op's other operands");
}

inline void expect_dtype(const char* op, const char* what, const Tensor& t, DType want) {
  if (t.dtype() != want)
    fail(op, std::string(what) + " " + t.str() + " should be " + dtype_name(want));
}

// An activation-like operand: F32, BF16 or F16.
inline void expect_floating(const char* op, const char* what, const Tensor& t) {
  if (t.dtype() != DType::F32 && !is_half_dtype(t.dtype()))
    fail(op, std::string(what) + " " + t.str() + ": unsupported dtype on the GPU (F32, BF16 or F16)");
}

// The checks of one operand in one call: on `device`, of dtype `want`.
inline void expect(const char* op, const char* what, const Tensor& t, Device device, DType want) {
  expect_device(op, what, t, device);
  expect_dtype(op, what, t, want);
}

// Runs f(TypeTag<T>{}) with T the device element type of an F32, BF16 or F16 tensor.
template <class F>
void dispatch_floating(const char* op, const char* what, const Tensor& t, F&& f) {
  switch (t.dtype()) {
    case DType::F32: f(TypeTag<float>{}); return;
    case DType::BF16: f(TypeTag<__nv_bfloat16>{}); return;
    case DType::F16: f(TypeTag<__half>{}); return;
    default: expect_floating(op, what, t);
  }
}

template <class T> inline T* ptr(const Tensor& t) { return static_cast<T*>(t.raw()); }

// Device scratch of `bytes` (charged to Workspace; freed into the stream-ordered
// allocator when the returned tensor dies, after the launches that use it).
inline Tensor device_scratch(Device device, size_t bytes) {
  const int64_t words = static_cast<int64_t>((bytes + 3) / 4);
  return Tensor::empty({words > 0 ? words : 1}, DType::I32, MemoryCategory::Workspace, device);
}

// Copies `bytes` from host memory into device memory on `stream`, through pinned
// buffers: the copy is truly asynchronous (from pageable memory cudaMemcpyAsync
// may wait for the stream), and the caller's buffer may die at once. Each pinned
// buffer has an event recorded after the copy out of it and is reused only once
// that event has completed; while all are in flight a new one is made (a few at
// most in practice: one per copy still queued on a stream).
inline void stage_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  struct Slot {
    void* host = nullptr;
    size_t capacity = 0;
    cudaEvent_t done = nullptr;
  };
  static std::mutex mu;
  static std::map<int, std::vector<Slot>> pools;  // never freed: the CUDA context may be gone at exit
  int device = 0;
  LLM_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  std::vector<Slot>& pool = pools[device];
  Slot* slot = nullptr;
  for (Slot& s : pool) {
    const cudaError_t q = cudaEventQuery(s.done);
    if (q == cudaSuccess) {
      slot = &s;
      break;
    }
    if (q != cudaErrorNotReady) LLM_CUDA_CHECK(q);
  }
  if (!slot && pool.size() >= 64) {  // a runaway queue: wait for the oldest rather than grow
    slot = &pool.front();
    LLM_CUDA_CHECK(cudaEventSynchronize(slot->done));
  }
  if (!slot) {
    pool.emplace_back();
    slot = &pool.back();
    LLM_CUDA_CHECK(cudaEventCreateWithFlags(&slot->done, cudaEventDisableTiming));
  }
  if (bytes > slot->capacity) {  // the copy out of it has run: safe to free
    if (slot->host) LLM_CUDA_CHECK(cudaFreeHost(slot->host));
    slot->host = nullptr;
    slot->capacity = 0;
    const size_t cap = bytes < 16384 ? 16384 : 2 * bytes;
    LLM_CUDA_CHECK(cudaMallocHost(&slot->host, cap));
    slot->capacity = cap;
  }
  std::memcpy(slot->host, src, bytes);
  LLM_CUDA_CHECK(cudaMemcpyAsync(dst, slot->host, bytes, cudaMemcpyHostToDevice, stream));
  LLM_CUDA_CHECK(cudaEventRecord(slot->done, stream));
}

}  // namespace llm::ops::cuda::kernels
