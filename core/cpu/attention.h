// Causal grouped-query attention on the CPU, forward and backward, computed
// flash-style (FlashAttention-2): scores are produced one Bq×Bk block at a
// time with an online softmax, so no T×T matrix is ever materialised. Forward
// saves only the output and the per-row logsumexp; backward recomputes the
// score blocks from q, k and the saved lse.
//
// Layout (row strides in elements, so q/k/v may be column slices of a fused
// QKV buffer):
//   q:   token (b,t) row at q + (b*Tq + t)*ldq, query head h at offset h*D.
//   k,v: token (b,s) row at k + (b*Tk + s)*ldk (resp. ldv), kv head g at g*D.
//   out: [B, Tq, H, D] with row stride ldo.   lse: [B, H, Tq], natural log.
// Query head h reads kv head h / (H/G). Query t sits at absolute position
// Tk - Tq + t and attends to keys s <= that position (Tq == Tk: training;
// Tq < Tk: decoding against a KV cache).
//
// Parallelism: OpenMP over (b, h) units in forward and (b, g) units in
// backward. In backward one thread owns a kv head's dk/dv and all of its
// query heads' dq, and visits them in a fixed order, so results are bitwise
// identical for any thread count (forward is too: units are independent).
//
// Block products (64×64×D) use small register-blocked kernels written with
// GCC/Clang vector extensions (64-byte vectors: one AVX-512 register; the
// compiler splits them on narrower ISAs). Against llm::cpu::gemm per block
// they measured as fast (D=64) or ~5% faster (D=32) with OpenBLAS's SkylakeX
// kernels, and 4-5× faster with the Prescott kernels that OpenBLAS's
// DYNAMIC_ARCH picks on the development VM unless OPENBLAS_CORETYPE is set;
// they also skip the masked half of diagonal blocks. K and V are repacked
// per unit (Kᵀ into 64-key panels, V rows contiguous): rows of a fused QKV
// buffer are often a multiple of 4 KiB apart and would thrash L1 sets. The
// float exp is a vectorised Cody-Waite + Cephes polynomial (about 1 ulp);
// double uses std::exp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include <omp.h>

namespace llm::cpu {

namespace attn_detail {

template <class T>
struct simd;
template <>
struct simd<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef float VU __attribute__((vector_size(64), aligned(4), may_alias));  // for loads/stores
  typedef int32_t VI __attribute__((vector_size(64)));
  static constexpr int W = 16;
};
template <>
struct simd<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef double VU __attribute__((vector_size(64), aligned(8), may_alias));
  static constexpr int W = 8;
};

constexpr int64_t kBq = 64;  // queries per block
constexpr int64_t kBk = 64;  // keys per block (a multiple of every vector width)

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Vectors cross function boundaries only by reference: by value their ABI
// depends on whether AVX-512 is enabled (GCC warns about that).
template <class T>
inline void vload(typename simd<T>::V& v, const T* p) {
  v = *reinterpret_cast<const typename simd<T>::VU*>(p);
}
template <class T>
inline void vstore(T* p, const typename simd<T>::V& v) {
  *reinterpret_cast<typename simd<T>::VU*>(p) = v;
}

// ---------------------------------------------------------------------------
// Block products.
//
// C[M, N] (+)= op(A)[M, K] · B[K, N], op(A)(m, k) = TA ? A[k*lda + m] : A[m*lda + k],
// B row-major. The kernel holds an MR × (NV vectors) tile of C in registers and
// streams k: per step NV vector loads of B, MR broadcasts of A, MR·NV FMAs.

