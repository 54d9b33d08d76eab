// The CUDA backend of the op interface (core/ops.h).
//
// core/ops.cpp calls these when an op's first tensor lives on a CUDA device;
// each has the signature and the semantics of the ops:: function of the same
// name (see core/ops.h: accumulate vs overwrite, layouts, vocab-parallel
// arguments), so layers and the optimizer never know which backend ran.
//
// dtypes on the GPU: the activation-like operands of one call (x, w, y, qkv,
// logits, gradients) share one dtype, F32, BF16 or F16; the statistics
// (rstd, lse, per-row losses, dloss, row_max) are F32 (statistics_dtype());
// AdamW's master weights and moments are F32 with a gradient of any of the
// three. 16-bit values are computed in fp32 and rounded once on store. Token
// ids and targets are I32 on the same device. Any other combination, or
// operands on different devices, throws std::invalid_argument naming the op
// and the operand.
//
// Kernels run on the current stream (core/cuda/runtime.h) and do not
// synchronise, except where a host value is returned (sum_of_squares,
// sums_of_squares, all_finite).
#pragma once
#include <cstdint>
#include <vector>

#include "core/ops.h"

namespace llm::ops::cuda {

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate);
void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor& dw);

void embedding_forward(const Tensor& tokens, const Tensor& table, Tensor& out, int64_t row_begin,
                       int64_t total_vocab);
void embedding_backward(const Tensor& tokens, const Tensor& dout, Tensor& dtable, int64_t row_begin,
                        int64_t total_vocab);

void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd);
void add_rmsnorm_forward(const Tensor& x, const Tensor& residual, const Tensor& w, double eps, Tensor& h,
                         Tensor& y, Tensor& rstd);
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                      Tensor& dw);

void rope_forward(Tensor& qkv, const QkvLayout& l, int64_t pos_offset, double theta);
void rope_backward(Tensor& dqkv, const QkvLayout& l, int64_t pos_offset, double theta);

void attention_forward(const Tensor& qkv, const QkvLayout& l, Tensor& out, Tensor& lse);
void attention_backward(const Tensor& dout, const Tensor& qkv, const QkvLayout& l, const Tensor& out,
                        const Tensor& lse, Tensor& dqkv);
void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t tk, int64_t heads,
                      int64_t groups, int64_t head_dim, Tensor& out);

void swiglu_forward(const Tensor& gate_up, Tensor& out);
void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up);

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor& lse);
void cross_entropy_backward_inplace(Tensor& logits, const Tensor& lse, const Tensor& targets, const Tensor& dloss,
                                    int64_t col_begin, int64_t total_V);
void cross_entropy_row_max(const Tensor& logits, Tensor& row_max);
void cross_entropy_partial_sums(const Tensor& logits, const Tensor& targets, int64_t col_begin, int64_t total_V,
                                const Tensor& row_max, Tensor& stats);

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWParams& p);
// Every segment in one launch (a table of pointers and sizes in device memory).
void adamw_multi_step(const std::vector<AdamWSegmentTensors>& segments, const AdamWParams& p);

void add_(Tensor& y, const Tensor& x);

double sum_of_squares(const Tensor& x);
std::vector<double> sums_of_squares(const std::vector<Tensor>& xs);  // one launch, one copy back
bool all_finite(const Tensor& x);

// dst = src rounded to dst's dtype (F32, BF16, F16; both on the same CUDA device).
void convert(const Tensor& src, Tensor& dst);

}  // namespace llm::ops::cuda
