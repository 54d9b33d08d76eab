// Fused softmax + cross-entropy over the vocabulary. Probabilities are never stored: the
// forward pass keeps only logsumexp per row and the backward pass recomputes
// exp(logit − lse) on the fly (into the logits buffer itself, if the caller wishes).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/cpu/vec_math.h"

namespace llm::cpu {

namespace cross_entropy_detail {
inline void check_targets(const char* who, const int32_t* targets, int64_t rows, int64_t V) {
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] < -1 || targets[r] >= V) {
      throw std::out_of_range(std::string(who) + ": target " + std::to_string(targets[r]) +
                              " at row " + std::to_string(r) + " is outside [-1, " +
                              std::to_string(V) + ") (vocab size " + std::to_string(V) +
                              "; -1 means ignore)");
    }
  }
}

// Σ_j exp(x[j] − m) over one row. Two-level fixed-order sum: T lanes within
// blocks of 256 (8 terms a lane for float), block sums added in double. As
// accurate as summing in double, faster, and independent of threads.
template <class T>
double sum_exp(const T* x, int64_t V, T m) {
  constexpr int64_t kBlock = 256;
  double sum = 0;
  for (int64_t b = 0; b < V; b += kBlock) {
    const T* xb = x + b;
    sum += vec::lane_sum<T, vec::kLanes<T>>(std::min(kBlock, V - b), [&](int64_t j) { return vec::exp(xb[j] - m); });
  }
  return sum;
}
}  // namespace cross_entropy_detail

// logits: [rows, V]. For each row: lse[r] = log sum_j exp(logits[r, j]) and
// loss[r] = lse[r] − logits[r, target[r]]; target −1 means "ignore": loss 0 (lse is
// still written). Throws std::out_of_range, before writing anything, on a target outside
// [−1, V). lse subtracts the row max and sums the exponentials in a fixed order (see
// below), so it is accurate and independent of thread count and alignment.
template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, int64_t rows, int64_t V,
                           T* loss, T* lse) {
  cross_entropy_detail::check_targets("cross_entropy_forward", targets, rows, V);
#pragma omp parallel for schedule(static) if (rows * V >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = logits + r * V;
    T m = vec::lane_max(x, V);
    if (std::isinf(m)) m = 0;  // all −inf (or a +inf): don't form inf − inf
    const double sum = cross_entropy_detail::sum_exp(x, V, m);
    const T l = static_cast<T>(static_cast<double>(m) + std::log(sum));
    lse[r] = l;
    loss[r] = targets[r] < 0 ? T(0) : l - x[targets[r]];
  }
}

// dlogits[r, j] = (exp(logits[r, j] − lse[r]) − [j == target[r]]) · dloss[r]; ignored rows
// (target −1) get zeros. OVERWRITES dlogits (does not add), and dlogits may be the same
// buffer as logits (in place, as llm.c does: the logits are dead after the loss).
//
// Vocab-parallel use: the logits are columns [col_begin, col_begin + V) of a
// total_V-wide row (another rank holds the rest), lse is the full row's, and
// the one-hot term is subtracted only where the target falls in this part.
template <class T>
void cross_entropy_backward(const T* logits, const T* lse, const int32_t* targets, const T* dloss,
                            int64_t rows, int64_t V, T* dlogits, int64_t col_begin = 0, int64_t total_V = -1) {
  cross_entropy_detail::check_targets("cross_entropy_backward", targets, rows, total_V < 0 ? V : total_V);
#pragma omp parallel for schedule(static) if (rows * V >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = logits + r * V;
    T* d = dlogits + r * V;
    const int32_t t = targets[r];
    if (t < 0) {
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) d[j] = T(0);
      continue;
    }
    const T l = lse[r], g = dloss[r];
    const int64_t tl = static_cast<int64_t>(t) - col_begin;  // the target's column in this part
    const bool mine = tl >= 0 && tl < V;
    const T xt = mine ? x[tl] : T(0);  // read before the loop may overwrite it
    // omp simd: each iteration reads x[j] before writing d[j] and touches nothing else,
    // so in-place use is fine; it also spares gcc the alias check that would fall back to
    // scalar code when d == x.
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) d[j] = vec::exp(x[j] - l) * g;
    if (mine) d[tl] = (vec::exp(xt - l) - T(1)) * g;
  }
}

// Vocab-parallel forward, the local half: each rank holds columns
// [col_begin, col_begin + V) of every row. Pass 1 gives the local row maxima
// (to be max-reduced over ranks); pass 2, given the global maxima, the local
// sum of exp(x − max) (in double, fixed order) and the target's logit where
// this rank holds it (0 elsewhere), both to be sum-reduced. Then
// lse = max + log(sum) and loss = lse − target logit, as one rank computes.
template <class T>
void cross_entropy_row_max(const T* logits, int64_t rows, int64_t V, T* row_max) {
#pragma omp parallel for schedule(static) if (rows * V >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) row_max[r] = vec::lane_max(logits + r * V, V);
}

template <class T>
void cross_entropy_partial_sums(const T* logits, const int32_t* targets, int64_t rows, int64_t V,
                                int64_t col_begin, int64_t total_V, const T* row_max, double* sum_exp,
                                double* target_logit) {
  cross_entropy_detail::check_targets("cross_entropy_forward", targets, rows, total_V);
#pragma omp parallel for schedule(static) if (rows * V >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = logits + r * V;
    T m = row_max[r];
    if (std::isinf(m)) m = 0;
    sum_exp[r] = cross_entropy_detail::sum_exp(x, V, m);
    const int64_t tl = static_cast<int64_t>(targets[r]) - col_begin;
    target_logit[r] = (targets[r] >= 0 && tl >= 0 && tl < V) ? static_cast<double>(x[tl]) : 0.0;
  }
}

}  // namespace llm::cpu