template <class T, int MR, int NV, bool TA, bool ACC>
inline void tile_core(int mr, int64_t k0, int64_t k1, const T* __restrict A, int64_t lda,
                      const T* __restrict B, int64_t ldb, T* __restrict C, int64_t ldc) {
  using V = typename simd<T>::V;
  constexpr int W = simd<T>::W;
  V c[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) {
      c[m][v] = V{};
      if constexpr (ACC) vload(c[m][v], C + m * ldc + v * W);
    }
  // Rows past mr (remainder tiles only) recompute row mr-1 into scratch rows.
  if constexpr (TA) {
    for (int64_t k = k0; k < k1; ++k) {
      const T* a = A + k * lda;
      const T* b = B + k * ldb;
      V bv[NV];
      for (int v = 0; v < NV; ++v) vload(bv[v], b + v * W);
      for (int m = 0; m < MR; ++m) {
        const T s = a[m < mr ? m : mr - 1];
        for (int v = 0; v < NV; ++v) c[m][v] += s * bv[v];
      }
    }
  } else {
    const T* a[MR];
    for (int m = 0; m < MR; ++m) a[m] = A + (m < mr ? m : mr - 1) * lda;
    for (int64_t k = k0; k < k1; ++k) {
      const T* b = B + k * ldb;
      V bv[NV];
      for (int v = 0; v < NV; ++v) vload(bv[v], b + v * W);
      for (int m = 0; m < MR; ++m) {
        const T s = a[m][k];
        for (int v = 0; v < NV; ++v) c[m][v] += s * bv[v];
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) vstore(C + m * ldc + v * W, c[m][v]);
}

template <class T, int MR, int NV, bool TA, bool ACC>
inline void tile(int mr, int64_t k0, int64_t k1, const T* A, int64_t lda, const T* B, int64_t ldb,
                 T* C, int64_t ldc) {
  constexpr int W = simd<T>::W;
  if (mr == MR) {
    tile_core<T, MR, NV, TA, ACC>(MR, k0, k1, A, lda, B, ldb, C, ldc);
  } else {  // remainder rows: stage C so that the kernel may write MR rows
    alignas(64) T buf[MR * NV * W];
    if constexpr (ACC) {
      std::fill(buf, buf + MR * NV * W, T(0));
      for (int m = 0; m < mr; ++m) std::memcpy(buf + m * NV * W, C + m * ldc, sizeof(T) * NV * W);
    }
    tile_core<T, MR, NV, TA, ACC>(mr, k0, k1, A, lda, B, ldb, buf, NV * W);
    for (int m = 0; m < mr; ++m) std::memcpy(C + m * ldc, buf + m * NV * W, sizeof(T) * NV * W);
  }
}

// How a block product may skip work that the causal mask makes zero. With the
// block's diagonal offset `off`, row m of a score block sees key columns
// n <= m + off; in a transposed product key row m sees query columns
// k >= m - off.
enum class Trim { none, n_end, k_end, k_begin };

template <class T, int MR, bool TA, bool ACC>
void block_mm_mr(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                 int64_t ldb, T* C, int64_t ldc, Trim trim, int64_t off) {
  constexpr int64_t W = simd<T>::W;
  constexpr int64_t NC = 4 * W;  // columns per chunk
  for (int64_t m0 = 0; m0 < M; m0 += MR) {
    const int mr = static_cast<int>(std::min<int64_t>(MR, M - m0));
    int64_t n_end = N, k0 = 0, k1 = K;
    if (trim == Trim::n_end) n_end = std::min(N, m0 + mr + off);
    if (trim == Trim::k_end) k1 = std::min(K, m0 + mr + off);
    if (trim == Trim::k_begin) k0 = std::max<int64_t>(0, m0 - off);
    if (n_end <= 0) continue;
    if (k1 <= k0) {
      if constexpr (ACC) continue;
      k1 = k0;  // plain product over an empty range: C = 0
    }
    const T* a = TA ? A + m0 : A + m0 * lda;
    for (int64_t n0 = 0; n0 < n_end; n0 += NC) {
      const int nv = static_cast<int>((std::min(NC, n_end - n0) + W - 1) / W);
      T* c = C + m0 * ldc + n0;
      const T* b = B + n0;
      switch (nv) {
        case 1: tile<T, MR, 1, TA, ACC>(mr, k0, k1, a, lda, b, ldb, c, ldc); break;
        case 2: tile<T, MR, 2, TA, ACC>(mr, k0, k1, a, lda, b, ldb, c, ldc); break;
        case 3: tile<T, MR, 3, TA, ACC>(mr, k0, k1, a, lda, b, ldb, c, ldc); break;
        default: tile<T, MR, 4, TA, ACC>(mr, k0, k1, a, lda, b, ldb, c, ldc); break;
      }
    }
  }
}

// C[M, N] (+)= op(A)[M, K] B[K, N]. Columns go in whole vectors, so B and C
// must have round_up(N, W) readable/writable columns; the extra columns of C
// receive values nobody reads.
template <class T, bool TA, bool ACC>
void block_mm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
              T* C, int64_t ldc, Trim trim = Trim::none, int64_t off = 0) {
  constexpr int64_t W = simd<T>::W;
  const int64_t nv = (N + W - 1) / W;
  if (nv >= 4)
    block_mm_mr<T, 4, TA, ACC>(M, N, K, A, lda, B, ldb, C, ldc, trim, off);
  else if (nv == 3)
    block_mm_mr<T, 6, TA, ACC>(M, N, K, A, lda, B, ldb, C, ldc, trim, off);
  else
    block_mm_mr<T, 8, TA, ACC>(M, N, K, A, lda, B, ldb, C, ldc, trim, off);
}

// ---------------------------------------------------------------------------
// Packing.

// a, b = rows i, i+K: swap a's lanes with bit K set and b's lanes without it.
template <class T, int K, size_t... I>
inline void butterfly(typename simd<T>::V& a, typename simd<T>::V& b, std::index_sequence<I...>) {
  constexpr int W = simd<T>::W;
  const typename simd<T>::V x = a, y = b;
  a = __builtin_shufflevector(x, y, ((I & K) == 0 ? int(I) : W + int(I) - K)...);
  b = __builtin_shufflevector(x, y, ((I & K) == 0 ? int(I) + K : W + int(I))...);
}
// One butterfly stage of a W×W transpose: swap the off-diagonal K×K blocks of
// every 2K×2K block.
template <class T, int K>
inline void transpose_stage(typename simd<T>::V* r) {
  constexpr int W = simd<T>::W;
  for (int i = 0; i < W; ++i)
    if ((i & K) == 0) butterfly<T, K>(r[i], r[i + K], std::make_index_sequence<W>{});
}

// Asks for the cache lines of row src[0..n) (rows of a fused QKV buffer are
// far apart, beyond what the hardware prefetcher follows).
template <class T>
inline void prefetch_row(const T* src, int64_t n) {
  for (int64_t d = 0; d < n; d += 64 / sizeof(T)) __builtin_prefetch(src + d);
  __builtin_prefetch(src + n - 1);
}

// dst[d*ldd + j] = src[j*lds + d] for j < nj, d < nd.
template <class T>
void transpose(const T* src, int64_t lds, int64_t nj, int64_t nd, T* dst, int64_t ldd) {
  using V = typename simd<T>::V;
  constexpr int64_t W = simd<T>::W;
  const int64_t nj_full = nj / W * W, nd_full = nd / W * W;
  for (int64_t j0 = 0; j0 < nj_full; j0 += W) {
    for (int64_t j = j0 + W; j < std::min(j0 + 2 * W, nj); ++j) prefetch_row(src + j * lds, nd);
    for (int64_t d0 = 0; d0 < nd_full; d0 += W) {
      V r[W];
      for (int i = 0; i < W; ++i) vload(r[i], src + (j0 + i) * lds + d0);
      if constexpr (W == 16) transpose_stage<T, 8>(r);
      transpose_stage<T, 4>(r);
      transpose_stage<T, 2>(r);
      transpose_stage<T, 1>(r);
      for (int i = 0; i < W; ++i) vstore(dst + (d0 + i) * ldd + j0, r[i]);
    }
    for (int64_t j = j0; j < j0 + W; ++j)
      for (int64_t d = nd_full; d < nd; ++d) dst[d * ldd + j] = src[j * lds + d];
  }
  for (int64_t j = nj_full; j < nj; ++j)
    for (int64_t d = 0; d < nd; ++d) dst[d * ldd + j] = src[j * lds + d];
}

// Kᵀ in key-block panels: panel jb holds dst[jb*nd*kBk + d*kBk + c] =
// src[(jb*kBk + c)*lds + d], so a block product streams 64-key rows that are
// contiguous in memory (row strides of 4 KiB multiples would thrash L1 sets).
template <class T>
void transpose_panels(const T* src, int64_t lds, int64_t nj, int64_t nd, T* dst) {
  for (int64_t j0 = 0; j0 < nj; j0 += kBk)
    transpose(src + j0 * lds, lds, std::min(kBk, nj - j0), nd, dst + j0 * nd, kBk);
}

// dst[j*ldd + d] = src[j*lds + d] for j < nj, d < nd.
template <class T>
void copy_rows(const T* src, int64_t lds, int64_t nj, int64_t nd, T* dst, int64_t ldd) {
  using V = typename simd<T>::V;
  constexpr int64_t W = simd<T>::W;
  constexpr int64_t ahead = 8;
  for (int64_t j = 0; j < nj; ++j) {
    if (j + ahead < nj) prefetch_row(src + (j + ahead) * lds, nd);
    const T* a = src + j * lds;
    T* b = dst + j * ldd;
    int64_t d = 0;
    for (; d + W <= nd; d += W) {
      V t;
      vload(t, a + d);
      vstore(b + d, t);
    }
    for (; d < nd; ++d) b[d] = a[d];
  }
}

// ---------------------------------------------------------------------------
// Softmax row helpers; n is always a multiple of the vector width.

// v = max(v, v rotated by H lanes)
template <class T, int H, size_t... I>
inline void max_rotated(typename simd<T>::V& v, std::index_sequence<I...>) {
  constexpr int W = simd<T>::W;
  const typename simd<T>::V r = __builtin_shufflevector(v, v, int((I + H) % W)...);
  v = r > v ? r : v;
}

template <class T>
inline T row_max_scaled(const T* x, int64_t n, T a) {
  using V = typename simd<T>::V;
  constexpr int W = simd<T>::W;
  V mx = V{} - std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; j += W) {
    V t;
    vload(t, x + j);
    t = t * a;
    mx = t > mx ? t : mx;
  }
  if constexpr (W == 16) max_rotated<T, 8>(mx, std::make_index_sequence<W>{});
  max_rotated<T, 4>(mx, std::make_index_sequence<W>{});
  max_rotated<T, 2>(mx, std::make_index_sequence<W>{});
  max_rotated<T, 1>(mx, std::make_index_sequence<W>{});
  return mx[0];
}

