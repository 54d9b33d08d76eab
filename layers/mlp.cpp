#include "layers/mlp.h"

#include <cmath>

#include "core/ops.h"

namespace llm {

MLP::MLP(ParameterStore& store, const std::string& prefix, const ModelConfig& cfg, const TensorParallel& tp)
    : ffn_(tp.part(cfg.ffn())),
      gate_up_(store, {{prefix + "gate_proj.weight", cfg.ffn()}, {prefix + "up_proj.weight", cfg.ffn()}},
               cfg.hidden_size, cfg.init_std, LinearSplit::Columns, tp),
      down_(store, {{prefix + "down_proj.weight", cfg.hidden_size}}, cfg.ffn(),
            cfg.init_std / std::sqrt(2.0 * static_cast<double>(cfg.num_layers)), LinearSplit::Rows, tp) {}

void MLP::forward(const Tensor& x, Tensor& y, Saved& saved) const {
  const int64_t rows = x.size(0);
  saved.x = x;
  saved.gate_up = Tensor::empty({rows, 2 * ffn_}, x.dtype(), MemoryCategory::Activations, x.device());
  gate_up_.forward(x, saved.gate_up);
  saved.act = Tensor::empty({rows, ffn_}, x.dtype(), MemoryCategory::Activations, x.device());
  ops::swiglu_forward(saved.gate_up, saved.act);
  down_.forward(saved.act, y, /*accumulate=*/true);
}

void MLP::backward(const Tensor& dy, const Saved& saved, Tensor& dx) const {
  const int64_t rows = dy.size(0);
  Tensor dact = Tensor::zeros({rows, ffn_}, dy.dtype(), MemoryCategory::Activations, dy.device());
  down_.backward(dy, saved.act, &dact);
  Tensor dgate_up = Tensor::zeros({rows, 2 * ffn_}, dy.dtype(), MemoryCategory::Activations, dy.device());
  ops::swiglu_backward(dact, saved.gate_up, dgate_up);
  gate_up_.backward(dgate_up, saved.x, &dx);
}

}  // namespace llm
