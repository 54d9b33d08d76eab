// Token embedding: a [vocab, hidden] table looked up by token id.
// Vocab-parallel under tensor parallelism: each rank holds vocab/tp rows; a
// token another rank holds gives a zero row here, so the ranks' outputs are
// partial sums that the model reduces (layers/tensor_parallel.h).
#pragma once
#include "layers/parameters.h"
#include "layers/tensor_parallel.h"

namespace llm {

class Embedding {
 public:
  Embedding(ParameterStore& store, const std::string& name, int64_t vocab, int64_t hidden, double init_std,
            const TensorParallel& tp = {});
  // out [rows, hidden] = table[tokens] (this rank's rows; zeros for the others')
  void forward(const Tensor& tokens, Tensor& out) const;
  // table.grad += scatter of dout (rows this rank holds)
  void backward(const Tensor& tokens, const Tensor& dout) const;
  const ParamRef& weight() const { return weight_; }
  int64_t vocab_begin() const { return vocab_begin_; }  // first row held here
  int64_t vocab_size() const { return vocab_; }         // the full vocabulary

 private:
  ParameterStore& store_;
  int64_t vocab_, vocab_begin_;
  ParamRef weight_;
};

}  // namespace llm