// v = v + (v rotated by H lanes)
template <class T, int H, size_t... I>
inline void add_rotated(typename simd<T>::V& v, std::index_sequence<I...>) {
  constexpr int W = simd<T>::W;
  const typename simd<T>::V r = __builtin_shufflevector(v, v, int((I + H) % W)...);
  v = v + r;
}

// sum_d a[d] * b[d]
template <class T>
inline T dot(const T* a, const T* b, int64_t n) {
  using V = typename simd<T>::V;
  constexpr int W = simd<T>::W;
  V acc = V{};
  int64_t d = 0;
  for (; d + W <= n; d += W) {
    V x, y;
    vload(x, a + d);
    vload(y, b + d);
    acc += x * y;
  }
  if constexpr (W == 16) add_rotated<T, 8>(acc, std::make_index_sequence<W>{});
  add_rotated<T, 4>(acc, std::make_index_sequence<W>{});
  add_rotated<T, 2>(acc, std::make_index_sequence<W>{});
  add_rotated<T, 1>(acc, std::make_index_sequence<W>{});
  T r = acc[0];
  for (; d < n; ++d) r += a[d] * b[d];
  return r;
}

// y[d] += a * x[d]
template <class T>
inline void axpy(T* y, const T* x, int64_t n, T a) {
  using V = typename simd<T>::V;
  constexpr int W = simd<T>::W;
  int64_t d = 0;
  for (; d + W <= n; d += W) {
    V vx, vy;
    vload(vx, x + d);
    vload(vy, y + d);
    vstore(y + d, V(vy + a * vx));
  }
  for (; d < n; ++d) y[d] += a * x[d];
}

