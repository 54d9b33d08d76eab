// Causal grouped-query attention on the GPU: forward, backward and decode.
//
// Two implementations share this file:
//
//  * "flash": a FlashAttention-2 style kernel pair on the tensor cores for BF16 and F16
//    with head_dim 64 or 128 (mma.sync.m16n8k16, fp32 accumulation, operands staged
//    in shared memory with cp.async and fed to the tensor cores with ldmatrix).
//  * "generic": straightforward warp-per-row kernels on the CUDA cores for every dtype
//    (F32, BF16, F16) and any head_dim <= 256. F32 always runs here (it is the reference
//    the gpu tests hold to 1e-5), and so do 16-bit shapes the flash kernels do not
//    cover (other head dims, base pointers not 16-byte aligned) and decode.
//
// Setting LLM_CUDA_ATTENTION=generic in the environment forces the generic kernels for
// 16-bit tensors too (read at every call), to cross-check the flash kernels or to get
// around them.
//
// Semantics are those of core/cpu/attention.h: q, k, v are column slices of the fused
// projection output [B·S, (H + 2G)·D] (row stride (H + 2G)·D), query head h reads kv
// group h / (H/G), query t attends to keys s <= t, scale 1/√D; out [B·S, H·D]; lse
// [B, H, S] (natural log, F32); backward ADDS dq, dk, dv into dqkv (same fused layout),
// each element rounded once to the storage dtype.
//
// ---------------------------------------------------------------------------------------
// Flash forward: one thread block (4 warps) per (query tile of 64 rows, head, batch).
//   Shared memory: Q tile [64][D+8] once, K and V tiles [64][D+8] double-buffered
//   (the load of key tile j+1 is in flight, via cp.async, while tile j is computed).
//   Rows are padded by 8 elements (16 bytes) so that the 8 row addresses of every
//   ldmatrix fall in 8 different 16-byte bank groups (a row of 128 or 256 bytes would
//   put all 8 in the same group: an 8-way conflict). D=128: 17 KB per tile, 85 KB in
//   all, so two blocks fit an SM of an H100 (228 KB) and one an A100 (164 KB).
//   Warp w owns query rows 16w..16w+15 and keeps its Q fragments in registers for the
//   whole loop; per key tile it computes S = Q·Kᵀ (16×64, fp32 in registers), the online
//   softmax in the log2 domain (row max/sum across the 4 threads of a quad by shuffles),
//   and O += P·V with P taken straight from the accumulator registers (the m16n8 C
//   fragment of two adjacent n-tiles is exactly the m16k16 A fragment of the next mma,
//   so P never touches shared memory). Only key tiles j <= the query tile are visited
//   (causal); the diagonal tile is masked element-wise. Query tiles are scheduled
//   heaviest (last) first, so the long causal rows do not end up as the tail.
//   Registers per thread at D=128: O 64 fp32, Q 32, S 32.
//
// Flash backward: one thread block (4 warps) per (key tile of 64 keys, kv group, batch).
//   K and V of the tile stay in shared memory; the block walks every query head of the
//   group and every query tile i that can see the key tile (causal), double-buffering
//   Q, dO, lse and D = rowsum(dO∘O) (computed by a small preprocessing kernel) with
//   cp.async. Warp w owns keys 16w..16w+15 and computes the transposed products
//       Sᵀ = K_w·Qᵀ,  Pᵀ = exp(Sᵀ·scale − lse),  dPᵀ = V_w·dOᵀ,  dSᵀ = Pᵀ∘(dPᵀ − D)
//   so that Pᵀ and dSᵀ are in A-fragment form for dV_w += Pᵀ·dO and dK_w += dSᵀ·Q.
//   dK and dV of the group therefore sum over its H/G query heads in registers (fp32)
//   and are added into dqkv once, at the end, by the one block that owns those rows.
//   dQ_i += dS·K_j needs dS with queries as rows: dSᵀ goes to shared memory (16-bit,
//   [64 keys][Br+8]) and is read back transposed by ldmatrix.trans; each warp then
//   atomically adds its share of the Br×D product into an fp32 scratch [B, H, S, D],
//   which a last kernel scales and adds (rounding once) into dq.
//   Query tile Br = 64 for D = 64 and 32 for D = 128 (dK and dV alone are 128 fp32
//   registers per thread at D = 128; Sᵀ and dPᵀ add Br/2 each; Br = 64 there spills).
//   ptxas (sm_90): 219 registers at D = 64, 242 at D = 128, no spills.
//   Shared memory: K, V [64][D+8], Q, dO [2][Br][D+8], dSᵀ [64][Br+8], lse and D
//   [2][Br] fp32: 64 KB at D = 64, 73.5 KB at D = 128 (two blocks per H100 SM).
//   Forward (sm_90): 130 registers at D = 64, 173 at D = 128.
// ---------------------------------------------------------------------------------------
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <atomic>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/runtime.h"

namespace llm::ops::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---------------------------------------------------------------------------------------
// Element types: conversion to and from fp32, and packing two values into the 32-bit
// registers the mma instructions take (the lower column index in the low half).

template <typename T>
struct Elem;
template <>
struct Elem<float> {
  __device__ static float to_f(float x) { return x; }
  __device__ static float from_f(float x) { return x; }
};
template <>
struct Elem<__nv_bfloat16> {
  __device__ static float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }
  __device__ static uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
  }
  __device__ static float2 unpack(uint32_t u) {
    __nv_bfloat162 v;
    memcpy(&v, &u, 4);
    return __bfloat1622float2(v);
  }
};
template <>
struct Elem<__half> {
  __device__ static float to_f(__half x) { return __half2float(x); }
  __device__ static __half from_f(float x) { return __float2half_rn(x); }
  __device__ static uint32_t pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
  }
  __device__ static float2 unpack(uint32_t u) {
    __half2 v;
    memcpy(&v, &u, 4);
    return __half22float2(v);
  }
};

// ---------------------------------------------------------------------------------------
// PTX wrappers (sm_80+).

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; zero-filled when !valid (nothing is read
// then, but the address must still be a valid global address).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  const int n = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// Four 8×8 16-bit matrices: lanes 8i..8i+7 give the row addresses of matrix i; lane l
// receives, in r[i], elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix i, or with
// .trans elements (2(l%4), l/4) and (2(l%4)+1, l/4).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// c[16×8] += a[16×16] · b[16×8] in fp32. Fragments (g = lane/4, t = lane%4):
//   a: r0 (row g, cols 2t,2t+1), r1 (row g+8, same), r2 (row g, cols 2t+8,+9), r3 (row g+8, same)
//   b: r0 (rows k 2t,2t+1, col g), r1 (rows 2t+8,+9, col g)
//   c: c0,c1 (row g, cols 2t,2t+1), c2,c3 (row g+8, same)
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x with the hardware approximation (about 2 ulp; exact 0 for -inf).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// A-operand fragment (16 rows × 16 k) from accumulator fragments c[n], c[n+1] of two
// adjacent 8-column tiles (columns become k), rounded to 16 bits.
template <typename T>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = Elem<T>::pack(c0[0], c0[1]);
  a[1] = Elem<T>::pack(c0[2], c0[3]);
  a[2] = Elem<T>::pack(c1[0], c1[1]);
  a[3] = Elem<T>::pack(c1[2], c1[3]);
}

