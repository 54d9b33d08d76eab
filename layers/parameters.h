// Parameters and their gradients in two flat, contiguous buffers.
//
// Layers register named parameters (Hugging Face names) at construction; the
// store then allocates one buffer for all values and one for all gradients.
// Flat buffers make the optimizer one loop, the gradient norm one reduction,
// and ZeRO a matter of owning a contiguous range of each bucket. Parameters
// that are registered one after another are adjacent, so q/k/v (and gate/up)
// form one fused weight matrix for a single GEMM.
//
// Buckets: the flat buffers are cut into buckets (runs of whole parameters),
// each padded to a multiple of the data-parallel size so that it splits into
// equal shards. Layers see a parameter through value()/grad(), which look in
// its bucket's storage: normally views of the flat buffers; under ZeRO-2/3
// (optim/distributed_optimizer.h) a bucket's gradients, and under ZeRO-3 its
// values, exist only while the layers that use them run.
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
  size_t bucket = 0;        // the bucket holding it
};

// A registered parameter's handle (its place in the store's list; the flat
// offset may change when the buckets are laid out).
struct ParamRef {
  size_t index = 0;
  Shape shape;
};

// Flat elements [begin, end) of the buffers: parameters [first_param,
// end_param) and then zero padding up to end.
struct ParamBucket {
  int64_t begin = 0, end = 0;
  size_t first_param = 0, end_param = 0;
  int64_t numel() const { return end - begin; }
};

class ParameterStore {
 public:
  ParameterStore(DType dtype, Device device) : dtype_(dtype), device_(device) {}

  // shape: this rank's part; shard: where it lies in the full tensor.
  ParamRef add(const std::string& name, const Shape& shape, InitRule init, double init_std, bool weight_decay,
               const TensorShard& shard = {});
  // Allocates the flat buffers (values and zeroed gradients), one bucket.
  void allocate();
  // Lays the buffers out again (zeroed: call before initialize or load) in
  // buckets starting at the given parameters (the first must be 0), each
  // padded to a multiple of `multiple` elements. The padding belongs to no
  // parameter and stays zero; numel() is unchanged, padded_numel() grows.
  void set_buckets(const std::vector<size_t>& first_params, int64_t multiple);
  const std::vector<ParamBucket>& buckets() const { return buckets_; }
  int64_t padded_numel() const { return padded_total_; }
  // Value of element i of the FULL parameter p = normal(seed, p.name, i)·std
  // (or 1 for norms): independent of layout (a tensor-parallel part draws
  // the values of its full-tensor indices), thread count and registration order.
  void initialize(uint64_t seed);
  // The same values written into `flat` (F32 or F64, laid out like the values).
  void initialize_into(Tensor& flat, uint64_t seed) const;

  Tensor value(const ParamRef& r) const { return value_span(r, r.shape); }
  Tensor grad(const ParamRef& r) const { return grad_span(r, r.shape); }
  // Several adjacent parameters as one tensor [rows, cols] (fused projections).
  Tensor value_span(const ParamRef& first, const Shape& shape) const { return in_bucket(bucket_values_, first, shape, "values"); }
  Tensor grad_span(const ParamRef& first, const Shape& shape) const { return in_bucket(bucket_grads_, first, shape, "gradients"); }

  // Where a bucket's values / gradients live. By default they are views of
  // the flat buffers; drop_*() frees the flat buffer and leaves every bucket
  // without storage until set_bucket_*() gives it some (ZeRO-2/3); use_flat_*()
  // installs a whole flat buffer again (e.g. to write a checkpoint).
  void drop_values();
  void drop_grads();
  void use_flat_values(Tensor flat);
  void set_bucket_values(size_t b, Tensor t) { bucket_values_.at(b) = std::move(t); }
  void set_bucket_grads(size_t b, Tensor t) { bucket_grads_.at(b) = std::move(t); }
  const Tensor& bucket_values(size_t b) const { return bucket_values_.at(b); }
  const Tensor& bucket_grads(size_t b) const { return bucket_grads_.at(b); }

  Tensor& values() { return values_; }
  Tensor& grads() { return grads_; }
  const Tensor& values() const { return values_; }
  const Tensor& grads() const { return grads_; }
  const std::vector<ParameterInfo>& infos() const { return infos_; }
  const ParameterInfo& info(const std::string& name) const;
  bool has(const std::string& name) const { return index_.count(name) > 0; }
  int64_t numel() const { return total_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  // Zeroes every gradient that has storage.
  void zero_grads();

 private:
  Tensor in_bucket(const std::vector<Tensor>& storage, const ParamRef& first, const Shape& shape,
                   const char* what) const;
  void allocate_flat();
  DType dtype_;
  Device device_;
  std::vector<ParameterInfo> infos_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0, padded_total_ = 0;
  std::vector<ParamBucket> buckets_;
  Tensor values_, grads_;  // the flat buffers (undefined once dropped)
  std::vector<Tensor> bucket_values_, bucket_grads_;
};

}  // namespace llm
