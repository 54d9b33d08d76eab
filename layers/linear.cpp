#include "layers/linear.h"

#include "core/ops.h"

namespace llm {

Linear::Linear(ParameterStore& store, const std::vector<std::pair<std::string, int64_t>>& parts,
               int64_t in_features, double init_std)
    : store_(store), in_(in_features) {
  for (size_t i = 0; i < parts.size(); ++i) {
    ParamRef r = store.add(parts[i].first, {parts[i].second, in_features}, InitRule::Normal, init_std, true);
    if (i == 0) first_ = r;
    out_ += parts[i].second;
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