// ldmatrix addressing. All tiles are row-major in shared memory with row stride `lds`
// elements; lane = this thread's lane.
//  A operand (16 rows × 16 k) at (row0, k0) of a [row][k] tile:
template <typename T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* s, int lds, int row0, int k0, int lane) {
  ldsm_x4(a, s + (row0 + (lane & 15)) * lds + k0 + (lane >> 4) * 8);
}
//  B operands of two adjacent n-tiles (n0..n0+15) × k16 at k0, from a [n][k] tile
//  (B = tileᵀ, e.g. K for S = Q·Kᵀ): b[0],b[1] for n0..n0+7, b[2],b[3] for n0+8..n0+15.
template <typename T>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const T* s, int lds, int n0, int k0, int lane) {
  ldsm_x4(b, s + (n0 + (lane & 7) + (lane >> 4) * 8) * lds + k0 + ((lane >> 3) & 1) * 8);
}
//  B operands of two adjacent n-tiles from a [k][n] tile (e.g. V for O = P·V), transposed
//  on the fly by ldmatrix.trans.
template <typename T>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const T* s, int lds, int k0, int n0, int lane) {
  ldsm_x4_trans(b, s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * lds + n0 + (lane >> 4) * 8);
}
//  A operand (16 rows × 16 k) at (row0, k0) of a tile stored transposed, [k][row].
template <typename T>
__device__ __forceinline__ void load_a_t(uint32_t (&a)[4], const T* s, int lds, int row0, int k0, int lane) {
  ldsm_x4_trans(a, s + (k0 + (lane & 7) + (lane >> 4) * 8) * lds + row0 + ((lane >> 3) & 1) * 8);
}

// ROWS × D tile of rows [row0, row0+ROWS) of a strided global matrix into shared memory
// (row stride LDS), asynchronously; rows >= nrows are zero-filled (masked tails never
// see garbage: 0·NaN would poison an mma).
template <typename T, int ROWS, int D, int NT>
__device__ __forceinline__ void load_tile(T* s, int lds, const T* g, int64_t ld, int row0, int nrows, int tid) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int c = tid; c < ROWS * kChunks; c += NT) {
    const int r = c / kChunks, cc = c % kChunks, row = row0 + r;
    const bool ok = row < nrows;
    cp_async16(s + r * lds + cc * 8, ok ? g + static_cast<int64_t>(row) * ld + cc * 8 : g, ok);
  }
}

struct FlashArgs {
  int B, S, H, G;
  int64_t ld;  // row stride of qkv / dqkv: (H + 2G)·D
  float scale;
};

// ---------------------------------------------------------------------------------------
// Flash forward.

template <int D>
struct FwdCfg {
  static constexpr int kBr = 64, kBc = 64, kThreads = 128, kLds = D + 8;
  template <typename T>
  static constexpr size_t smem_bytes() {
    return static_cast<size_t>(kBr + 4 * kBc) * kLds * sizeof(T);
  }
};

template <typename T, int D>
__global__ void __launch_bounds__(128) flash_fwd_kernel(const T* __restrict__ qkv, T* __restrict__ out,
                                                        float* __restrict__ lse, FlashArgs p) {
  using C = FwdCfg<D>;
  constexpr int Br = C::kBr, Bc = C::kBc, LDS = C::kLds, NT = C::kThreads;
  static_assert(D % 16 == 0 && Br == 16 * (NT / 32), "one warp per 16 query rows");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [Br][LDS]
  T* sK = sQ + Br * LDS;                   // [2][Bc][LDS]
  T* sV = sK + 2 * Bc * LDS;               // [2][Bc][LDS]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gr = lane >> 2, tq = lane & 3;
  const int qt = gridDim.x - 1 - blockIdx.x;  // heaviest query tiles first
  const int h = blockIdx.y, b = blockIdx.z, grp = h / (p.H / p.G);
  const int S = p.S, q0 = qt * Br;
  const int64_t HD = static_cast<int64_t>(p.H) * D;
  const T* Qg = qkv + static_cast<int64_t>(b) * S * p.ld + static_cast<int64_t>(h) * D;
  const T* Kg = qkv + static_cast<int64_t>(b) * S * p.ld + HD + static_cast<int64_t>(grp) * D;
  const T* Vg = Kg + static_cast<int64_t>(p.G) * D;
  const int n_kt = (min(q0 + Br, S) - 1) / Bc + 1;  // key tiles up to the last visible key

  load_tile<T, Br, D, NT>(sQ, LDS, Qg, p.ld, q0, S, tid);
  load_tile<T, Bc, D, NT>(sK, LDS, Kg, p.ld, 0, S, tid);
  load_tile<T, Bc, D, NT>(sV, LDS, Vg, p.ld, 0, S, tid);
  cp_async_commit();

  uint32_t qf[D / 16][4];
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const float c = p.scale * kLog2e;  // scores in the log2 domain: exp(x·scale) = 2^(x·c)
  const int row_lo = q0 + warp * 16;  // this warp's first query

  for (int j = 0; j < n_kt; ++j) {
    cp_async_wait_all();
    __syncthreads();  // tile j visible to all; everyone is done with buffer (j+1)&1
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) load_a(qf[kk], sQ, LDS, warp * 16, kk * 16, lane);
    }
    if (j + 1 < n_kt) {
      const int nb = (j + 1) & 1;
      load_tile<T, Bc, D, NT>(sK + nb * Bc * LDS, LDS, Kg, p.ld, (j + 1) * Bc, S, tid);
      load_tile<T, Bc, D, NT>(sV + nb * Bc * LDS, LDS, Vg, p.ld, (j + 1) * Bc, S, tid);
    }
    cp_async_commit();
    const T* k_s = sK + (j & 1) * Bc * LDS;
    const T* v_s = sV + (j & 1) * Bc * LDS;

    // S = Q Kᵀ for this warp's 16 rows × Bc keys.
    float s[Bc / 8][4];
