// Token embedding: a [vocab, hidden] table looked up by token id.
#pragma once
#include "layers/parameters.h"

namespace llm {

class Embedding {
 public:
  Embedding(ParameterStore& store, const std::string& name, int64_t vocab, int64_t hidden, double init_std);
  // out [rows, hidden] = table[tokens]
  void forward(const Tensor& tokens, Tensor& out) const;
  // table.grad += scatter of dout
  void backward(const Tensor& tokens, const Tensor& dout) const;
  const ParamRef& weight() const { return weight_; }

 private:
  ParameterStore& store_;
  ParamRef weight_;
};

}  // namespace llm
