// Building blocks shared by the CPU kernels, written so that gcc vectorises them:
// fixed-order lane reductions and an exp for float.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <experimental/simd>

namespace llm::cpu::vec {

// Independent accumulators in a reduction: two 512-bit registers' worth. Element i always
// goes to lane i % L and the lanes are combined by a fixed tree, so the result depends on
// neither pointer alignment, vector width, nor thread count (a `reduction(+:)` clause
// would leave the order to the compiler); several lanes also hide the add latency.
template <class T>
inline constexpr int kLanes = static_cast<int>(128 / sizeof(T));

// Sums acc[0..L) by a fixed pairwise tree (L a power of two). Clobbers acc.
template <int L, class A>
inline A tree_sum(A* acc) {
  static_assert((L & (L - 1)) == 0, "lanes must be a power of two");
  for (int w = L / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
  return acc[0];
}

// sum_{i<n} term(i), accumulated in A over L lanes in the fixed order described above.
template <class A, int L, class F>
inline A lane_sum(int64_t n, F&& term) {
  A acc[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; ++k) acc[k] += term(i + k);
  for (int k = 0; k < L && i + k < n; ++k) acc[k] += term(i + k);  // tail: fewer than L
  return tree_sum<L>(acc);
}

// max_{i<n} x[i] (NaNs are skipped; callers see them through later arithmetic). -inf if n == 0.
template <class T>
inline T lane_max(const T* x, int64_t n) {
  constexpr int L = kLanes<T>;
  T acc[L];
  for (int k = 0; k < L; ++k) acc[k] = -INFINITY;
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; ++k) acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
  for (int k = 0; k < L && i + k < n; ++k) acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
  for (int w = L / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) acc[k] = acc[k + w] > acc[k] ? acc[k + w] : acc[k];
  return acc[0];
}

// exp(x) for float, branch-free so that loops calling it vectorise (std::exp does not
// without -ffast-math). Cephes expf: x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two
// so r is exact), e^r by a degree-7 polynomial, times 2^n built in the exponent bits.
// 2^n is applied as two factors so results stay exact down into the subnormal range
// and overflow to +inf. Error <= 2 ulp over the whole range (1 ulp measured, and a
// unit test sweeps it);
// exp(-inf) = 0, exp(+inf) = +inf, exp(NaN) = NaN.
inline float exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;     // few mantissa bits: n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;  // ln2 - kLn2Hi
  constexpr float kShift = 12582912.0f;      // 1.5 * 2^23: adding it rounds to an integer
  float xc = x < -104.0f ? -104.0f : x;      // below: result 0; above: +inf
  xc = xc > 89.0f ? 89.0f : xc;
  const float t = xc * kLog2e + kShift;
  const float n = t - kShift;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kShift);
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t n1 = ni >> 1, n2 = ni - n1;  // each in [-75, 64]: 2^n1, 2^n2 are normal
  const float s1 = std::bit_cast<float>((n1 + 127) << 23);
  const float s2 = std::bit_cast<float>((n2 + 127) << 23);
  const float y = (p * s1) * s2;
  return x != x ? x : y;
}

// Double precision has no fast path: the double kernels exist for gradient checks.
inline double exp(double x) { return std::exp(x); }

// out[i] = sqrt(in[i]), correctly rounded. Explicit simd because gcc, honouring errno
// (no -ffast-math), never vectorises a loop that calls sqrt. 256-bit vectors: on current
// x86 a 512-bit sqrt has half the throughput per element.
template <class T>
inline void sqrt(const T* in, T* out, int64_t n) {
  namespace stdx = std::experimental;
  using V = stdx::simd<T, stdx::simd_abi::deduce_t<T, 32 / sizeof(T)>>;
  constexpr int64_t W = static_cast<int64_t>(V::size());
  int64_t i = 0;
  for (; i + W <= n; i += W)
    stdx::sqrt(V(in + i, stdx::element_aligned)).copy_to(out + i, stdx::element_aligned);
  for (; i < n; ++i) out[i] = std::sqrt(in[i]);
}

}  // namespace llm::cpu::vec
