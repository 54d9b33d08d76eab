// The LLaMA causal language model (Hugging Face LlamaForCausalLM semantics):
// embedding → L blocks → final RMSNorm → output projection → mean next-token
// cross-entropy. Explicit forward and backward over a per-microbatch context.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "layers/embedding.h"
#include "layers/linear.h"
#include "layers/lm_loss.h"
#include "layers/model_config.h"
#include "layers/parameter_hooks.h"
#include "layers/rmsnorm.h"
#include "layers/transformer_block.h"

namespace llm {

// The part of the model a pipeline stage holds: a contiguous run of blocks,
// plus the embedding on the first stage and norm + head + loss on the last.
struct PipelineStage {
  int64_t first_layer = 0, num_layers = -1;  // -1: all layers
  bool first = true, last = true;
  // Stage `stage` of `stages` for a model of `layers` blocks: balanced, the
  // first (layers mod stages) stages taking one block more.
  static PipelineStage balanced(int64_t layers, int stage, int stages);
  // As balanced(), but the first and/or last stage take a given number of
  // blocks (0: not fixed) and the other stages share the rest evenly
  // (Megatron's --decoder-first/last-pipeline-num-layers). Throws
  // std::invalid_argument naming those flags when the rest does not divide.
  static PipelineStage split(int64_t layers, int stage, int stages, int64_t first_layers, int64_t last_layers);
};

// Everything one microbatch's backward needs, kept between forward and backward.
// Dropping it and re-running forward is activation recomputation.
struct MicrobatchContext {
  int64_t batch = 0, seq = 0;
  int chunk = 0;  // which of the rank's model chunks (interleaved pipeline)
  Tensor inputs, targets;  // I32 [batch·seq], on the model's device
  Tensor host_targets;     // the targets on the host (the same tensor on the CPU)
  std::vector<TransformerBlock::Saved> blocks;
  std::vector<Tensor> block_inputs;  // with full recomputation: all that is kept per block
  RMSNorm::Saved final_norm;
  Tensor normed;  // final norm output (the output projection's input), in the residual layout
  Tensor logits;  // [rows, vocab]; replaced by its gradient in backward
  Tensor lse;     // [rows]
  // Pipeline activations are in the residual layout: [rows, hidden], or the
  // rank's rows/tp with sequence parallelism.
  Tensor input_hidden;   // received activation (stages after the first)
  Tensor output_hidden;  // activation to send on (stages before the last)
  Tensor input_grad;     // gradient to send back (stages after the first)
  double loss_sum = 0.0;     // sum of per-token losses
  int64_t num_targets = 0;   // tokens that count (targets ≠ −1)
};

class LlamaModel {
 public:
  // tp: this rank's tensor-parallel group (weights split over its ranks, see
  // layers/tensor_parallel.h); the default is one rank holding everything.
  LlamaModel(const ModelConfig& cfg, DType dtype = DType::F32, Device device = Device::cpu(),
             PipelineStage stage = {}, const TensorParallel& tp = {});
  // Several chunks of layers on one rank (interleaved pipeline: chunk c of
  // rank r is model stage c·p + r); MicrobatchContext::chunk picks the one a
  // forward/backward runs. Only chunk 0 may hold the embedding and only the
  // last chunk the head.
  LlamaModel(const ModelConfig& cfg, DType dtype, Device device, std::vector<PipelineStage> chunks,
             const TensorParallel& tp = {});
  const std::vector<PipelineStage>& chunks() const { return chunks_; }
  int num_chunks() const { return static_cast<int>(chunks_.size()); }
  // Parameters registered by chunk c are infos [chunk_param_begin(c), chunk_param_begin(c + 1)).
  size_t chunk_param_begin(int c) const { return chunk_params_.at(static_cast<size_t>(c)); }
  const TensorParallel& tensor_parallel() const { return tp_; }
  // Rows of the activations passed between stages for `rows` tokens.
  int64_t activation_rows(int64_t rows) const { return tp_.residual_rows(rows); }
  // Full activation recomputation: forward keeps only each block's input and
  // backward reruns the block's forward just before its backward (one extra
  // forward of the blocks, Megatron's --recompute-granularity full).
  void set_recompute_full(bool on) { recompute_full_ = on; }
  // Selective recomputation: only the attention core is rerun in backward.
  void set_recompute_selective(bool on);
  const ModelConfig& config() const { return cfg_; }
  ParameterStore& params() { return store_; }
  const ParameterStore& params() const { return store_; }
  void initialize(uint64_t seed) { store_.initialize(seed); }
  // The parameter units in registration order (see layers/parameter_hooks.h)
  // and who is told when they are used (none: every parameter always held).
  const std::vector<ParameterUnit>& units() const { return units_; }
  void set_parameter_hooks(ParameterHooks* hooks) { hooks_ = hooks; }

