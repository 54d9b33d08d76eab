// The op interface: what layers call. Each op checks its operands and
// dispatches on device and dtype to a kernel (core/cpu/*.h today, core/cuda/
// with the CUDA backend), so layers never know which backend runs them.
//
// Conventions, shared by every op:
//  - activations are row-major [rows, features] with rows = batch × sequence;
//  - weights are [out_features, in_features] (Hugging Face layout, y = x·Wᵀ);
//  - backward ops ADD into gradient outputs (callers zero them) unless noted;
//  - dtypes: every floating operand is F64 (all of them: the double kernels, for
//    gradient checks), or any mix of F32, BF16 and F16: "compute in fp32, store in 16
//    bits". Each 16-bit operand is then converted to an F32 copy charged to
//    MemoryCategory::Workspace (outputs that are added into or updated in place with
//    their current values), the F32 kernel runs, and 16-bit outputs are rounded back
//    to nearest even. The result is bitwise the F32 op on the operands' values with
//    its outputs rounded. Token ids and targets are I32. sum_of_squares and
//    all_finite read 16-bit values directly (no copy).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace llm::ops {

// y = x·Wᵀ (accumulate: y += x·Wᵀ). x [rows, in], w [out, in], y [rows, out].
void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate = false);
// dx += dy·W (skipped when dx is null), dw += dyᵀ·x.
void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor& dw);

// out[i] = table[tokens[i]]; throws on an id outside the table.
// Vocab-parallel: the table holds rows [row_begin, row_begin + rows) of a
// total_vocab-row table; other ids give zero rows and add no gradient.
void embedding_forward(const Tensor& tokens, const Tensor& table, Tensor& out, int64_t row_begin = 0,
                       int64_t total_vocab = -1);
void embedding_backward(const Tensor& tokens, const Tensor& dout, Tensor& dtable, int64_t row_begin = 0,
                        int64_t total_vocab = -1);

// y = x·rsqrt(mean(x²)+eps)·w per row; rstd [rows] saved for backward.
void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd);
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      Tensor& dx, Tensor& dw);
// The residual add fused into the norm: h = x + residual, then y = rmsnorm(h)·w (one
// pass on the GPU). h may be x itself (in place); its backward is rmsnorm_backward
// with dx the residual stream's gradient (it adds into dx).
void add_rmsnorm_forward(const Tensor& x, const Tensor& residual, const Tensor& w, double eps, Tensor& h,
                         Tensor& y, Tensor& rstd);

// Layout of q, k and v inside one fused projection output [rows, (H + 2G)·D]:
// columns [0, HD) are q, [HD, HD+GD) k, then v.
struct QkvLayout {
  int64_t batch, seq, heads, groups, head_dim;
  int64_t row_stride() const { return (heads + 2 * groups) * head_dim; }
};

// Rotary embedding of q and k in place (HF rotate_half), positions pos_offset + t.
void rope_forward(Tensor& qkv, const QkvLayout& l, int64_t pos_offset, double theta);
// The transposed rotation applied in place to dq and dk (overwrite semantics).
void rope_backward(Tensor& dqkv, const QkvLayout& l, int64_t pos_offset, double theta);

// Causal grouped-query attention of the fused qkv buffer, flash style: out [rows, H·D]
// and lse [batch, H, seq] (kept for backward instead of any T×T matrix).
void attention_forward(const Tensor& qkv, const QkvLayout& l, Tensor& out, Tensor& lse);
// dqkv += gradients of q, k and v (same fused layout).
void attention_backward(const Tensor& dout, const Tensor& qkv, const QkvLayout& l,
                        const Tensor& out, const Tensor& lse, Tensor& dqkv);
// Decoding with a KV cache: q [tq, H·D] (batch 1) attends to keys/values
// [tk, G·D] of which q's rows are the last tq positions.
void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t tk,
                      int64_t heads, int64_t groups, int64_t head_dim, Tensor& out);

// out = silu(gate)·up for a fused [rows, 2F] gate_up buffer; out [rows, F].
void swiglu_forward(const Tensor& gate_up, Tensor& out);
void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up);

// Per-row loss = logsumexp(logits) − logits[target]; target −1 is ignored (loss 0).
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor& lse);
// dlogits = (softmax − onehot)·dloss[row], written over `logits` in place (overwrite).
// Vocab-parallel: logits are columns [col_begin, col_begin + V) of total_V, lse the full rows'.
void cross_entropy_backward_inplace(Tensor& logits, const Tensor& lse, const Tensor& targets,
                                    const Tensor& dloss, int64_t col_begin = 0, int64_t total_V = -1);
// The vocab-parallel forward's local parts (see core/cpu/cross_entropy.h):
// row_max [rows] (logits' dtype); then, given the global maxima, stats F64
// [2, rows]: the sums of exp(x − max), and the target logits held here (else 0).
void cross_entropy_row_max(const Tensor& logits, Tensor& row_max);
void cross_entropy_partial_sums(const Tensor& logits, const Tensor& targets, int64_t col_begin, int64_t total_V,
                                const Tensor& row_max, Tensor& stats);

// One AdamW step on a flat range (PyTorch's order of operations); step is 1-based.
// Mixed precision: an F32 param (master weights) with a BF16/F16 grad works (the grad
// is read as F32); exp_avg and exp_avg_sq would normally be F32.
struct AdamWParams {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;
  double grad_scale;  // gradients are multiplied by this first (clipping)
};
void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWParams& p);
// Several ranges in one call (one launch on the GPU: the multi-tensor AdamW). Each
// segment has its own weight decay (p.weight_decay is ignored); when model_copy is
// defined (a 16-bit copy of param) it receives the updated param, rounded, in the
// same pass.
struct AdamWSegmentTensors {
  Tensor param, grad, exp_avg, exp_avg_sq;
  Tensor model_copy;  // optional
  double weight_decay = 0.0;
};
void adamw_multi_step(const std::vector<AdamWSegmentTensors>& segments, const AdamWParams& p);

// y += x element-wise (same numel and dtype).
void add_(Tensor& y, const Tensor& x);

double sum_of_squares(const Tensor& x);  // in double, deterministic
// sum_of_squares of each tensor (one launch and one copy back on the GPU).
std::vector<double> sums_of_squares(const std::vector<Tensor>& xs);
bool all_finite(const Tensor& x);

}  // namespace llm::ops
