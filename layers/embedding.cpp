#include "layers/embedding.h"

#include "core/ops.h"

namespace llm {

Embedding::Embedding(ParameterStore& store, const std::string& name, int64_t vocab, int64_t hidden,
                     double init_std)
    : store_(store), weight_(store.add(name, {vocab, hidden}, InitRule::Normal, init_std, true)) {}

void Embedding::forward(const Tensor& tokens, Tensor& out) const {
  ops::embedding_forward(tokens, store_.value(weight_), out);
}

void Embedding::backward(const Tensor& tokens, const Tensor& dout) const {
  Tensor g = store_.grad(weight_);
  ops::embedding_backward(tokens, dout, g);
}

}  // namespace llm
