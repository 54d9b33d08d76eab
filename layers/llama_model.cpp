#include "layers/llama_model.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "core/ops.h"

namespace llm {

PipelineStage PipelineStage::balanced(int64_t layers, int stage, int stages) {
  const int64_t base = layers / stages, extra = layers % stages;
  PipelineStage s;
  s.first_layer = stage * base + std::min<int64_t>(stage, extra);
  s.num_layers = base + (stage < extra ? 1 : 0);
  s.first = stage == 0;
  s.last = stage == stages - 1;
  return s;
}

PipelineStage PipelineStage::split(int64_t layers, int stage, int stages, int64_t first_layers, int64_t last_layers) {
  if (first_layers == 0 && last_layers == 0) return balanced(layers, stage, stages);
  if (stages == 1) throw std::invalid_argument("--decoder-first/last-pipeline-num-layers need more than one stage");
  std::vector<int64_t> count(stages, 0);
  int64_t rest = layers, free_stages = stages;
  if (first_layers > 0) { count[0] = first_layers; rest -= first_layers; --free_stages; }
  if (last_layers > 0) { count[stages - 1] = last_layers; rest -= last_layers; --free_stages; }
  if (rest < free_stages || (free_stages > 0 && rest % free_stages != 0) || (free_stages == 0 && rest != 0))
    throw std::invalid_argument("--decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers leave " +
                                std::to_string(rest) + " of --num-layers " + std::to_string(layers) + " for " +
                                std::to_string(free_stages) + " other stage(s): that must split evenly, at least one each");
  for (int s = 0; s < stages; ++s)
    if (count[s] == 0) count[s] = rest / free_stages;
  PipelineStage p;
  for (int s = 0; s < stage; ++s) p.first_layer += count[s];
  p.num_layers = count[stage];
  p.first = stage == 0;
  p.last = stage == stages - 1;
  return p;
}

LlamaModel::LlamaModel(const ModelConfig& cfg, DType dtype, Device device, PipelineStage stage,
                       const TensorParallel& tp)
    : LlamaModel(cfg, dtype, device, std::vector<PipelineStage>{stage}, tp) {}

LlamaModel::LlamaModel(const ModelConfig& cfg, DType dtype, Device device, std::vector<PipelineStage> chunks,
                       const TensorParallel& tp)
    : cfg_(cfg.resolved()), chunks_(std::move(chunks)), tp_(tp), dtype_(dtype), device_(device),
      store_(dtype, device) {
  cfg_.validate();
  if (tp_.active()) {
    const int t = tp_.size();
    auto need = [&](int64_t n, const char* what) {
      if (n % t != 0)
        throw std::invalid_argument(std::string(what) + " " + std::to_string(n) + " is not divisible by the " +
                                    std::to_string(t) + " tensor-parallel ranks");
    };
    need(cfg_.num_attention_heads, "--num-attention-heads");
    need(cfg_.groups(), "--num-query-groups");
    need(cfg_.vocab_size, "the vocabulary size");
    need(cfg_.ffn(), "--ffn-hidden-size");
  }
  if (chunks_.empty()) throw std::invalid_argument("a model needs at least one chunk of layers");
  for (size_t c = 0; c < chunks_.size(); ++c) {
    PipelineStage& ch = chunks_[c];
    if (ch.num_layers < 0) ch.num_layers = cfg_.num_layers - ch.first_layer;
    if (ch.first_layer < 0 || ch.first_layer + ch.num_layers > cfg_.num_layers)
      throw std::invalid_argument("pipeline stage layers out of range");
    if ((ch.first && c != 0) || (ch.last && c + 1 != chunks_.size()))
      throw std::invalid_argument("only a rank's first chunk may hold the embedding and only its last the head");
  }
  // Registration order is the flat-buffer order: Hugging Face's parameter
  // order within each chunk, and the chunks in model order.
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const PipelineStage& ch = chunks_[c];
    const int ci = static_cast<int>(c);
    chunk_blocks_.push_back(blocks_.size());
    chunk_params_.push_back(store_.infos().size());
    if (ch.first) {
      const size_t at = store_.infos().size();
      embed_ = std::make_unique<Embedding>(store_, "model.embed_tokens.weight", cfg_.vocab_size, cfg_.hidden_size,
                                           cfg_.init_std, tp_);
      embed_unit_ = add_unit(at, ci, cfg_.tie_embeddings);
    }
    for (int64_t i = ch.first_layer; i < ch.first_layer + ch.num_layers; ++i) {
      const size_t at = store_.infos().size();
      blocks_.push_back(std::make_unique<TransformerBlock>(store_, i, cfg_, tp_));
      block_unit_.push_back(add_unit(at, ci, false));
    }
  }
  chunk_blocks_.push_back(blocks_.size());
  if (chunks_.back().last) {
    const int ci = static_cast<int>(chunks_.size()) - 1;
    size_t at = store_.infos().size();
    final_norm_ = std::make_unique<RMSNorm>(store_, "model.norm.weight", cfg_.hidden_size, cfg_.norm_eps);
    norm_unit_ = add_unit(at, ci, false);
    at = store_.infos().size();
    if (cfg_.tie_embeddings && embed_)
      lm_head_ = std::make_unique<Linear>(store_, embed_->weight());
    else if (cfg_.tie_embeddings)  // the last of several stages keeps its own copy, kept equal
      lm_head_ = std::make_unique<Linear>(      // through the embedding group (same name, same init)
          store_, std::vector<std::pair<std::string, int64_t>>{{"model.embed_tokens.weight", cfg_.vocab_size}},
          cfg_.hidden_size, cfg_.init_std, LinearSplit::Columns, tp_);
    else
      lm_head_ = std::make_unique<Linear>(
          store_, std::vector<std::pair<std::string, int64_t>>{{"lm_head.weight", cfg_.vocab_size}}, cfg_.hidden_size,
          cfg_.init_std, LinearSplit::Columns, tp_);
    head_unit_ = store_.infos().size() > at ? add_unit(at, ci, cfg_.tie_embeddings) : embed_unit_;
    // The output projection is vocab-parallel like the embedding: rank r holds rows [r·V/tp, (r+1)·V/tp).
    loss_ = std::make_unique<LanguageModelLoss>(cfg_.vocab_size, tp_.rank() * tp_.part(cfg_.vocab_size), tp_);
  }
  chunk_params_.push_back(store_.infos().size());
  store_.allocate();
}