  // windows: `batch` rows of seq+1 token ids; inputs are the first seq, targets the last seq.
  // Targets of the windows from `counted` on are -1 (ignored: padding); -1: all count.
  // On a GPU the ids are copied to the device; the host targets stay for counting.
  void set_batch(MicrobatchContext& ctx, const int32_t* windows, int64_t batch, int64_t seq,
                 int64_t counted = -1) const;
  // Computes the per-token losses; returns their sum (also in ctx.loss_sum).
  double forward(MicrobatchContext& ctx) const;
  // Accumulates parameter gradients of (dloss · sum of token losses).
  // dloss = 1 / (tokens in the global batch) gives the gradient of the mean.
  // On a stage that is not the last, grad_output is the gradient of
  // ctx.output_hidden; on one that is not the first, ctx.input_grad is set.
  void backward(MicrobatchContext& ctx, double dloss, const Tensor* grad_output = nullptr) const;

  // Generation: feeds `tokens` (positions after the cache) and returns the
  // logits of the last one [vocab].
  struct DecodeState {
    std::vector<Attention::KVCache> caches;
    int64_t length() const { return caches.empty() ? 0 : caches[0].length; }
  };
  DecodeState new_decode_state(int64_t max_len) const;
  std::vector<float> decode(const std::vector<int32_t>& tokens, DecodeState& state) const;

 private:
  Tensor to_device(const Tensor& host) const;  // a copy on the model's device
  ModelConfig cfg_;
  std::vector<PipelineStage> chunks_;
  std::vector<size_t> chunk_blocks_;  // chunk c's blocks: [chunk_blocks_[c], chunk_blocks_[c + 1])
  std::vector<size_t> chunk_params_;  // chunk c's parameter infos, likewise
  int add_unit(size_t first_param, int chunk, bool standalone);  // the parameters registered since first_param
  void acquire(int unit, bool backward, int prefetch) const {
    if (hooks_ && unit >= 0) hooks_->acquire(unit, backward, prefetch);
  }
  void release(int unit, bool backward, bool grads_complete = true) const {
    if (hooks_ && unit >= 0) hooks_->release(unit, backward, grads_complete);
  }
  // The unit used after `unit` in forward (or before it, in backward) within its chunk; −1 if none.
  int next_unit(int unit, bool backward) const;
  std::vector<ParameterUnit> units_;
  int embed_unit_ = -1, norm_unit_ = -1, head_unit_ = -1;  // head_unit_ == embed_unit_ when tied here
  std::vector<int> block_unit_;
  ParameterHooks* hooks_ = nullptr;
  TensorParallel tp_;
  bool recompute_full_ = false;
  DType dtype_;
  Device device_;
  ParameterStore store_;
  std::unique_ptr<Embedding> embed_;
  std::vector<std::unique_ptr<TransformerBlock>> blocks_;
  std::unique_ptr<RMSNorm> final_norm_;
  std::unique_ptr<Linear> lm_head_;
  std::unique_ptr<LanguageModelLoss> loss_;
};

}  // namespace llm