#pragma unroll
    for (int n = 0; n < Bc / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < Bc / 16; ++np) {
        uint32_t bk[4];
        load_b_nk(bk, k_s, LDS, np * 16, kk * 16, lane);
        mma16816<T>(s[2 * np], qf[kk], bk[0], bk[1]);
        mma16816<T>(s[2 * np + 1], qf[kk], bk[2], bk[3]);
      }
    }
    // Causal mask where some key of the tile lies after some query of the warp.
    if (j * Bc + Bc - 1 > row_lo) {
#pragma unroll
      for (int n = 0; n < Bc / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = j * Bc + n * 8 + 2 * tq + (e & 1), row = row_lo + gr + 8 * (e >> 1);
          if (key > row) s[n][e] = -INFINITY;
        }
    }
    // Online softmax (rows gr and gr+8 of the warp; a quad of 4 threads shares a row).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < Bc / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
      const float m_new = fmaxf(m[r], mx * c);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row with no visible key yet
      const float alpha = fast_exp2(m[r] - m_use);
      m[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < Bc / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float pv = fast_exp2(fmaf(s[n][2 * r + e], c, -m_use));
          s[n][2 * r + e] = pv;
          sum += pv;
        }
      l[r] = l[r] * alpha + sum;  // per-thread partial; the quad's sum is taken at the end
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        o[n][2 * r] *= alpha;
        o[n][2 * r + 1] *= alpha;
      }
    }
    // O += P V.
#pragma unroll
    for (int kk = 0; kk < Bc / 16; ++kk) {
      uint32_t a[4];
      acc_to_a<T>(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bv[4];
        load_b_kn(bv, v_s, LDS, kk * 16, dp * 16, lane);
        mma16816<T>(o[2 * dp], a, bv[0], bv[1]);
        mma16816<T>(o[2 * dp + 1], a, bv[2], bv[3]);
      }
    }
  }

  // Normalise, stage the warp's 16 rows in its own rows of sQ (only this warp ever read
  // them), then store 16 bytes per thread.
  float inv[2], lse_v[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lt = l[r];
    lt += __shfl_xor_sync(kFullMask, lt, 1);
    lt += __shfl_xor_sync(kFullMask, lt, 2);
    inv[r] = lt > 0.f ? 1.f / lt : 0.f;
    lse_v[r] = (m[r] + log2f(lt)) * kLn2;
  }
  T* so = sQ + warp * 16 * LDS;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    *reinterpret_cast<uint32_t*>(so + gr * LDS + n * 8 + 2 * tq) = Elem<T>::pack(o[n][0] * inv[0], o[n][1] * inv[0]);
    *reinterpret_cast<uint32_t*>(so + (gr + 8) * LDS + n * 8 + 2 * tq) =
        Elem<T>::pack(o[n][2] * inv[1], o[n][3] * inv[1]);
  }
  __syncwarp();
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int c2 = lane; c2 < 16 * kChunks; c2 += 32) {
    const int r = c2 / kChunks, cc = c2 % kChunks, row = row_lo + r;
    if (row < S)
      *reinterpret_cast<uint4*>(out + (static_cast<int64_t>(b) * S + row) * HD + static_cast<int64_t>(h) * D + cc * 8) =
          *reinterpret_cast<const uint4*>(so + r * LDS + cc * 8);
  }
  if (tq == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row_lo + gr + 8 * r;
      if (row < S) lse[(static_cast<int64_t>(b) * p.H + h) * S + row] = lse_v[r];
    }
  }
}

// ---------------------------------------------------------------------------------------
// Flash backward.

template <int D>
struct BwdCfg {
  static constexpr int kBc = 64, kThreads = 128, kLds = D + 8;
  static constexpr int kBr = D <= 64 ? 64 : 32;  // queries per step (register budget)
  static constexpr int kLdsS = kBr + 8;          // dSᵀ tile [kBc][kBr + 8]
  template <typename T>
  static constexpr size_t smem_bytes() {
    return static_cast<size_t>(2 * kBc + 4 * kBr) * kLds * sizeof(T) + static_cast<size_t>(kBc) * kLdsS * sizeof(T) +
           static_cast<size_t>(4 * kBr) * sizeof(float);
  }
};

