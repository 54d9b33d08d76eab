// Learning-rate schedule: linear warm-up, then cosine, linear or constant
// decay from --lr to --min-lr, as Megatron-LM's OptimizerParamScheduler.
#pragma once
#include <cstdint>
#include <string>

namespace llm {

enum class LrDecayStyle { Cosine, Linear, Constant };
LrDecayStyle lr_decay_style_from_name(const std::string& s);  // throws naming --lr-decay-style
const char* lr_decay_style_name(LrDecayStyle s);

struct LrSchedule {
  double max_lr = 3e-4;
  double min_lr = 0.0;
  int64_t warmup_iters = 0;
  int64_t decay_iters = 0;  // iteration at which min_lr is reached (default: --train-iters)
  LrDecayStyle style = LrDecayStyle::Cosine;

  // Learning rate used by iteration `it` (1-based): max_lr·it/warmup during
  // warm-up, then decay over (warmup, decay_iters], min_lr afterwards.
  double at(int64_t it) const;
};

}  // namespace llm