// x[j] = exp(x[j]*a + b); inputs of -inf give 0, NaN stays NaN. If vsum is
// given, vsum = vsum*alpha + (lane-wise sum of the results).
inline void exp_row(float* x, int64_t n, float a, float b, float* vsum = nullptr,
                    float alpha = 1.0f) {
  using V = simd<float>::V;
  using VI = simd<float>::VI;
  constexpr int W = simd<float>::W;
  const V lo = V{} - 88.0f, hi = V{} + 88.0f;
  const V magic = V{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  V sum = V{};
  for (int64_t j = 0; j < n; j += W) {
    V t;
    vload(t, x + j);
    t = t * a + b;
    t = t < lo ? lo : t;  // NaN fails both tests and poisons the result
    t = t > hi ? hi : t;
    // exp(t) = 2^n exp(r), n = round(t / ln2), r = t - n ln2 (Cody-Waite split).
    const V fx = t * 1.44269504088896341f + magic;
    const V nf = fx - magic;
    V r = t - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    V p = V{} + 1.9875691500e-4f;  // Cephes expf polynomial
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    V y = p * (r * r) + r + 1.0f;
    // 2^n from the exponent bits; n = -127 gives +0, so exp(<= -88) flushes to 0.
    const VI e = ((VI)fx - ((VI)magic - 127)) << 23;
    y = y * (V)e;
    vstore(x + j, y);
    sum += y;
  }
  if (vsum) {
    V acc;
    vload(acc, vsum);
    vstore(vsum, V(acc * alpha + sum));
  }
}

inline void exp_row(double* x, int64_t n, double a, double b, double* vsum = nullptr,
                    double alpha = 1.0) {
  using V = simd<double>::V;
  constexpr int W = simd<double>::W;
  V sum = V{};
  for (int64_t j = 0; j < n; j += W) {
    for (int l = 0; l < W; ++l) x[j + l] = std::exp(x[j + l] * a + b);
    V t;
    vload(t, x + j);
    sum += t;
  }
  if (vsum) {
    V acc;
    vload(acc, vsum);
    vstore(vsum, V(acc * alpha + sum));
  }
}

// ds[j] = p[j] * (ds[j] - di)
template <class T>
inline void ds_row(const T* p, T* ds, int64_t n, T di) {
  using V = typename simd<T>::V;
  constexpr int W = simd<T>::W;
  for (int64_t j = 0; j < n; j += W) {
    V a, c;
    vload(a, p + j);
    vload(c, ds + j);
    vstore(ds + j, V(a * (c - di)));
  }
}

template <class T>
inline void scale_row(T* x, int64_t n, T a) {
  using V = typename simd<T>::V;
  constexpr int W = simd<T>::W;
  for (int64_t j = 0; j < n; j += W) {
    V t;
    vload(t, x + j);
    vstore(x + j, V(t * a));
  }
}

// Number of keys of a block visible to block row r (0 <= len <= bk).
inline int64_t visible(int64_t r, int64_t off, int64_t bk) {
  return std::clamp<int64_t>(r + off + 1, 0, bk);
}

// Threads for `units` independent work units totalling about `flops`: no more
// than there are units, and one for small calls, where starting the team
// would cost more than it saves.
inline int team_size(int64_t units, double flops) {
  if (flops < 4e6) return 1;
  return static_cast<int>(std::clamp<int64_t>(units, 1, omp_get_max_threads()));
}

inline void check_shapes(int64_t H, int64_t G, int64_t Tq, int64_t Tk) {
  if (G <= 0 || H % G != 0)
    throw std::invalid_argument("attention: H must be a positive multiple of G");
  if (Tq > Tk) throw std::invalid_argument("attention: Tq must not exceed Tk");
}

}  // namespace attn_detail