template <typename T, int D>
__global__ void __launch_bounds__(128) flash_bwd_kernel(const T* __restrict__ qkv, const T* __restrict__ dout,
                                                        const float* __restrict__ lse,
                                                        const float* __restrict__ dvec, float* __restrict__ dq_acc,
                                                        T* __restrict__ dqkv, FlashArgs p) {
  using C = BwdCfg<D>;
  constexpr int Bc = C::kBc, Br = C::kBr, LDS = C::kLds, LDSS = C::kLdsS, NT = C::kThreads;
  static_assert(Bc == 16 * (NT / 32), "one warp per 16 keys");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);  // [Bc][LDS]
  T* sV = sK + Bc * LDS;                   // [Bc][LDS]
  T* sQ = sV + Bc * LDS;                   // [2][Br][LDS]
  T* sdO = sQ + 2 * Br * LDS;              // [2][Br][LDS]
  T* sdS = sdO + 2 * Br * LDS;             // [Bc][LDSS]: dSᵀ of the current step
  float* sL = reinterpret_cast<float*>(sdS + Bc * LDSS);  // [2][Br] lse
  float* sDv = sL + 2 * Br;                               // [2][Br] rowsum(dO∘O)

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gr = lane >> 2, tq = lane & 3;
  const int kt = blockIdx.x, grp = blockIdx.y, b = blockIdx.z;
  const int S = p.S, H = p.H, rep = H / p.G, k0 = kt * Bc;
  const int64_t HD = static_cast<int64_t>(H) * D;
  const T* base = qkv + static_cast<int64_t>(b) * S * p.ld;
  const T* Kg = base + HD + static_cast<int64_t>(grp) * D;
  const T* Vg = Kg + static_cast<int64_t>(p.G) * D;
  const int i_begin = k0 / Br;                 // first query tile that sees key k0
  const int n_i = (S + Br - 1) / Br - i_begin;  // query tiles per head
  const int n_it = rep * n_i;

  auto issue = [&](int it, int buf) {
    const int h = grp * rep + it / n_i, q0 = (i_begin + it % n_i) * Br;
    load_tile<T, Br, D, NT>(sQ + buf * Br * LDS, LDS, base + static_cast<int64_t>(h) * D, p.ld, q0, S, tid);
    load_tile<T, Br, D, NT>(sdO + buf * Br * LDS, LDS,
                            dout + static_cast<int64_t>(b) * S * HD + static_cast<int64_t>(h) * D, HD, q0, S, tid);
    const int64_t row0 = (static_cast<int64_t>(b) * H + h) * S;
    for (int c2 = tid; c2 < Br; c2 += NT) {
      const bool ok = q0 + c2 < S;
      cp_async4(sL + buf * Br + c2, ok ? lse + row0 + q0 + c2 : lse, ok);
      cp_async4(sDv + buf * Br + c2, ok ? dvec + row0 + q0 + c2 : dvec, ok);
    }
  };

  load_tile<T, Bc, D, NT>(sK, LDS, Kg, p.ld, k0, S, tid);
  load_tile<T, Bc, D, NT>(sV, LDS, Vg, p.ld, k0, S, tid);
  issue(0, 0);
  cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  const float c = p.scale * kLog2e;
  const int key_lo = k0 + warp * 16;  // this warp's first key
  // dQ: warp w computes rows (w % RG)·16.. of the Br×D product, columns [part·DW, +DW).
  constexpr int RG = Br / 16, DW = D / (4 / RG);
  static_assert(DW % 32 == 0, "dQ columns in chunks of 32");
  const int dq_rg = warp % RG, dq_c0 = (warp / RG) * DW;

  for (int it = 0; it < n_it; ++it) {
    const int buf = it & 1;
    cp_async_wait_all();
    __syncthreads();  // step `it` visible; everyone is done with buffer buf^1 and sdS
    if (it + 1 < n_it) issue(it + 1, buf ^ 1);
    cp_async_commit();
    const int h = grp * rep + it / n_i, q0 = (i_begin + it % n_i) * Br;
    const T* q_s = sQ + buf * Br * LDS;
    const T* do_s = sdO + buf * Br * LDS;
    const float* l_s = sL + buf * Br;
    const float* dv_s = sDv + buf * Br;

    // Sᵀ = K_w Qᵀ and dPᵀ = V_w dOᵀ (16 keys × Br queries each).
    float st[Br / 8][4], dpt[Br / 8][4];
#pragma unroll
    for (int n = 0; n < Br / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ak[4], av[4];
      load_a(ak, sK, LDS, warp * 16, kk * 16, lane);
      load_a(av, sV, LDS, warp * 16, kk * 16, lane);
#pragma unroll
      for (int np = 0; np < Br / 16; ++np) {
        uint32_t bq[4], bo[4];
        load_b_nk(bq, q_s, LDS, np * 16, kk * 16, lane);
        mma16816<T>(st[2 * np], ak, bq[0], bq[1]);
        mma16816<T>(st[2 * np + 1], ak, bq[2], bq[3]);
        load_b_nk(bo, do_s, LDS, np * 16, kk * 16, lane);
        mma16816<T>(dpt[2 * np], av, bo[0], bo[1]);
        mma16816<T>(dpt[2 * np + 1], av, bo[2], bo[3]);
      }
    }
    // Pᵀ = exp(Sᵀ·scale − lse) (0 where key > query, and for query rows past S),
    // dSᵀ = Pᵀ ∘ (dPᵀ − D).
    const bool need_mask = key_lo + 15 > q0 || q0 + Br > S;
#pragma unroll
    for (int n = 0; n < Br / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = n * 8 + 2 * tq + (e & 1), key = key_lo + gr + 8 * (e >> 1);
        float pv = fast_exp2(fmaf(st[n][e], c, -l_s[qi] * kLog2e));
        if (need_mask && (key > q0 + qi || q0 + qi >= S)) pv = 0.f;
        st[n][e] = pv;
        dpt[n][e] = pv * (dpt[n][e] - dv_s[qi]);
      }
    // dV_w += Pᵀ dO and dK_w += dSᵀ Q (k = queries).
#pragma unroll
    for (int kk = 0; kk < Br / 16; ++kk) {
      uint32_t ap[4], as[4];
      acc_to_a<T>(ap, st[2 * kk], st[2 * kk + 1]);
      acc_to_a<T>(as, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bo[4], bq[4];
        load_b_kn(bo, do_s, LDS, kk * 16, dp * 16, lane);
        mma16816<T>(dv[2 * dp], ap, bo[0], bo[1]);
        mma16816<T>(dv[2 * dp + 1], ap, bo[2], bo[3]);
        load_b_kn(bq, q_s, LDS, kk * 16, dp * 16, lane);
        mma16816<T>(dk[2 * dp], as, bq[0], bq[1]);
        mma16816<T>(dk[2 * dp + 1], as, bq[2], bq[3]);
      }
    }
    // dSᵀ to shared memory for dQ.
#pragma unroll
    for (int n = 0; n < Br / 8; ++n) {
      *reinterpret_cast<uint32_t*>(sdS + (warp * 16 + gr) * LDSS + n * 8 + 2 * tq) = Elem<T>::pack(dpt[n][0], dpt[n][1]);
      *reinterpret_cast<uint32_t*>(sdS + (warp * 16 + gr + 8) * LDSS + n * 8 + 2 * tq) =
          Elem<T>::pack(dpt[n][2], dpt[n][3]);
    }
    __syncthreads();
    // dQ_i += dS K_j (unscaled), 32 columns at a time, added atomically into the fp32 scratch.
    float* dq_h = dq_acc + (static_cast<int64_t>(b) * H + h) * S * D;
#pragma unroll
    for (int d0 = dq_c0; d0 < dq_c0 + DW; d0 += 32) {
      float acc[4][4];
#pragma unroll
      for (int n = 0; n < 4; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < Bc / 16; ++kk) {
        uint32_t a[4];
        load_a_t(a, sdS, LDSS, dq_rg * 16, kk * 16, lane);
#pragma unroll
        for (int dp = 0; dp < 2; ++dp) {
          uint32_t bk[4];
          load_b_kn(bk, sK, LDS, kk * 16, d0 + dp * 16, lane);
          mma16816<T>(acc[2 * dp], a, bk[0], bk[1]);
          mma16816<T>(acc[2 * dp + 1], a, bk[2], bk[3]);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int qrow = q0 + dq_rg * 16 + gr + 8 * r;
        if (qrow < S) {
          float* dst = dq_h + static_cast<int64_t>(qrow) * D + d0 + 2 * tq;
#pragma unroll
          for (int n = 0; n < 4; ++n) {
            atomicAdd(dst + n * 8, acc[n][2 * r]);
            atomicAdd(dst + n * 8 + 1, acc[n][2 * r + 1]);
          }
        }
      }
    }
  }

  // dK (times scale) and dV into dqkv, once per element.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key_lo + gr + 8 * r;
    if (key >= S) continue;
    T* dk_row = dqkv + (static_cast<int64_t>(b) * S + key) * p.ld + HD + static_cast<int64_t>(grp) * D + 2 * tq;
    T* dv_row = dk_row + static_cast<int64_t>(p.G) * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      uint32_t* pk = reinterpret_cast<uint32_t*>(dk_row + n * 8);
      uint32_t* pv = reinterpret_cast<uint32_t*>(dv_row + n * 8);
      const float2 ok = Elem<T>::unpack(*pk), ov = Elem<T>::unpack(*pv);
      *pk = Elem<T>::pack(ok.x + p.scale * dk[n][2 * r], ok.y + p.scale * dk[n][2 * r + 1]);
      *pv = Elem<T>::pack(ov.x + dv[n][2 * r], ov.y + dv[n][2 * r + 1]);
    }
  }
}