int LlamaModel::add_unit(size_t first_param, int chunk, bool standalone) {
  units_.push_back({first_param, store_.infos().size(), chunk, standalone});
  return static_cast<int>(units_.size()) - 1;
}

int LlamaModel::next_unit(int unit, bool backward) const {
  const int next = backward ? unit - 1 : unit + 1;
  if (unit < 0 || next < 0 || next >= static_cast<int>(units_.size())) return -1;
  return units_[next].chunk == units_[unit].chunk ? next : -1;
}

void LlamaModel::set_recompute_selective(bool on) {
  for (auto& b : blocks_) b->set_recompute_attention_core(on);
}

void LlamaModel::set_batch(MicrobatchContext& ctx, const int32_t* windows, int64_t batch, int64_t seq,
                           int64_t counted) const {
  ctx = MicrobatchContext{};
  ctx.batch = batch;
  ctx.seq = seq;
  ctx.inputs = Tensor::empty({batch * seq}, DType::I32, MemoryCategory::Activations);
  ctx.targets = Tensor::empty({batch * seq}, DType::I32, MemoryCategory::Activations);
  int32_t* in = ctx.inputs.data<int32_t>();
  int32_t* tg = ctx.targets.data<int32_t>();
  for (int64_t b = 0; b < batch; ++b) {
    std::memcpy(in + b * seq, windows + b * (seq + 1), seq * sizeof(int32_t));
    std::memcpy(tg + b * seq, windows + b * (seq + 1) + 1, seq * sizeof(int32_t));
  }
  if (counted >= 0)
    for (int64_t i = std::min(counted, batch) * seq; i < batch * seq; ++i) tg[i] = -1;
  ctx.host_targets = ctx.targets;
  if (!device_.is_cpu()) {
    ctx.inputs = to_device(ctx.inputs);
    ctx.targets = to_device(ctx.targets);
  }
}

Tensor LlamaModel::to_device(const Tensor& host) const {
  Tensor t = Tensor::empty(host.shape(), host.dtype(), MemoryCategory::Activations, device_);
  t.copy_from(host);
  return t;
}

