#include "layers/lm_loss.h"

#include <cmath>

#include "core/ops.h"

namespace llm {

template <class T>
static void finish_rows(const Tensor& row_max, const Tensor& stats, const Tensor& targets, Tensor& losses,
                        Tensor& lse) {
  const int64_t rows = row_max.numel();
  const double* sum_exp = stats.data<double>();
  const double* target_logit = sum_exp + rows;
  const int32_t* tg = targets.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    T m = row_max.data<T>()[r];
    if (std::isinf(m)) m = 0;  // as the one-rank kernel: never form inf − inf
    const T l = static_cast<T>(static_cast<double>(m) + std::log(sum_exp[r]));
    lse.data<T>()[r] = l;
    losses.data<T>()[r] = tg[r] < 0 ? T(0) : l - static_cast<T>(target_logit[r]);
  }
}

void LanguageModelLoss::forward(const Tensor& logits, const Tensor& targets, Tensor& losses, Tensor& lse) const {
  if (!tp_.active()) {
    ops::cross_entropy_forward(logits, targets, losses, lse);
    return;
  }
  const int64_t rows = targets.numel();
  Tensor row_max = Tensor::empty({rows}, statistics_dtype(logits.dtype()), MemoryCategory::Activations, logits.device());
  ops::cross_entropy_row_max(logits, row_max);
  tp_.group->all_reduce(row_max, ReduceOp::Max);
  Tensor stats = Tensor::empty({2 * rows}, DType::F64, MemoryCategory::Activations, logits.device());
  ops::cross_entropy_partial_sums(logits, targets, vocab_begin_, vocab_, row_max, stats);
  tp_.group->all_reduce(stats, ReduceOp::Sum);
  if (logits.device().is_cpu()) {
    if (row_max.dtype() == DType::F64) finish_rows<double>(row_max, stats, targets, losses, lse);
    else finish_rows<float>(row_max, stats, targets, losses, lse);
    return;
  }
  // On a GPU: the per-row finish (rows values) on host copies, the results copied back.
  const Tensor host_max = row_max.clone_to(Device::cpu(), MemoryCategory::Activations);
  const Tensor host_stats = stats.clone_to(Device::cpu(), MemoryCategory::Activations);
  const Tensor host_targets = targets.clone_to(Device::cpu(), MemoryCategory::Activations);
  Tensor host_losses = Tensor::empty(losses.shape(), losses.dtype(), MemoryCategory::Activations);
  Tensor host_lse = Tensor::empty(lse.shape(), lse.dtype(), MemoryCategory::Activations);
  if (row_max.dtype() == DType::F64) finish_rows<double>(host_max, host_stats, host_targets, host_losses, host_lse);
  else finish_rows<float>(host_max, host_stats, host_targets, host_losses, host_lse);
  losses.copy_from(host_losses);
  lse.copy_from(host_lse);
}

void LanguageModelLoss::backward_inplace(Tensor& logits, const Tensor& lse, const Tensor& targets,
                                         const Tensor& dloss) const {
  if (!tp_.active()) ops::cross_entropy_backward_inplace(logits, lse, targets, dloss);
  else ops::cross_entropy_backward_inplace(logits, lse, targets, dloss, vocab_begin_, vocab_);
}

}  // namespace llm