// dq[b, s, h, :] += scale · acc[b, h, s, :], rounded once.
template <typename T>
__global__ void dq_finalize_kernel(const float* __restrict__ acc, T* __restrict__ dqkv, int B, int S, int H, int D,
                                   int64_t ld, float scale) {
  const int64_t n = static_cast<int64_t>(B) * S * H * D;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(e % D);
    const int h = static_cast<int>((e / D) % H);
    const int64_t row = e / (static_cast<int64_t>(H) * D);
    const int64_t b = row / S, s = row % S;
    T* dst = dqkv + row * ld + static_cast<int64_t>(h) * D + d;
    *dst = Elem<T>::from_f(Elem<T>::to_f(*dst) + scale * acc[((b * H + h) * S + s) * D + d]);
  }
}

// ---------------------------------------------------------------------------------------
// Shared by both backward paths: dvec[b, h, s] = Σ_d dO[b,s,h,d]·O[b,s,h,d] in fp32
// (from the stored values, as the CPU kernels do). One warp per (row, head).

template <typename T>
__global__ void dvec_kernel(const T* __restrict__ dout, const T* __restrict__ out, float* __restrict__ dvec, int B,
                            int S, int H, int D) {
  const int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (w >= static_cast<int64_t>(B) * S * H) return;
  const int64_t row = w / H;
  const int h = static_cast<int>(w % H);
  const int64_t off = row * H * D + static_cast<int64_t>(h) * D;
  float sum = 0.f;
  for (int d = lane; d < D; d += 32) sum += Elem<T>::to_f(dout[off + d]) * Elem<T>::to_f(out[off + d]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(kFullMask, sum, o);
  if (lane == 0) dvec[(row / S * H + h) * S + row % S] = sum;
}

// ---------------------------------------------------------------------------------------
// Generic kernels: one warp per query row (forward, dq) or per key row (dk, dv). Lane l
// holds elements d = l + 32k (k < 8, so D <= 256) of the row's accumulators; the row
// being dotted against lives in shared memory as fp32, and keys (queries) are taken 32
// at a time, one per lane, for the scores. Plain fp32 with expf/logf: the F32 results
// agree with the CPU kernels to rounding.

constexpr int kGenWarps = 4;
constexpr int kGenMaxD = 256;
constexpr int kGenKpl = kGenMaxD / 32;

template <typename T>
struct GenFwdArgs {
  const T* q;
  const T* k;
  const T* v;
  T* out;
  float* lse;  // may be null (decode)
  int64_t ldq, ldk, ldv, ldo;
  int B, Tq, Tk, H, G, D;
  float scale;
};

template <typename T>
__device__ __forceinline__ float dot_row(const float* a, const T* b, int D) {
  float s = 0.f;
  for (int d = 0; d < D; ++d) s = fmaf(a[d], Elem<T>::to_f(b[d]), s);
  return s;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFullMask, x, o);
  return x;
}

// Query t (absolute position Tk − Tq + t) of head h attends to keys 0..pos.
template <typename T>
__global__ void __launch_bounds__(kGenWarps * 32) gen_fwd_kernel(GenFwdArgs<T> a) {
  __shared__ float sq_all[kGenWarps][kGenMaxD];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t w = blockIdx.x * static_cast<int64_t>(kGenWarps) + warp;
  if (w >= static_cast<int64_t>(a.B) * a.H * a.Tq) return;
  const int t = a.Tq - 1 - static_cast<int>(w % a.Tq);  // longest rows first
  const int64_t bh = w / a.Tq;
  const int h = static_cast<int>(bh % a.H), b = static_cast<int>(bh / a.H);
  const int g = h / (a.H / a.G), D = a.D;
  float* sq = sq_all[warp];
  const T* qrow = a.q + (static_cast<int64_t>(b) * a.Tq + t) * a.ldq + static_cast<int64_t>(h) * D;
  for (int d = lane; d < D; d += 32) sq[d] = Elem<T>::to_f(qrow[d]);
  __syncwarp();
  const T* kb = a.k + static_cast<int64_t>(b) * a.Tk * a.ldk + static_cast<int64_t>(g) * D;
  const T* vb = a.v + static_cast<int64_t>(b) * a.Tk * a.ldv + static_cast<int64_t>(g) * D;
  const int n_keys = a.Tk - a.Tq + t + 1;
  float o[kGenKpl];
#pragma unroll
  for (int k = 0; k < kGenKpl; ++k) o[k] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int c0 = 0; c0 < n_keys; c0 += 32) {
    const int key = c0 + lane;
    const float s = key < n_keys ? dot_row(sq, kb + key * a.ldk, D) * a.scale : -INFINITY;
    const float m_new = fmaxf(m, warp_max(s));  // finite: key c0 is visible
    const float alpha = expf(m - m_new);
    const float pv = key < n_keys ? expf(s - m_new) : 0.f;
    l = l * alpha + warp_sum(pv);
    m = m_new;
    const int n = min(32, n_keys - c0);
#pragma unroll
    for (int k = 0; k < kGenKpl; ++k) o[k] *= alpha;
    for (int jj = 0; jj < n; ++jj) {
      const float pj = __shfl_sync(kFullMask, pv, jj);
      const T* vrow = vb + static_cast<int64_t>(c0 + jj) * a.ldv;
#pragma unroll
      for (int k = 0; k < kGenKpl; ++k) {
        const int d = lane + 32 * k;
        if (d < D) o[k] = fmaf(pj, Elem<T>::to_f(vrow[d]), o[k]);
      }
    }
  }
  T* orow = a.out + (static_cast<int64_t>(b) * a.Tq + t) * a.ldo + static_cast<int64_t>(h) * D;
  const float inv = 1.f / l;
#pragma unroll
  for (int k = 0; k < kGenKpl; ++k) {
    const int d = lane + 32 * k;
    if (d < D) orow[d] = Elem<T>::from_f(o[k] * inv);
  }
  if (a.lse != nullptr && lane == 0) a.lse[(static_cast<int64_t>(b) * a.H + h) * a.Tq + t] = m + logf(l);
}

template <typename T>
struct GenBwdArgs {
  const T* qkv;
  const T* dout;
  const float* lse;
  const float* dvec;
  T* dqkv;
  int64_t ld;
  int B, S, H, G, D;
  float scale;
};

