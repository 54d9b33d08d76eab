// GEMM on the CPU through OpenBLAS, row-major, every transpose case.
//
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C
//
// op(A) = A (stored M×K, leading dimension lda) or Aᵀ (stored K×M);
// likewise op(B). Leading dimensions are row strides in elements.
// The float and double versions let tests run whole layers in double.
#pragma once
#include <cblas.h>

#include <cstdint>
#include <limits>
#include <stdexcept>

namespace llm::cpu {

// cblas takes int dimensions: refuse sizes it cannot represent.
inline void check_blas_dims(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  constexpr int64_t lim = std::numeric_limits<int>::max();
  if (M > lim || N > lim || K > lim || lda > lim || ldb > lim || ldc > lim)
    throw std::length_error("gemm: a dimension exceeds the 32-bit range of the BLAS interface");
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

template <>
inline void gemm<float>(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                        int64_t ldc) {
  if (M == 0 || N == 0) return;
  check_blas_dims(M, N, K, lda, ldb, ldc);
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), alpha, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}

template <>
inline void gemm<double>(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                         const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                         double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  check_blas_dims(M, N, K, lda, ldb, ldc);
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), alpha, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}

}  // namespace llm::cpu
