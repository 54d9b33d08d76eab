// RMSNorm: y = x · rsqrt(mean(x²) + eps) · w, computed in fp32 (or the compute dtype).
#pragma once
#include "layers/parameters.h"

namespace llm {

class RMSNorm {
 public:
  struct Saved {
    Tensor x, rstd;  // input and 1/rms per row
  };
  RMSNorm(ParameterStore& store, const std::string& name, int64_t hidden, double eps);
  // y [rows, hidden]; keeps the input and rstd in `saved`.
  void forward(const Tensor& x, Tensor& y, Saved& saved) const;
  // The residual add fused in: h = x + residual (returned, and saved as the norm's
  // input), y = norm(h). One kernel on the GPU instead of an add and a norm.
  Tensor forward_add(const Tensor& x, const Tensor& residual, Tensor& y, Saved& saved) const;
  // dx += ∂L/∂x, weight.grad += ∂L/∂w
  void backward(const Tensor& dy, const Saved& saved, Tensor& dx) const;

 private:
  ParameterStore& store_;
  ParamRef weight_;
  double eps_;
};

}  // namespace llm
