#include "layers/attention.h"

#include <cmath>
#include <stdexcept>

namespace llm {

Attention::Attention(ParameterStore& store, const std::string& prefix, const ModelConfig& cfg,
                     const TensorParallel& tp)
    : heads_(tp.part(cfg.num_attention_heads)),
      groups_(tp.part(cfg.groups())),
      head_dim_(cfg.head_dim()),
      rope_theta_(cfg.rope_theta),
      qkv_(store,
           {{prefix + "q_proj.weight", cfg.num_attention_heads * head_dim_},
            {prefix + "k_proj.weight", cfg.groups() * head_dim_},
            {prefix + "v_proj.weight", cfg.groups() * head_dim_}},
           cfg.hidden_size, cfg.init_std, LinearSplit::Columns, tp),
      // Output projections are scaled by 1/√(2·layers) (GPT-2 / Megatron practice).
      o_proj_(store, {{prefix + "o_proj.weight", cfg.hidden_size}}, cfg.num_attention_heads * head_dim_,
              cfg.init_std / std::sqrt(2.0 * static_cast<double>(cfg.num_layers)), LinearSplit::Rows, tp) {}

void Attention::forward(const Tensor& x, int64_t batch, int64_t seq, Tensor& y, Saved& saved) const {
  const int64_t rows = batch * seq;
  const auto l = layout(batch, seq);
  saved.x = x;
  saved.qkv = Tensor::empty({rows, l.row_stride()}, x.dtype(), MemoryCategory::Activations, x.device());
  qkv_.forward(x, saved.qkv);
  ops::rope_forward(saved.qkv, l, 0, rope_theta_);
  saved.attn = Tensor::empty({rows, heads_ * head_dim_}, x.dtype(), MemoryCategory::Activations, x.device());
  saved.lse = Tensor::empty({batch, heads_, seq}, statistics_dtype(x.dtype()), MemoryCategory::Activations, x.device());
  ops::attention_forward(saved.qkv, l, saved.attn, saved.lse);
  o_proj_.forward(saved.attn, y, /*accumulate=*/true);
  if (recompute_core_) saved.attn = saved.lse = Tensor();  // rebuilt in backward
}

void Attention::backward(const Tensor& dy, const Saved& saved, int64_t batch, int64_t seq, Tensor& dx) const {
  const int64_t rows = batch * seq;
  const auto l = layout(batch, seq);
  Tensor attn = saved.attn, lse = saved.lse;
  if (!attn.defined()) {  // selective recomputation: the same kernel on the same q/k/v gives the same values
    attn = Tensor::empty({rows, heads_ * head_dim_}, dy.dtype(), MemoryCategory::Activations, dy.device());
    lse = Tensor::empty({batch, heads_, seq}, statistics_dtype(dy.dtype()), MemoryCategory::Activations, dy.device());
    ops::attention_forward(saved.qkv, l, attn, lse);
  }
  Tensor dattn = Tensor::zeros({rows, heads_ * head_dim_}, dy.dtype(), MemoryCategory::Activations, dy.device());
  o_proj_.backward(dy, attn, &dattn);
  Tensor dqkv = Tensor::zeros({rows, l.row_stride()}, dy.dtype(), MemoryCategory::Activations, dy.device());
  ops::attention_backward(dattn, saved.qkv, l, attn, lse, dqkv);
  ops::rope_backward(dqkv, l, 0, rope_theta_);
  qkv_.backward(dqkv, saved.x, &dx);
}

void Attention::decode(const Tensor& x, KVCache& cache, Tensor& y) const {
  const int64_t tq = x.size(0), hd = heads_ * head_dim_, gd = groups_ * head_dim_;
  const int64_t max_len = cache.k.size(0);
  if (cache.length + tq > max_len)
    throw std::length_error("KV cache full: " + std::to_string(cache.length + tq) + " positions > " +
                            std::to_string(max_len));
  const auto l = layout(1, tq);
  Tensor qkv = Tensor::empty({tq, l.row_stride()}, x.dtype(), MemoryCategory::Activations, x.device());
  qkv_.forward(x, qkv);
  ops::rope_forward(qkv, l, cache.length, rope_theta_);
  // Append k and v of the new positions to the cache, then attend to all of it.
  Tensor q = Tensor::empty({tq, hd}, x.dtype(), MemoryCategory::Activations, x.device());
  // Tensor copies (not memcpy): on a GPU they are device-to-device copies on the compute stream.
  const int64_t ld = l.row_stride();
  for (int64_t t = 0; t < tq; ++t) {
    q.flat_view(t * hd, {hd}).copy_from(qkv.flat_view(t * ld, {hd}));
    cache.k.flat_view((cache.length + t) * gd, {gd}).copy_from(qkv.flat_view(t * ld + hd, {gd}));
    cache.v.flat_view((cache.length + t) * gd, {gd}).copy_from(qkv.flat_view(t * ld + hd + gd, {gd}));
  }
  cache.length += tq;
  Tensor attn = Tensor::empty({tq, hd}, x.dtype(), MemoryCategory::Activations, x.device());
  ops::attention_decode(q, cache.k, cache.v, cache.length, heads_, groups_, head_dim_, attn);
  o_proj_.forward(attn, y, /*accumulate=*/true);
}

}  // namespace llm
