// Next-token cross-entropy over the output projection's logits, fused with
// the softmax (probabilities are never stored: forward keeps lse per row,
// backward turns the logits into their gradient in place).
//
// Vocab-parallel under tensor parallelism: each rank holds vocab/tp columns
// of the logits and they are never gathered. The row maxima are max-reduced,
// then the sums of exp(x − max) and the target logits (from the rank that
// holds each target) sum-reduced: two small all-reduces of [rows] values.
#pragma once
#include "layers/tensor_parallel.h"

namespace llm {

class LanguageModelLoss {
 public:
  // vocab_begin: the first vocabulary column this rank holds, of vocab.
  LanguageModelLoss(int64_t vocab, int64_t vocab_begin, const TensorParallel& tp = {})
      : vocab_(vocab), vocab_begin_(vocab_begin), tp_(tp) {}
  // losses, lse [rows]; a target −1 is ignored (loss 0). Identical on every tp rank.
  void forward(const Tensor& logits, const Tensor& targets, Tensor& losses, Tensor& lse) const;
  // logits ← ∂(Σ dloss[r]·loss[r])/∂logits, in place.
  void backward_inplace(Tensor& logits, const Tensor& lse, const Tensor& targets, const Tensor& dloss) const;

 private:
  int64_t vocab_, vocab_begin_;
  TensorParallel tp_;
};

}  // namespace llm