double LlamaModel::forward(MicrobatchContext& ctx) const {
  const int64_t rows = ctx.batch * ctx.seq, d = cfg_.hidden_size;
  const PipelineStage& chunk = chunks_.at(static_cast<size_t>(ctx.chunk));
  const size_t b0 = chunk_blocks_[ctx.chunk], nb = chunk_blocks_[ctx.chunk + 1] - b0;
  Tensor x;
  if (chunk.first) {
    x = Tensor::empty({rows, d}, dtype_, MemoryCategory::Activations, device_);
    acquire(embed_unit_, false, next_unit(embed_unit_, false));
    embed_->forward(ctx.inputs, x);
    release(embed_unit_, false);
    x = tp_.reduce(x);  // vocab-parallel: each rank looked up its own rows
  } else {
    x = ctx.input_hidden;
  }
  ctx.blocks.assign(nb, {});
  ctx.block_inputs.assign(recompute_full_ ? nb : 0, {});
  for (size_t i = 0; i < nb; ++i) {
    const int u = block_unit_[b0 + i];
    acquire(u, false, next_unit(u, false));
    if (recompute_full_) {
      ctx.block_inputs[i] = x;
      TransformerBlock::Saved scratch;  // dropped here, rebuilt in backward
      x = blocks_[b0 + i]->forward(x, ctx.batch, ctx.seq, scratch);
    } else {
      x = blocks_[b0 + i]->forward(x, ctx.batch, ctx.seq, ctx.blocks[i]);
    }
    release(u, false);
  }
  if (!chunk.last) {  // a stage before the last: the loss is computed downstream
    ctx.output_hidden = x;
    ctx.loss_sum = 0.0;
    ctx.num_targets = 0;
    return 0.0;
  }
  Tensor normed = Tensor::empty(x.shape(), dtype_, MemoryCategory::Activations, device_);
  acquire(norm_unit_, false, head_unit_ != embed_unit_ ? head_unit_ : -1);
  final_norm_->forward(x, normed, ctx.final_norm);
  release(norm_unit_, false);
  ctx.normed = normed;  // this rank's rows (with SP); backward gathers them again
  ctx.logits = Tensor::empty({rows, lm_head_->out_features()}, dtype_, MemoryCategory::Activations, device_);
  acquire(head_unit_, false, -1);
  lm_head_->forward(tp_.gather(normed), ctx.logits);
  release(head_unit_, false);
  // Per-token losses and log-sum-exps in fp32 even when the logits are 16-bit.
  const DType stats = statistics_dtype(dtype_);
  Tensor losses = Tensor::empty({rows}, stats, MemoryCategory::Activations, device_);
  ctx.lse = Tensor::empty({rows}, stats, MemoryCategory::Activations, device_);
  loss_->forward(ctx.logits, ctx.targets, losses, ctx.lse);
  // Sum in a fixed order in double so the reported loss does not depend on threads.
  double sum = 0.0;
  int64_t count = 0;
  const int32_t* tg = ctx.host_targets.data<int32_t>();
  if (!device_.is_cpu()) losses = losses.clone_to(Device::cpu(), MemoryCategory::Activations);  // one copy back
  for (int64_t r = 0; r < rows; ++r) {
    if (tg[r] < 0) continue;
    sum += stats == DType::F64 ? losses.data<double>()[r] : static_cast<double>(losses.data<float>()[r]);
    ++count;
  }
  ctx.loss_sum = sum;
  ctx.num_targets = count;
  return sum;
}

