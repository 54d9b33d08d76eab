#include "layers/linear.h"

#include "core/ops.h"

namespace llm {

Linear::Linear(ParameterStore& store, const std::vector<std::pair<std::string, int64_t>>& parts,
               int64_t in_features, double init_std, LinearSplit split, const TensorParallel& tp)
    : store_(store), in_(split == LinearSplit::Rows ? tp.part(in_features) : in_features) {
  for (size_t i = 0; i < parts.size(); ++i) {
    const int64_t full_out = parts[i].second;
    const int64_t out = split == LinearSplit::Columns ? tp.part(full_out) : full_out;
    const TensorShard shard = split == LinearSplit::Columns ? tp.shard(0, full_out)
                              : split == LinearSplit::Rows  ? tp.shard(1, in_features)
                                                            : TensorShard{};
    ParamRef r = store.add(parts[i].first, {out, in_}, InitRule::Normal, init_std, true, shard);
    if (i == 0) first_ = r;
    out_ += out;
  }
}

Linear::Linear(ParameterStore& store, const ParamRef& shared_weight)
    : store_(store), first_(shared_weight), in_(shared_weight.shape[1]), out_(shared_weight.shape[0]) {}

void Linear::forward(const Tensor& x, Tensor& y, bool accumulate) const {
  ops::linear_forward(x, store_.value_span(first_, {out_, in_}), y, accumulate);
}

void Linear::backward(const Tensor& dy, const Tensor& x, Tensor* dx) const {
  Tensor dw = store_.grad_span(first_, {out_, in_});
  ops::linear_backward(dy, x, store_.value_span(first_, {out_, in_}), dx, dw);
}

}  // namespace llm