// dq_i += scale · Σ_{j<=i} dS_ij k_j, dS_ij = P_ij (dO_i·v_j − D_i). One warp per (b, h, i).
template <typename T>
__global__ void __launch_bounds__(kGenWarps * 32) gen_bwd_dq_kernel(GenBwdArgs<T> a) {
  __shared__ float sbuf[kGenWarps][2][kGenMaxD];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t w = blockIdx.x * static_cast<int64_t>(kGenWarps) + warp;
  if (w >= static_cast<int64_t>(a.B) * a.H * a.S) return;
  const int i = a.S - 1 - static_cast<int>(w % a.S);
  const int64_t bh = w / a.S;
  const int h = static_cast<int>(bh % a.H), b = static_cast<int>(bh / a.H);
  const int g = h / (a.H / a.G), D = a.D;
  const int64_t HD = static_cast<int64_t>(a.H) * D;
  float* sq = sbuf[warp][0];
  float* sdo = sbuf[warp][1];
  const T* base = a.qkv + static_cast<int64_t>(b) * a.S * a.ld;
  const T* qrow = base + static_cast<int64_t>(i) * a.ld + static_cast<int64_t>(h) * D;
  const T* dorow = a.dout + (static_cast<int64_t>(b) * a.S + i) * HD + static_cast<int64_t>(h) * D;
  for (int d = lane; d < D; d += 32) {
    sq[d] = Elem<T>::to_f(qrow[d]);
    sdo[d] = Elem<T>::to_f(dorow[d]);
  }
  __syncwarp();
  const int64_t stat = (static_cast<int64_t>(b) * a.H + h) * a.S + i;
  const float lse_i = a.lse[stat], dv_i = a.dvec[stat];
  const T* kb = base + HD + static_cast<int64_t>(g) * D;
  const T* vb = kb + static_cast<int64_t>(a.G) * D;
  float acc[kGenKpl];
#pragma unroll
  for (int k = 0; k < kGenKpl; ++k) acc[k] = 0.f;
  for (int c0 = 0; c0 <= i; c0 += 32) {
    const int key = c0 + lane;
    float ds = 0.f;
    if (key <= i) {
      const float s = dot_row(sq, kb + key * a.ld, D) * a.scale;
      const float dp = dot_row(sdo, vb + key * a.ld, D);
      ds = expf(s - lse_i) * (dp - dv_i);
    }
    const int n = min(32, i - c0 + 1);
    for (int jj = 0; jj < n; ++jj) {
      const float dsj = __shfl_sync(kFullMask, ds, jj);
      const T* krow = kb + static_cast<int64_t>(c0 + jj) * a.ld;
#pragma unroll
      for (int k = 0; k < kGenKpl; ++k) {
        const int d = lane + 32 * k;
        if (d < D) acc[k] = fmaf(dsj, Elem<T>::to_f(krow[d]), acc[k]);
      }
    }
  }
  T* dqrow = a.dqkv + (static_cast<int64_t>(b) * a.S + i) * a.ld + static_cast<int64_t>(h) * D;
#pragma unroll
  for (int k = 0; k < kGenKpl; ++k) {
    const int d = lane + 32 * k;
    if (d < D) dqrow[d] = Elem<T>::from_f(Elem<T>::to_f(dqrow[d]) + a.scale * acc[k]);
  }
}

