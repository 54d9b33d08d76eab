#include "optim/spike_guard.h"

#include <cmath>
#include <cstdio>

namespace llm {

double SpikeGuard::Ema::z(double x, double min_relative_std) const {
  const double sd = std::max(std::sqrt(var), min_relative_std * std::fabs(mean));
  return sd > 0 ? (x - mean) / sd : 0.0;
}

void SpikeGuard::Ema::add(double x, double beta, bool first) {
  if (first) {
    mean = x;
    var = 0.0;
    return;
  }
  // Exponentially weighted mean and variance (West's incremental form).
  const double d = x - mean;
  mean += (1.0 - beta) * d;
  var = beta * (var + (1.0 - beta) * d * d);
}

SpikeGuard::Verdict SpikeGuard::observe(double loss, double grad_norm) {
  Verdict v;
  char buf[256];
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    v.spike = v.non_finite = true;
    std::snprintf(buf, sizeof buf, "non-finite loss %g or gradient norm %g", loss, grad_norm);
    v.reason = buf;
    return v;
  }
  if (count_ >= cfg_.warmup) {
    v.loss_z = loss_.z(loss, cfg_.loss_min_relative_std);
    v.grad_norm_z = grad_norm_.z(grad_norm, cfg_.grad_norm_min_relative_std);
    if (v.loss_z > cfg_.zscore) {
      std::snprintf(buf, sizeof buf, "loss %.6g is %.1fσ above its running mean %.6g (σ %.3g)", loss, v.loss_z,
                    loss_.mean, std::sqrt(loss_.var));
      v.spike = true;
      v.reason = buf;
    } else if (v.grad_norm_z > cfg_.zscore) {
      std::snprintf(buf, sizeof buf, "gradient norm %.6g is %.1fσ above its running mean %.6g (σ %.3g)", grad_norm,
                    v.grad_norm_z, grad_norm_.mean, std::sqrt(grad_norm_.var));
      v.spike = true;
      v.reason = buf;
    }
  }
  if (v.spike && cfg_.max_consecutive > 0 && ++consecutive_ >= cfg_.max_consecutive) {
    std::snprintf(buf, sizeof buf, "%lld iterations in a row stood out (the last: %s): taken as a new level, the "
                  "statistics restart from here", static_cast<long long>(consecutive_), v.reason.c_str());
    v = Verdict{};
    v.level_shift = true;
    v.reason = buf;
    count_ = 0;  // warm up again from this iteration's values
  }
  if (!v.spike) {
    consecutive_ = 0;
    loss_.add(loss, cfg_.beta, count_ == 0);
    grad_norm_.add(grad_norm, cfg_.beta, count_ == 0);
    ++count_;
  }
  return v;
}

nlohmann::json SpikeGuard::state() const {
  return {{"loss_mean", loss_.mean}, {"loss_var", loss_.var}, {"grad_norm_mean", grad_norm_.mean},
          {"grad_norm_var", grad_norm_.var}, {"clean_iterations", count_},
          {"consecutive_spikes", consecutive_}};
}

void SpikeGuard::set_state(const nlohmann::json& j) {
  if (j.is_null()) return;
  loss_.mean = j.at("loss_mean");
  loss_.var = j.at("loss_var");
  grad_norm_.mean = j.at("grad_norm_mean");
  grad_norm_.var = j.at("grad_norm_var");
  count_ = j.at("clean_iterations");
  consecutive_ = j.value("consecutive_spikes", int64_t{0});
}

}  // namespace llm
