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
// token id is outside [0, total_vocab); nothing is written then.
// Vocab-parallel use: the table holds rows [row_begin, row_begin + vocab) of a
// total_vocab-row table; tokens outside that range get zero rows (another rank has them).
// total_vocab < 0 means the table is the whole vocabulary.
template <class T>
void embedding_forward(const int32_t* tokens, int64_t n, const T* table, int64_t vocab, int64_t dim,
                       T* out, int64_t row_begin = 0, int64_t total_vocab = -1) {
  embedding_detail::check_tokens("embedding_forward", tokens, n, total_vocab < 0 ? vocab : total_vocab);
#pragma omp parallel for schedule(static) if (n * dim >= (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = static_cast<int64_t>(tokens[i]) - row_begin;
    if (row >= 0 && row < vocab) std::memcpy(out + i * dim, table + row * dim, sizeof(T) * dim);
    else std::memset(out + i * dim, 0, sizeof(T) * dim);
  }
}

// dtable[tokens[i], :] += dout[i, :]   (adds into dtable)
// A token may repeat, so rows cannot be split between threads without races or atomics.
// Threads split the columns instead; each column block walks the tokens in order, so the
// sum for every element is taken in token order whatever the thread count.
// Vocab-parallel: only tokens in [row_begin, row_begin + vocab) add (see embedding_forward).
template <class T>
void embedding_backward(const int32_t* tokens, int64_t n, const T* dout, int64_t vocab, int64_t dim,
                        T* dtable, int64_t row_begin = 0, int64_t total_vocab = -1) {
  embedding_detail::check_tokens("embedding_backward", tokens, n, total_vocab < 0 ? vocab : total_vocab);
  constexpr int64_t kBlock = 256 / sizeof(T);  // columns per task: a few cache lines
  const int64_t nblocks = (dim + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n * dim >= (1 << 15))
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t c0 = b * kBlock, c1 = std::min(dim, c0 + kBlock);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = static_cast<int64_t>(tokens[i]) - row_begin;
      if (row < 0 || row >= vocab) continue;
      T* dst = dtable + row * dim;
      const T* src = dout + i * dim;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace llm::cpu