void LlamaModel::backward(MicrobatchContext& ctx, double dloss, const Tensor* grad_output) const {
  const int64_t rows = ctx.batch * ctx.seq, d = cfg_.hidden_size;
  const PipelineStage& chunk = chunks_.at(static_cast<size_t>(ctx.chunk));
  const size_t b0 = chunk_blocks_[ctx.chunk];
  Tensor dx;
  if (chunk.last) {
    Tensor dl = Tensor::empty({rows}, statistics_dtype(dtype_), MemoryCategory::Activations);
    if (dl.dtype() == DType::F64) for (int64_t r = 0; r < rows; ++r) dl.data<double>()[r] = dloss;
    else for (int64_t r = 0; r < rows; ++r) dl.data<float>()[r] = static_cast<float>(dloss);
    if (!device_.is_cpu()) dl = to_device(dl);
    loss_->backward_inplace(ctx.logits, ctx.lse, ctx.targets, dl);
    Tensor dnormed = Tensor::zeros({rows, d}, dtype_, MemoryCategory::Activations, device_);
    acquire(head_unit_, true, norm_unit_);
    lm_head_->backward(ctx.logits, tp_.gather(ctx.normed), &dnormed);
    // A weight tied to this rank's embedding gets more gradient in the embedding's backward.
    release(head_unit_, true, head_unit_ != embed_unit_);
    ctx.logits = ctx.normed = ctx.lse = Tensor();  // the largest activation: free it as soon as possible
    dnormed = tp_.reduce(dnormed);  // column-parallel head: the input gradient is a partial sum
    dx = Tensor::zeros(dnormed.shape(), dtype_, MemoryCategory::Activations, device_);
    acquire(norm_unit_, true, next_unit(norm_unit_, true));
    final_norm_->backward(dnormed, ctx.final_norm, dx);
    release(norm_unit_, true);
    ctx.final_norm = {};
  } else {
    if (!grad_output) throw std::logic_error("backward on a stage before the last needs the output's gradient");
    dx = grad_output->clone(MemoryCategory::Activations);
  }
  for (size_t i = ctx.blocks.size(); i-- > 0;) {
    const int u = block_unit_[b0 + i];
    acquire(u, true, next_unit(u, true));
    if (recompute_full_) {  // same kernels, same values
      blocks_[b0 + i]->forward(ctx.block_inputs[i], ctx.batch, ctx.seq, ctx.blocks[i]);
      ctx.block_inputs[i] = Tensor();
    }
    dx = blocks_[b0 + i]->backward(dx, ctx.blocks[i], ctx.batch, ctx.seq);
    release(u, true);
    ctx.blocks[i] = {};  // release this block's activations
  }
  if (chunk.first) {
    acquire(embed_unit_, true, -1);
    embed_->backward(ctx.inputs, tp_.gather(dx));
    release(embed_unit_, true);
  } else {
    ctx.input_grad = dx;
  }
}

LlamaModel::DecodeState LlamaModel::new_decode_state(int64_t max_len) const {
  DecodeState s;
  const int64_t gd = cfg_.groups() * cfg_.head_dim();
  for (int64_t i = 0; i < cfg_.num_layers; ++i) {
    Attention::KVCache c;
    c.k = Tensor::zeros({max_len, gd}, dtype_, MemoryCategory::Activations, device_);
    c.v = Tensor::zeros({max_len, gd}, dtype_, MemoryCategory::Activations, device_);
    s.caches.push_back(std::move(c));
  }
  return s;
}

std::vector<float> LlamaModel::decode(const std::vector<int32_t>& tokens, DecodeState& state) const {
  if (tp_.active() || chunks_.size() != 1 || !chunks_[0].first || !chunks_[0].last)
    throw std::logic_error("decode runs on one process holding the whole model (load the checkpoint unsplit)");
  const int64_t n = static_cast<int64_t>(tokens.size()), d = cfg_.hidden_size, V = cfg_.vocab_size;
  Tensor ids = Tensor::empty({n}, DType::I32, MemoryCategory::Activations);
  std::memcpy(ids.data<int32_t>(), tokens.data(), n * sizeof(int32_t));
  if (!device_.is_cpu()) ids = to_device(ids);
  Tensor x = Tensor::empty({n, d}, dtype_, MemoryCategory::Activations, device_);
  embed_->forward(ids, x);
  for (size_t i = 0; i < blocks_.size(); ++i) x = blocks_[i]->decode(x, state.caches[i]);
  Tensor last = x.slice_rows(n - 1, n);
  Tensor normed = Tensor::empty({1, d}, dtype_, MemoryCategory::Activations, device_);
  RMSNorm::Saved scratch;
  final_norm_->forward(last, normed, scratch);
  // fp32 logits on the CPU (its ops mix dtypes); a GPU GEMM writes the operands' dtype,
  // widened on the host after the copy back.
  Tensor logits = Tensor::empty({1, V}, device_.is_cpu() ? statistics_dtype(dtype_) : dtype_,
                                MemoryCategory::Activations, device_);
  lm_head_->forward(normed, logits);
  if (!device_.is_cpu())
    logits = logits.clone_to(Device::cpu(), MemoryCategory::Activations).to(DType::F32, MemoryCategory::Activations);
  std::vector<float> out(V);
  for (int64_t v = 0; v < V; ++v)
    out[v] = logits.dtype() == DType::F64 ? static_cast<float>(logits.data<double>()[v]) : logits.data<float>()[v];
  return out;
}

}  // namespace llm
