#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace llm {

LrDecayStyle lr_decay_style_from_name(const std::string& s) {
  if (s == "cosine") return LrDecayStyle::Cosine;
  if (s == "linear") return LrDecayStyle::Linear;
  if (s == "constant") return LrDecayStyle::Constant;
  throw std::invalid_argument("--lr-decay-style '" + s + "': expected cosine, linear or constant");
}

const char* lr_decay_style_name(LrDecayStyle s) {
  switch (s) {
    case LrDecayStyle::Cosine: return "cosine";
    case LrDecayStyle::Linear: return "linear";
    case LrDecayStyle::Constant: return "constant";
  }
  return "?";
}

double LrSchedule::at(int64_t it) const {
  if (warmup_iters > 0 && it <= warmup_iters)
    return max_lr * static_cast<double>(it) / static_cast<double>(warmup_iters);
  if (style == LrDecayStyle::Constant) return max_lr;
  if (it > decay_iters) return min_lr;
  const double span = static_cast<double>(decay_iters - warmup_iters);
  const double ratio = span > 0 ? static_cast<double>(it - warmup_iters) / span : 1.0;
  const double coeff = style == LrDecayStyle::Cosine ? 0.5 * (std::cos(M_PI * ratio) + 1.0) : 1.0 - ratio;
  return min_lr + coeff * (max_lr - min_lr);
}

}  // namespace llm
