// dst = src rounded to dst's dtype, between F32, BF16 and F16 on one GPU.
//
// The results equal the CPU's Tensor::convert_from bit for bit: widening is
// exact, narrowing rounds to nearest even (__float2bfloat16_rn,
// __float2half_rn), and NaNs are quieted keeping the top of their payload the
// way core/dtype.h does (the intrinsics would return one canonical NaN).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/runtime.h"

namespace llm::ops::cuda {
namespace {

// Storage tags: the element type in memory and its conversions through float.
struct F32 {
  using T = float;
  __device__ static float load(float v) { return v; }
  __device__ static float store(float f) { return f; }
};
struct BF16 {
  using T = uint16_t;
  __device__ static float load(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
  __device__ static uint16_t store(float f) {
    const uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  }
};
struct F16 {
  using T = uint16_t;
  __device__ static float load(uint16_t h) {
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu))  // NaN: keep the payload as core/dtype.h does
      return __uint_as_float((static_cast<uint32_t>(h & 0x8000u) << 16) | 0x7f800000u |
                             (static_cast<uint32_t>(h & 0x3ffu) << 13));
    return __half2float(__ushort_as_half(h));
  }
  __device__ static uint16_t store(float f) {
    const uint32_t u = __float_as_uint(f);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
      return static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7e00u | ((a >> 13) & 0x3ffu));
    return __half_as_ushort(__float2half_rn(f));
  }
};

constexpr int kVec = 8;  // elements per vector step: 16 bytes of a 16-bit type, 32 of F32

// Copies kVec elements through 16-byte loads or stores (p is 16-byte aligned).
template <class T>
__device__ void load_vec(const T* p, T (&v)[kVec]) {
  constexpr int n = kVec * sizeof(T) / 16;
  const uint4* q = reinterpret_cast<const uint4*>(p);
  uint4 r[n];
#pragma unroll
  for (int j = 0; j < n; ++j) r[j] = q[j];
  memcpy(v, r, sizeof(r));
}
template <class T>
__device__ void store_vec(T* p, const T (&v)[kVec]) {
  constexpr int n = kVec * sizeof(T) / 16;
  uint4 r[n];
  memcpy(r, v, sizeof(r));
  uint4* q = reinterpret_cast<uint4*>(p);
#pragma unroll
  for (int j = 0; j < n; ++j) q[j] = r[j];
}

// Grid-stride over vectors of kVec elements when both pointers are 16-byte
// aligned (then every vector is), element by element otherwise and for the tail.
template <class S, class D>
__global__ void convert_kernel(const typename S::T* __restrict__ src, typename D::T* __restrict__ dst, int64_t n,
                               bool vectorised) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vectorised) {
    const int64_t vecs = n / kVec;
    for (int64_t v = tid; v < vecs; v += stride) {
      typename S::T in[kVec];
      typename D::T out[kVec];
      load_vec(src + v * kVec, in);
#pragma unroll
      for (int j = 0; j < kVec; ++j) out[j] = D::store(S::load(in[j]));
      store_vec(dst + v * kVec, out);
    }
    done = vecs * kVec;
  }
  for (int64_t i = done + tid; i < n; i += stride) dst[i] = D::store(S::load(src[i]));
}

template <class S, class D>
void launch(const void* src, void* dst, int64_t n, cudaStream_t stream) {
  const bool aligned = reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  const int64_t work = aligned ? n / kVec + n % kVec : n;
  constexpr int kThreads = 256;
  // Enough blocks to fill the GPU several times over; the grid stride covers the rest.
  const int64_t blocks = std::clamp<int64_t>((work + kThreads - 1) / kThreads, 1, 16384);
  convert_kernel<S, D><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const typename S::T*>(src), static_cast<typename D::T*>(dst), n, aligned);
  LLM_CUDA_CHECK(cudaGetLastError());
}

template <class S>
void launch_to(DType d, const void* src, void* dst, int64_t n, cudaStream_t stream) {
  switch (d) {
    case DType::F32: return launch<S, F32>(src, dst, n, stream);
    case DType::BF16: return launch<S, BF16>(src, dst, n, stream);
    case DType::F16: return launch<S, F16>(src, dst, n, stream);
    default: break;
  }
}


bool gpu_floating(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

[[noreturn]] void fail(const Tensor& src, const Tensor& dst, const std::string& why) {
  throw std::invalid_argument("ops::cuda::convert: " + src.str() + " into " + dst.str() + ": " + why);
}

}  // namespace

void convert(const Tensor& src, Tensor& dst) {
  if (src.device().is_cpu() || dst.device() != src.device())
    fail(src, dst, "both tensors must be on the same CUDA device");
  if (src.numel() != dst.numel()) fail(src, dst, "element count differs");
  if (!gpu_floating(src.dtype()) || !gpu_floating(dst.dtype()))
    fail(src, dst, "conversions on the GPU are between F32, BF16 and F16 only");
  const int64_t n = src.numel();
  if (n == 0) return;
  const char* s0 = static_cast<const char*>(src.raw());
  char* d0 = static_cast<char*>(dst.raw());
  if (s0 == d0 && src.dtype() == dst.dtype()) return;  // the same buffer: nothing to do
  if (s0 < d0 + dst.nbytes() && d0 < s0 + src.nbytes()) fail(src, dst, "the buffers overlap");
  llm::cuda::DeviceGuard guard(src.device().index);
  const cudaStream_t stream = llm::cuda::current_stream();
  if (src.dtype() == dst.dtype()) {
    LLM_CUDA_CHECK(cudaMemcpyAsync(d0, s0, dst.nbytes(), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  switch (src.dtype()) {
    case DType::F32: return launch_to<F32>(dst.dtype(), s0, d0, n, stream);
    case DType::BF16: return launch_to<BF16>(dst.dtype(), s0, d0, n, stream);
    case DType::F16: return launch_to<F16>(dst.dtype(), s0, d0, n, stream);
    default: break;
  }
}

}  // namespace llm::ops::cuda
