// Parameters and their gradients in two flat, contiguous buffers.
//
// Layers register named parameters (Hugging Face names) at construction; the
// store then allocates one buffer for all values and one for all gradients.
// Flat buffers make the optimizer one loop, the gradient norm one reduction,
// and (later) ZeRO a matter of owning a contiguous range. Parameters that
// are registered one after another are adjacent, so q/k/v (and gate/up) form
// one fused weight matrix for a single GEMM.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace llm {

enum class InitRule { Normal, Ones };

// Where a rank's part of a parameter sits in the full tensor. Tensor
// parallelism splits a weight along one dimension (rows of column-parallel
// and vocab-parallel weights, columns of row-parallel ones); the other ranks
// hold the neighbouring parts. dim −1: the whole tensor (replicated on every
// tensor-parallel rank, like the norm weights).
struct TensorShard {
  int dim = -1;
  int64_t offset = 0;  // first index along dim
  int64_t full = 0;    // the full tensor's size along dim
};

struct ParameterInfo {
  std::string name;
  Shape shape;
  int64_t offset = 0;  // in elements, into the flat buffers
  int64_t numel = 0;
  InitRule init = InitRule::Normal;
  double init_std = 0.0;
  bool weight_decay = true;
  // The full (unsharded) tensor and this part's position in it; without
  // tensor parallelism full_shape == shape and the offsets are zero.
  Shape full_shape;
  std::vector<int64_t> full_offset;
  bool replicated = true;  // every tensor-parallel rank holds the same values
};

// A registered parameter's handle: its position in the flat buffers.
struct ParamRef {
  int64_t offset = 0;
  Shape shape;
};

class ParameterStore {
 public:
  ParameterStore(DType dtype, Device device) : dtype_(dtype), device_(device) {}

  // shape: this rank's part; shard: where it lies in the full tensor.
  ParamRef add(const std::string& name, const Shape& shape, InitRule init, double init_std, bool weight_decay,
               const TensorShard& shard = {});
  // Allocates the flat buffers (values and zeroed gradients).
  void allocate();
  // Grows both buffers (still zero: call before initialize or load) to a
  // multiple of m elements, so they split into m equal shards (ZeRO). The
  // padding belongs to no parameter and stays zero; numel() is unchanged.
  void pad_to_multiple(int64_t m);
  int64_t padded_numel() const { return values_.defined() ? values_.numel() : total_; }
  // Value of element i of the FULL parameter p = normal(seed, p.name, i)·std
  // (or 1 for norms): independent of layout (a tensor-parallel part draws
  // the values of its full-tensor indices), thread count and registration order.
  void initialize(uint64_t seed);

  Tensor value(const ParamRef& r) const { return values_.flat_view(r.offset, r.shape); }
  Tensor grad(const ParamRef& r) const { return grads_.flat_view(r.offset, r.shape); }
  // Several adjacent parameters as one tensor [rows, cols] (fused projections).
  Tensor value_span(const ParamRef& first, const Shape& shape) const { return values_.flat_view(first.offset, shape); }
  Tensor grad_span(const ParamRef& first, const Shape& shape) const { return grads_.flat_view(first.offset, shape); }

  Tensor& values() { return values_; }
  Tensor& grads() { return grads_; }
  const Tensor& values() const { return values_; }
  const Tensor& grads() const { return grads_; }
  const std::vector<ParameterInfo>& infos() const { return infos_; }
  const ParameterInfo& info(const std::string& name) const;
  bool has(const std::string& name) const { return index_.count(name) > 0; }
  int64_t numel() const { return total_; }
  DType dtype() const { return dtype_; }
  void zero_grads() { grads_.zero_(); }

 private:
  DType dtype_;
  Device device_;
  std::vector<ParameterInfo> infos_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0;
  Tensor values_, grads_;
};

}  // namespace llm
