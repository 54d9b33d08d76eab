#include "layers/embedding.h"

#include "core/ops.h"

namespace llm {

Embedding::Embedding(ParameterStore& store, const std::string& name, int64_t vocab, int64_t hidden,
                     double init_std, const TensorParallel& tp)
    : store_(store),
      vocab_(vocab),
      vocab_begin_(tp.rank() * tp.part(vocab)),
      weight_(store.add(name, {tp.part(vocab), hidden}, InitRule::Normal, init_std, true, tp.shard(0, vocab))) {}

void Embedding::forward(const Tensor& tokens, Tensor& out) const {
  ops::embedding_forward(tokens, store_.value(weight_), out, vocab_begin_, vocab_);
}

void Embedding::backward(const Tensor& tokens, const Tensor& dout) const {
  Tensor g = store_.grad(weight_);
  ops::embedding_backward(tokens, dout, g, vocab_begin_, vocab_);
}

}  // namespace llm