template <class T>
void attention_forward(const T* q, int64_t ldq, const T* k, int64_t ldk, const T* v, int64_t ldv,
                       T* out, int64_t ldo, T* lse, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                       int64_t G, int64_t D, double scale) {
  using namespace attn_detail;
  check_shapes(H, G, Tq, Tk);
  if (B <= 0 || Tq <= 0 || H <= 0 || D <= 0) return;
  constexpr int64_t W = simd<T>::W;
  const int64_t Dp = round_up(D, W), Tkb = round_up(Tk, kBk), rep = H / G;
  const T sc = static_cast<T>(scale);
  const T ninf = -std::numeric_limits<T>::infinity();

  const int threads = team_size(B * H, 2.0 * B * H * Tq * Tk * D);
#pragma omp parallel num_threads(threads)
  {
    // Per-thread scratch, allocated on the thread's first unit.
    std::vector<T> kt, vp, s, o, mrow, alpha, lvec;
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < B * H; ++u) {
      if (kt.empty()) {
        kt.assign(Tkb * D, T(0));  // K transposed, in [D][kBk] panels
        vp.assign(Tk * Dp, T(0));  // V [Tk][Dp], zero padded columns
        s.assign(kBq * kBk, T(0));               // score / probability block
        o.assign(kBq * Dp, T(0));                // output accumulator block
        mrow.assign(kBq, T(0));                  // running max (scaled scores)
        alpha.assign(kBq, T(0));                 // per-block rescale factors
        lvec.assign(kBq * W, T(0));              // running sums, one vector per row
      }
      const int64_t b = u / H, h = u % H, g = h / rep;
      const T* kb = k + b * Tk * ldk + g * D;
      const T* vb = v + b * Tk * ldv + g * D;
      const T* qb = q + b * Tq * ldq + h * D;
      for (int64_t i = 0; i < std::min(kBq, Tq); ++i) prefetch_row(qb + i * ldq, D);
      transpose_panels(kb, ldk, Tk, D, kt.data());
      copy_rows(vb, ldv, Tk, D, vp.data(), Dp);
      for (int64_t i0 = 0; i0 < Tq; i0 += kBq) {
        const int64_t bq = std::min(kBq, Tq - i0);
        const int64_t p0 = Tk - Tq + i0;  // absolute position of the block's first query
        // Rows of the next query block and of this block's output: far apart
        // in a fused buffer, so ask for them ahead of use.
        for (int64_t i = i0 + kBq; i < std::min(i0 + 2 * kBq, Tq); ++i)
          prefetch_row(qb + i * ldq, D);
        for (int64_t r = 0; r < bq; ++r) prefetch_row(out + (b * Tq + i0 + r) * ldo + h * D, D);
        std::fill(o.begin(), o.begin() + bq * Dp, T(0));
        std::fill(mrow.begin(), mrow.end(), ninf);
        std::fill(lvec.begin(), lvec.end(), T(0));
        for (int64_t j0 = 0; j0 <= p0 + bq - 1; j0 += kBk) {
          const int64_t bk = std::min(kBk, Tk - j0), off = p0 - j0;
          const bool full = j0 + bk - 1 <= p0;  // no key of the block is masked
          // S = Q_i K_j^T (unscaled)
          block_mm<T, false, false>(bq, bk, D, qb + i0 * ldq, ldq, kt.data() + j0 * D, kBk,
                                    s.data(), kBk, full ? Trim::none : Trim::n_end, off);
          // New running max per row; alpha = exp(m_old - m_new) for all rows at once.
          for (int64_t r = 0; r < bq; ++r) {
            T* sr = s.data() + r * kBk;
            const int64_t len = full ? bk : visible(r, off, bk), lenw = round_up(len, W);
            for (int64_t j = len; j < lenw; ++j) sr[j] = ninf;
            alpha[r] = T(0);  // exp(0) = 1: a row that sees no key here keeps its state
            if (len > 0) {
              const T mnew = std::max(mrow[r], row_max_scaled(sr, lenw, sc));
              alpha[r] = mrow[r] - mnew;
              mrow[r] = mnew;
            }
          }
          for (int64_t r = bq; r < kBq; ++r) alpha[r] = T(0);
          exp_row(alpha.data(), kBq, T(1), T(0));
          // P = exp(S*scale - m), l = l*alpha + rowsum(P), O *= alpha.
          for (int64_t r = 0; r < bq; ++r) {
            T* sr = s.data() + r * kBk;
            const int64_t len = full ? bk : visible(r, off, bk), lenw = round_up(len, W);
            if (len > 0) exp_row(sr, lenw, sc, -mrow[r], lvec.data() + r * W, alpha[r]);
            for (int64_t j = lenw; j < bk; ++j) sr[j] = T(0);
            if (alpha[r] != T(1)) scale_row(o.data() + r * Dp, Dp, alpha[r]);
          }
          // O += P V_j
          block_mm<T, false, true>(bq, D, bk, s.data(), kBk, vp.data() + j0 * Dp, Dp, o.data(), Dp,
                                   full ? Trim::none : Trim::k_end, off);
        }
        for (int64_t r = 0; r < bq; ++r) {
          T l = T(0);
          for (int64_t x = 0; x < W; ++x) l += lvec[r * W + x];
          const T inv = T(1) / l;
          T* orow = out + ((b * Tq + i0 + r) * ldo) + h * D;
          const T* acc = o.data() + r * Dp;
          for (int64_t d = 0; d < D; ++d) orow[d] = acc[d] * inv;
          lse[(b * H + h) * Tq + i0 + r] = mrow[r] + std::log(l);
        }
      }
    }
  }
}