// dk_j += scale · Σ_h Σ_{i>=j} dS_ij q_i, dv_j += Σ_h Σ_{i>=j} P_ij dO_i over the query
// heads h of group g. One warp per (b, g, j): deterministic, no atomics.
template <typename T>
__global__ void __launch_bounds__(kGenWarps * 32) gen_bwd_dkdv_kernel(GenBwdArgs<T> a) {
  __shared__ float sbuf[kGenWarps][2][kGenMaxD];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t w = blockIdx.x * static_cast<int64_t>(kGenWarps) + warp;
  if (w >= static_cast<int64_t>(a.B) * a.G * a.S) return;
  const int j = static_cast<int>(w % a.S);  // small j: most work, scheduled first
  const int64_t bg = w / a.S;
  const int g = static_cast<int>(bg % a.G), b = static_cast<int>(bg / a.G);
  const int D = a.D, rep = a.H / a.G;
  const int64_t HD = static_cast<int64_t>(a.H) * D;
  float* sk = sbuf[warp][0];
  float* sv = sbuf[warp][1];
  const T* base = a.qkv + static_cast<int64_t>(b) * a.S * a.ld;
  const T* krow = base + static_cast<int64_t>(j) * a.ld + HD + static_cast<int64_t>(g) * D;
  const T* vrow = krow + static_cast<int64_t>(a.G) * D;
  for (int d = lane; d < D; d += 32) {
    sk[d] = Elem<T>::to_f(krow[d]);
    sv[d] = Elem<T>::to_f(vrow[d]);
  }
  __syncwarp();
  float adk[kGenKpl], adv[kGenKpl];
#pragma unroll
  for (int k = 0; k < kGenKpl; ++k) adk[k] = adv[k] = 0.f;
  for (int hh = 0; hh < rep; ++hh) {
    const int h = g * rep + hh;
    const T* qb = base + static_cast<int64_t>(h) * D;
    const T* dob = a.dout + static_cast<int64_t>(b) * a.S * HD + static_cast<int64_t>(h) * D;
    const int64_t stat0 = (static_cast<int64_t>(b) * a.H + h) * a.S;
    for (int c0 = j; c0 < a.S; c0 += 32) {
      const int i = c0 + lane;
      float pv = 0.f, ds = 0.f;
      if (i < a.S) {
        const float s = dot_row(sk, qb + static_cast<int64_t>(i) * a.ld, D) * a.scale;
        const float dp = dot_row(sv, dob + static_cast<int64_t>(i) * HD, D);
        pv = expf(s - a.lse[stat0 + i]);
        ds = pv * (dp - a.dvec[stat0 + i]);
      }
      const int n = min(32, a.S - c0);
      for (int jj = 0; jj < n; ++jj) {
        const float pj = __shfl_sync(kFullMask, pv, jj);
        const float dsj = __shfl_sync(kFullMask, ds, jj);
        const T* qrow = qb + static_cast<int64_t>(c0 + jj) * a.ld;
        const T* dorow = dob + static_cast<int64_t>(c0 + jj) * HD;
#pragma unroll
        for (int k = 0; k < kGenKpl; ++k) {
          const int d = lane + 32 * k;
          if (d < D) {
            adk[k] = fmaf(dsj, Elem<T>::to_f(qrow[d]), adk[k]);
            adv[k] = fmaf(pj, Elem<T>::to_f(dorow[d]), adv[k]);
          }
        }
      }
    }
  }
  T* dk = a.dqkv + (static_cast<int64_t>(b) * a.S + j) * a.ld + HD + static_cast<int64_t>(g) * D;
  T* dv = dk + static_cast<int64_t>(a.G) * D;
#pragma unroll
  for (int k = 0; k < kGenKpl; ++k) {
    const int d = lane + 32 * k;
    if (d < D) {
      dk[d] = Elem<T>::from_f(Elem<T>::to_f(dk[d]) + a.scale * adk[k]);
      dv[d] = Elem<T>::from_f(Elem<T>::to_f(dv[d]) + adv[k]);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Host side: operand checks and dispatch.

[[noreturn]] void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("ops::cuda::") + op + ": " + what);
}

void expect_numel(const char* op, const char* name, const Tensor& t, int64_t n) {
  if (t.numel() != n)
    fail(op, std::string(name) + " has " + std::to_string(t.numel()) + " elements, expected " + std::to_string(n));
}

void expect_device(const char* op, const char* name, const Tensor& t, const Device& d) {
  if (!t.defined()) fail(op, std::string(name) + " is undefined");
  if (!(t.device() == d)) fail(op, std::string(name) + " on " + t.device().str() + ", expected " + d.str());
}

void expect_dtype(const char* op, const char* name, const Tensor& t, DType want) {
  if (t.dtype() != want)
    fail(op, std::string(name) + " has dtype " + dtype_name(t.dtype()) + ", expected " + dtype_name(want));
}

void check_values_dtype(const char* op, const Tensor& t) {
  const DType d = t.dtype();
  if (d != DType::F32 && d != DType::BF16 && d != DType::F16)
    fail(op, std::string("unsupported dtype ") + dtype_name(d) + " (F32, BF16 or F16)");
}

void check_dims(const char* op, int64_t B, int64_t S, int64_t H, int64_t G, int64_t D) {
  if (B < 0 || S < 0 || H <= 0 || G <= 0 || D <= 0) fail(op, "batch, seq >= 0 and heads, groups, head_dim > 0 expected");
  if (H % G != 0) fail(op, "heads (" + std::to_string(H) + ") not a multiple of groups (" + std::to_string(G) + ")");
  if (D > kGenMaxD) fail(op, "head_dim " + std::to_string(D) + " > 256 is not supported (the flash kernels take 64 and 128, the generic ones up to 256)");
  if (S > std::numeric_limits<int>::max() / 2 || B > 65535 || H > 65535)
    fail(op, "shape too large (seq < 2^30, batch and heads <= 65535)");
  if (B * S * H > std::numeric_limits<int>::max()) fail(op, "batch·seq·heads must stay below 2^31");
}

void check_current_device(const char* op, const Device& d) {
  if (d.is_cpu()) fail(op, "tensor on the CPU");
  if (llm::cuda::current_device() != d.index)
    fail(op, "tensors on " + d.str() + " but the current device is cuda:" + std::to_string(llm::cuda::current_device()));
}

bool force_generic() {
  const char* e = std::getenv("LLM_CUDA_ATTENTION");
  return e != nullptr && std::strcmp(e, "generic") == 0;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

unsigned blocks_for(int64_t warps) {
  return static_cast<unsigned>((warps + kGenWarps - 1) / kGenWarps);
}

template <typename T>
void launch_gen_fwd(const GenFwdArgs<T>& a) {
  const int64_t warps = static_cast<int64_t>(a.B) * a.H * a.Tq;
  if (warps == 0) return;
  gen_fwd_kernel<T><<<blocks_for(warps), kGenWarps * 32, 0, llm::cuda::current_stream()>>>(a);
  LLM_CUDA_CHECK(cudaGetLastError());
}

template <typename T, int D>
void launch_flash_fwd(const T* qkv, T* out, float* lse, const FlashArgs& p) {
  auto kernel = flash_fwd_kernel<T, D>;
  const size_t smem = FwdCfg<D>::template smem_bytes<T>();
  LLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid((p.S + FwdCfg<D>::kBr - 1) / FwdCfg<D>::kBr, p.H, p.B);
  kernel<<<grid, FwdCfg<D>::kThreads, smem, llm::cuda::current_stream()>>>(qkv, out, lse, p);
  LLM_CUDA_CHECK(cudaGetLastError());
}

template <typename T, int D>
void launch_flash_bwd(const T* qkv, const T* dout, const float* lse, const float* dvec, float* dq_acc, T* dqkv,
                      const FlashArgs& p) {
  auto kernel = flash_bwd_kernel<T, D>;
  const size_t smem = BwdCfg<D>::template smem_bytes<T>();
  LLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid((p.S + BwdCfg<D>::kBc - 1) / BwdCfg<D>::kBc, p.G, p.B);
  kernel<<<grid, BwdCfg<D>::kThreads, smem, llm::cuda::current_stream()>>>(qkv, dout, lse, dvec, dq_acc, dqkv, p);
  LLM_CUDA_CHECK(cudaGetLastError());
}

// The flash kernels take 16-bit tensors with D 64 or 128 whose base pointers are
// 16-byte aligned (cp.async and the 16-byte output stores; every row and head offset is
// then a multiple of 16 bytes since D is a multiple of 8).
// A 16-bit call that cannot take them says so once (never a silent slow path).
bool use_flash(DType dt, int64_t D, std::initializer_list<const void*> ptrs) {
  if (dt == DType::F32 || force_generic()) return false;
  const char* why = nullptr;
  if (D != 64 && D != 128) why = "head_dim is not 64 or 128";
  for (const void* p : ptrs)
    if (!why && !aligned16(p)) why = "a tensor's base address is not 16-byte aligned";
  if (!why) return true;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::fprintf(stderr, "warning: attention in %s with head_dim %lld runs on the CUDA cores (slow), not the "
                 "tensor-core flash kernels: %s\n", dtype_name(dt), static_cast<long long>(D), why);
  return false;
}

template <typename T>
void forward_impl(const Tensor& qkv, const QkvLayout& l, Tensor& out, Tensor& lse) {
  const T* q = static_cast<const T*>(qkv.raw());
  T* o = static_cast<T*>(out.raw());
  float* ls = static_cast<float*>(lse.raw());
  const int64_t ld = l.row_stride(), HD = l.heads * l.head_dim, GD = l.groups * l.head_dim;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(l.head_dim)));
  if constexpr (!std::is_same_v<T, float>) {
    if (use_flash(qkv.dtype(), l.head_dim, {q, o})) {
      const FlashArgs p{static_cast<int>(l.batch), static_cast<int>(l.seq), static_cast<int>(l.heads),
                        static_cast<int>(l.groups), ld, scale};
      if (l.head_dim == 64)
        launch_flash_fwd<T, 64>(q, o, ls, p);
      else
        launch_flash_fwd<T, 128>(q, o, ls, p);
      return;
    }
  }
  GenFwdArgs<T> a{q,
                  q + HD,
                  q + HD + GD,
                  o,
                  ls,
                  ld,
                  ld,
                  ld,
                  HD,
                  static_cast<int>(l.batch),
                  static_cast<int>(l.seq),
                  static_cast<int>(l.seq),
                  static_cast<int>(l.heads),
                  static_cast<int>(l.groups),
                  static_cast<int>(l.head_dim),
                  scale};
  launch_gen_fwd(a);
}

