#include "layers/transformer_block.h"

#include "core/ops.h"

namespace llm {

static std::string layer_prefix(int64_t i) { return "model.layers." + std::to_string(i) + "."; }

TransformerBlock::TransformerBlock(ParameterStore& store, int64_t index, const ModelConfig& cfg,
                                   const TensorParallel& tp)
    : tp_(tp),
      norm1_(store, layer_prefix(index) + "input_layernorm.weight", cfg.hidden_size, cfg.norm_eps),
      attn_(store, layer_prefix(index) + "self_attn.", cfg, tp),
      norm2_(store, layer_prefix(index) + "post_attention_layernorm.weight", cfg.hidden_size, cfg.norm_eps),
      mlp_(store, layer_prefix(index) + "mlp.", cfg, tp) {}

static Tensor like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), MemoryCategory::Activations, t.device()); }

static Tensor zeros_like_rows(const Tensor& t, int64_t rows) {
  return Tensor::zeros({rows, t.size(1)}, t.dtype(), MemoryCategory::Activations, t.device());
}

Tensor TransformerBlock::forward(const Tensor& x, int64_t batch, int64_t seq, Saved& saved) const {
  if (tp_.active()) {
    const int64_t rows = batch * seq;
    Tensor n1 = like(x);
    norm1_.forward(x, n1, saved.norm1);
    Tensor partial = zeros_like_rows(x, rows);
    attn_.forward(tp_.gather(n1), batch, seq, partial, saved.attn);
    saved.attn.x = n1;  // with SP only this rank's rows are kept; backward gathers them again
    Tensor n2 = like(x);
    const Tensor h = norm2_.forward_add(x, tp_.reduce(partial), n2, saved.norm2);  // h = x + attention
    Tensor partial2 = zeros_like_rows(h, rows);
    mlp_.forward(tp_.gather(n2), partial2, saved.mlp);
    saved.mlp.x = n2;
    Tensor out = h.clone(MemoryCategory::Activations);  // h is norm2's saved input: keep it
    ops::add_(out, tp_.reduce(partial2));
    return out;
  }
  // One rank: the branches add straight into the residual copies.
  Tensor n1 = like(x);
  norm1_.forward(x, n1, saved.norm1);
  Tensor h = x.clone(MemoryCategory::Activations);  // residual; attention adds into it
  attn_.forward(n1, batch, seq, h, saved.attn);
  Tensor n2 = like(h);
  norm2_.forward(h, n2, saved.norm2);
  Tensor out = h.clone(MemoryCategory::Activations);
  mlp_.forward(n2, out, saved.mlp);
  return out;
}

Tensor TransformerBlock::backward(const Tensor& dout, const Saved& saved, int64_t batch, int64_t seq) const {
  if (tp_.active()) {
    const int64_t rows = batch * seq;
    Tensor dh = dout.clone(MemoryCategory::Activations);
    // The branches' inputs were kept as this rank's rows: gather them again
    // (Megatron's choice: one more all-gather instead of T× the memory).
    MLP::Saved mlp = saved.mlp;
    mlp.x = tp_.gather(saved.mlp.x);
    Tensor dn2_partial = zeros_like_rows(dout, rows);
    mlp_.backward(tp_.gather(dout), mlp, dn2_partial);
    mlp = {};
    norm2_.backward(tp_.reduce(dn2_partial), saved.norm2, dh);
    Attention::Saved attn = saved.attn;
    attn.x = tp_.gather(saved.attn.x);
    Tensor dn1_partial = zeros_like_rows(dout, rows);
    attn_.backward(tp_.gather(dh), attn, batch, seq, dn1_partial);
    Tensor dx = dh;
    norm1_.backward(tp_.reduce(dn1_partial), saved.norm1, dx);
    return dx;
  }
  // The residual path passes dout through unchanged; each branch adds its part.
  Tensor dh = dout.clone(MemoryCategory::Activations);
  Tensor dn2 = Tensor::zeros(dout.shape(), dout.dtype(), MemoryCategory::Activations, dout.device());
  mlp_.backward(dout, saved.mlp, dn2);
  norm2_.backward(dn2, saved.norm2, dh);
  Tensor dn1 = Tensor::zeros(dout.shape(), dout.dtype(), MemoryCategory::Activations, dout.device());
  attn_.backward(dh, saved.attn, batch, seq, dn1);
  Tensor dx = dh;  // dh is no longer needed on its own: reuse it as dx
  norm1_.backward(dn1, saved.norm1, dx);
  return dx;
}

Tensor TransformerBlock::decode(const Tensor& x, Attention::KVCache& cache) const {
  Saved scratch;
  Tensor n1 = like(x);
  norm1_.forward(x, n1, scratch.norm1);
  Tensor h = x.clone(MemoryCategory::Activations);
  attn_.decode(n1, cache, h);
  Tensor n2 = like(h);
  norm2_.forward(h, n2, scratch.norm2);
  Tensor out = h.clone(MemoryCategory::Activations);
  mlp_.forward(n2, out, scratch.mlp);
  return out;
}

}  // namespace llm