// dq/dk/dv use the strides of q/k/v and are accumulated into (+=).
// (The sequence length is named Tn here: a function parameter may not reuse
// the name of the template parameter T.)
template <class T>
void attention_backward(const T* dout, int64_t ldo, const T* q, int64_t ldq, const T* k,
                        int64_t ldk, const T* v, int64_t ldv, const T* out, const T* lse, T* dq,
                        T* dk, T* dv, int64_t B, int64_t Tn, int64_t H, int64_t G, int64_t D,
                        double scale) {
  using namespace attn_detail;
  check_shapes(H, G, Tn, Tn);
  if (B <= 0 || Tn <= 0 || H <= 0 || D <= 0) return;
  constexpr int64_t W = simd<T>::W;
  const int64_t Dp = round_up(D, W), Tb = round_up(Tn, kBk), rep = H / G;
  const T sc = static_cast<T>(scale);
  const T ninf = -std::numeric_limits<T>::infinity();

  const int threads = team_size(B * G, 10.0 * B * H * Tn * Tn * D);
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> kt, vt, kp, qp, dop, dvec, dqa, dka, dva, s, dp;
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < B * G; ++u) {
      if (kt.empty()) {
        kt.assign(Tb * D, T(0));    // K transposed, [D][kBk] panels (S = Q K^T)
        vt.assign(Tb * D, T(0));    // V transposed, [D][kBk] panels (dP = dO V^T)
        kp.assign(Tn * Dp, T(0));   // K [T][Dp]              (dQ += dS K)
        qp.assign(Tn * Dp, T(0));   // Q of one head [T][Dp]  (S; dK += dS^T Q)
        dop.assign(Tn * Dp, T(0));  // dO of one head [T][Dp] (dP; dV += P^T dO)
        dvec.assign(Tn, T(0));  // D_i = rowsum(dO_i * O_i)
        dqa.assign(Tn * Dp, T(0));
        dka.assign(Tn * Dp, T(0));
        dva.assign(Tn * Dp, T(0));
        s.assign(kBq * kBk, T(0));
        dp.assign(kBq * kBk, T(0));
      }
      const int64_t b = u / G, g = u % G;
      const T* kb = k + b * Tn * ldk + g * D;
      const T* vb = v + b * Tn * ldv + g * D;
      transpose_panels(kb, ldk, Tn, D, kt.data());
      transpose_panels(vb, ldv, Tn, D, vt.data());
      copy_rows(kb, ldk, Tn, D, kp.data(), Dp);
      std::fill(dka.begin(), dka.end(), T(0));
      std::fill(dva.begin(), dva.end(), T(0));

      for (int64_t h = g * rep; h < (g + 1) * rep; ++h) {
        const T* qb = q + b * Tn * ldq + h * D;
        const T* dob = dout + b * Tn * ldo + h * D;
        const T* ob = out + b * Tn * ldo + h * D;
        const T* lrow = lse + (b * H + h) * Tn;
        copy_rows(qb, ldq, Tn, D, qp.data(), Dp);
        copy_rows(dob, ldo, Tn, D, dop.data(), Dp);
        for (int64_t i = 0; i < Tn; ++i) {
          if (i + 8 < Tn) prefetch_row(ob + (i + 8) * ldo, D);
          dvec[i] = dot(dop.data() + i * Dp, ob + i * ldo, D);
        }
        std::fill(dqa.begin(), dqa.end(), T(0));

        for (int64_t j0 = 0; j0 < Tn; j0 += kBk) {
          const int64_t bk = std::min(kBk, Tn - j0);
          for (int64_t i0 = j0 / kBq * kBq; i0 < Tn; i0 += kBq) {
            const int64_t bq = std::min(kBq, Tn - i0), off = i0 - j0;
            const bool full = j0 + bk - 1 <= i0;
            const Trim tn = full ? Trim::none : Trim::n_end;
            const Trim tk_end = full ? Trim::none : Trim::k_end;
            const Trim tk_begin = full ? Trim::none : Trim::k_begin;
            // S = Q_i K_j^T and dP = dO_i V_j^T
            block_mm<T, false, false>(bq, bk, D, qp.data() + i0 * Dp, Dp, kt.data() + j0 * D, kBk,
                                      s.data(), kBk, tn, off);
            block_mm<T, false, false>(bq, bk, D, dop.data() + i0 * Dp, Dp, vt.data() + j0 * D,
                                      kBk, dp.data(), kBk, tn, off);
            // P = exp(S*scale - lse) (0 where masked), dS = P * (dP - D_i)
            for (int64_t r = 0; r < bq; ++r) {
              T* sr = s.data() + r * kBk;
              T* dr = dp.data() + r * kBk;
              const int64_t len = full ? bk : visible(r, off, bk), lenw = round_up(len, W);
              for (int64_t j = len; j < lenw; ++j) sr[j] = ninf;
              exp_row(sr, lenw, sc, -lrow[i0 + r]);
              ds_row(sr, dr, lenw, dvec[i0 + r]);
              for (int64_t j = lenw; j < bk; ++j) dr[j] = T(0), sr[j] = T(0);
            }
            // dV_j += P^T dO_i
            block_mm<T, true, true>(bk, D, bq, s.data(), kBk, dop.data() + i0 * Dp, Dp,
                                    dva.data() + j0 * Dp, Dp, tk_begin, off);
            // dQ_i += dS K_j   (times scale at the end)
            block_mm<T, false, true>(bq, D, bk, dp.data(), kBk, kp.data() + j0 * Dp, Dp,
                                     dqa.data() + i0 * Dp, Dp, tk_end, off);
            // dK_j += dS^T Q_i (times scale at the end)
            block_mm<T, true, true>(bk, D, bq, dp.data(), kBk, qp.data() + i0 * Dp, Dp,
                                    dka.data() + j0 * Dp, Dp, tk_begin, off);
          }
        }
        T* dqb = dq + b * Tn * ldq + h * D;
        for (int64_t i = 0; i < Tn; ++i) {
          if (i + 8 < Tn) prefetch_row(dqb + (i + 8) * ldq, D);
          axpy(dqb + i * ldq, dqa.data() + i * Dp, D, sc);
        }
      }
      T* dkb = dk + b * Tn * ldk + g * D;
      T* dvb = dv + b * Tn * ldv + g * D;
      for (int64_t j = 0; j < Tn; ++j) {
        if (j + 8 < Tn) prefetch_row(dkb + (j + 8) * ldk, D), prefetch_row(dvb + (j + 8) * ldv, D);
        axpy(dkb + j * ldk, dka.data() + j * Dp, D, sc);
        axpy(dvb + j * ldv, dva.data() + j * Dp, D, T(1));
      }
    }
  }
}

}  // namespace llm::cpu
