// Token embedding: a row gather forward, a row scatter-add backward.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace llm::cpu {

namespace embedding_detail {
// Validates every id up front, so a bad batch leaves the outputs untouched.
inline void check_tokens(const char* who, const int32_t* tokens, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      throw std::out_of_range(std::string(who) + ": token id " + std::to_string(tokens[i]) +
                              " at position " + std::to_string(i) +
                              " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
  }
}
}  // namespace embedding_detail

// out[i, :] = table[tokens[i], :]   (out: [n, dim], table: [vocab, dim])
// Throws std::out_of_range naming the id, its position and the vocabulary size if a
// token id is outside [0, vocab); nothing is written then.
template <class T>
void embedding_forward(const int32_t* tokens, int64_t n, const T* table, int64_t vocab, int64_t dim,
                       T* out) {
  embedding_detail::check_tokens("embedding_forward", tokens, n, vocab);
#pragma omp parallel for schedule(static) if (n * dim >= (1 << 15))
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * dim, table + static_cast<int64_t>(tokens[i]) * dim, sizeof(T) * dim);
}

// dtable[tokens[i], :] += dout[i, :]   (adds into dtable)
// A token may repeat, so rows cannot be split between threads without races or atomics.
// Threads split the columns instead; each column block walks the tokens in order, so the
// sum for every element is taken in token order whatever the thread count.
template <class T>
void embedding_backward(const int32_t* tokens, int64_t n, const T* dout, int64_t vocab, int64_t dim,
                        T* dtable) {
  embedding_detail::check_tokens("embedding_backward", tokens, n, vocab);
  constexpr int64_t kBlock = 256 / sizeof(T);  // columns per task: a few cache lines
  const int64_t nblocks = (dim + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n * dim >= (1 << 15))
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t c0 = b * kBlock, c1 = std::min(dim, c0 + kBlock);
    for (int64_t i = 0; i < n; ++i) {
      T* dst = dtable + static_cast<int64_t>(tokens[i]) * dim;
      const T* src = dout + i * dim;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace llm::cpu