template <typename T>
void backward_impl(const Tensor& dout, const Tensor& qkv, const QkvLayout& l, const Tensor& out, const Tensor& lse,
                   Tensor& dqkv) {
  const int B = static_cast<int>(l.batch), S = static_cast<int>(l.seq), H = static_cast<int>(l.heads),
            G = static_cast<int>(l.groups), D = static_cast<int>(l.head_dim);
  const int64_t ld = l.row_stride();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  cudaStream_t stream = llm::cuda::current_stream();
  const T* q = static_cast<const T*>(qkv.raw());
  const T* dO = static_cast<const T*>(dout.raw());
  const T* O = static_cast<const T*>(out.raw());
  const float* ls = static_cast<const float*>(lse.raw());
  T* dq = static_cast<T*>(dqkv.raw());

  Tensor dvec = Tensor::empty({static_cast<int64_t>(B) * H * S}, DType::F32, MemoryCategory::Workspace, qkv.device());
  float* dv = static_cast<float*>(dvec.raw());
  {
    const int64_t warps = static_cast<int64_t>(B) * S * H;
    dvec_kernel<T><<<static_cast<unsigned>((warps + 7) / 8), 256, 0, stream>>>(dO, O, dv, B, S, H, D);
    LLM_CUDA_CHECK(cudaGetLastError());
  }
  if constexpr (!std::is_same_v<T, float>) {
    if (use_flash(qkv.dtype(), D, {q, dO, dq})) {
      Tensor acc = Tensor::empty({static_cast<int64_t>(B) * H * S * D}, DType::F32, MemoryCategory::Workspace,
                                 qkv.device());
      float* ac = static_cast<float*>(acc.raw());
      LLM_CUDA_CHECK(cudaMemsetAsync(ac, 0, acc.nbytes(), stream));
      const FlashArgs p{B, S, H, G, ld, scale};
      if (D == 64)
        launch_flash_bwd<T, 64>(q, dO, ls, dv, ac, dq, p);
      else
        launch_flash_bwd<T, 128>(q, dO, ls, dv, ac, dq, p);
      const int64_t n = static_cast<int64_t>(B) * S * H * D;
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65536));
      dq_finalize_kernel<T><<<blocks, 256, 0, stream>>>(ac, dq, B, S, H, D, ld, scale);
      LLM_CUDA_CHECK(cudaGetLastError());
      return;
    }
  }
  GenBwdArgs<T> a{q, dO, ls, dv, dq, ld, B, S, H, G, D, scale};
  gen_bwd_dq_kernel<T><<<blocks_for(static_cast<int64_t>(B) * H * S), kGenWarps * 32, 0, stream>>>(a);
  LLM_CUDA_CHECK(cudaGetLastError());
  gen_bwd_dkdv_kernel<T><<<blocks_for(static_cast<int64_t>(B) * G * S), kGenWarps * 32, 0, stream>>>(a);
  LLM_CUDA_CHECK(cudaGetLastError());
}

template <typename F>
void dispatch(DType dt, F&& f) {
  switch (dt) {
    case DType::F32: f(float{}); break;
    case DType::BF16: f(__nv_bfloat16{}); break;
    case DType::F16: f(__half{}); break;
    default: break;  // rejected by check_values_dtype
  }
}

}  // namespace

void attention_forward(const Tensor& qkv, const QkvLayout& l, Tensor& out, Tensor& lse) {
  const char* op = "attention_forward";
  check_values_dtype(op, qkv);
  const Device dev = qkv.device();
  check_current_device(op, dev);
  expect_device(op, "out", out, dev);
  expect_device(op, "lse", lse, dev);
  expect_dtype(op, "out", out, qkv.dtype());
  expect_dtype(op, "lse", lse, DType::F32);
  check_dims(op, l.batch, l.seq, l.heads, l.groups, l.head_dim);
  expect_numel(op, "qkv", qkv, l.batch * l.seq * l.row_stride());
  expect_numel(op, "out", out, l.batch * l.seq * l.heads * l.head_dim);
  expect_numel(op, "lse", lse, l.batch * l.heads * l.seq);
  if (l.batch * l.seq == 0) return;
  dispatch(qkv.dtype(), [&](auto z) { forward_impl<decltype(z)>(qkv, l, out, lse); });
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const QkvLayout& l, const Tensor& out,
                        const Tensor& lse, Tensor& dqkv) {
  const char* op = "attention_backward";
  check_values_dtype(op, qkv);
  const Device dev = qkv.device();
  check_current_device(op, dev);
  expect_device(op, "dout", dout, dev);
  expect_device(op, "out", out, dev);
  expect_device(op, "lse", lse, dev);
  expect_device(op, "dqkv", dqkv, dev);
  expect_dtype(op, "dout", dout, qkv.dtype());
  expect_dtype(op, "out", out, qkv.dtype());
  expect_dtype(op, "dqkv", dqkv, qkv.dtype());
  expect_dtype(op, "lse", lse, DType::F32);
  check_dims(op, l.batch, l.seq, l.heads, l.groups, l.head_dim);
  expect_numel(op, "qkv", qkv, l.batch * l.seq * l.row_stride());
  expect_numel(op, "dqkv", dqkv, l.batch * l.seq * l.row_stride());
  expect_numel(op, "dout", dout, l.batch * l.seq * l.heads * l.head_dim);
  expect_numel(op, "out", out, l.batch * l.seq * l.heads * l.head_dim);
  expect_numel(op, "lse", lse, l.batch * l.heads * l.seq);
  if (l.batch * l.seq == 0) return;
  dispatch(qkv.dtype(), [&](auto z) { backward_impl<decltype(z)>(dout, qkv, l, out, lse, dqkv); });
}

void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t tk, int64_t heads,
                      int64_t groups, int64_t head_dim, Tensor& out) {
  const char* op = "attention_decode";
  check_values_dtype(op, q);
  const Device dev = q.device();
  check_current_device(op, dev);
  expect_device(op, "k_cache", k_cache, dev);
  expect_device(op, "v_cache", v_cache, dev);
  expect_device(op, "out", out, dev);
  expect_dtype(op, "k_cache", k_cache, q.dtype());
  expect_dtype(op, "v_cache", v_cache, q.dtype());
  expect_dtype(op, "out", out, q.dtype());
  check_dims(op, 1, tk, heads, groups, head_dim);
  const int64_t hd = heads * head_dim, gd = groups * head_dim;
  if (q.numel() % hd != 0) fail(op, "q's size is not a multiple of heads·head_dim");
  const int64_t tq = q.numel() / hd;
  if (tq > tk) fail(op, "more queries than cached keys");
  if (k_cache.numel() < tk * gd || v_cache.numel() < tk * gd) fail(op, "KV cache smaller than its length");
  expect_numel(op, "out", out, tq * hd);
  if (tq == 0) return;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  dispatch(q.dtype(), [&](auto z) {
    using T = decltype(z);
    GenFwdArgs<T> a{static_cast<const T*>(q.raw()),
                    static_cast<const T*>(k_cache.raw()),
                    static_cast<const T*>(v_cache.raw()),
                    static_cast<T*>(out.raw()),
                    nullptr,
                    hd,
                    gd,
                    gd,
                    hd,
                    1,
                    static_cast<int>(tq),
                    static_cast<int>(tk),
                    static_cast<int>(heads),
                    static_cast<int>(groups),
                    static_cast<int>(head_dim),
                    scale};
    launch_gen_fwd(a);
  });
}

}  // namespace llm::ops::cuda
