#include "layers/parameters.h"

#include <stdexcept>

#include "core/random.h"

namespace llm {

ParamRef ParameterStore::add(const std::string& name, const Shape& shape, InitRule init, double init_std,
                             bool weight_decay, const TensorShard& shard) {
  if (!buckets_.empty()) throw std::logic_error("parameter '" + name + "' registered after allocate()");
  if (index_.count(name)) throw std::logic_error("parameter '" + name + "' registered twice");
  ParameterInfo p;
  p.name = name;
  p.shape = shape;
  p.offset = total_;
  p.numel = shape_numel(shape);
  p.init = init;
  p.init_std = init_std;
  p.weight_decay = weight_decay;
  p.full_shape = shape;
  p.full_offset.assign(shape.size(), 0);
  if (shard.dim >= 0) {
    if (shard.dim >= static_cast<int>(shape.size()) || shard.offset < 0 ||
        shard.offset + shape[shard.dim] > shard.full)
      throw std::logic_error("parameter '" + name + "': shard outside the full tensor");
    p.full_shape[shard.dim] = shard.full;
    p.full_offset[shard.dim] = shard.offset;
    p.replicated = false;
  }
  index_[name] = infos_.size();
  infos_.push_back(p);
  total_ += p.numel;
  return {infos_.size() - 1, shape};
}

void ParameterStore::allocate() { set_buckets({0}, 1); }

void ParameterStore::set_buckets(const std::vector<size_t>& first_params, int64_t multiple) {
  if (first_params.empty() || first_params[0] != 0 || multiple < 1)
    throw std::logic_error("set_buckets: the first bucket starts at parameter 0 and the multiple is positive");
  buckets_.clear();
  int64_t at = 0;
  for (size_t b = 0; b < first_params.size(); ++b) {
    const size_t first = first_params[b], end = b + 1 < first_params.size() ? first_params[b + 1] : infos_.size();
    if (end <= first && !(infos_.empty() && b == 0)) throw std::logic_error("set_buckets: empty or unordered bucket");
    ParamBucket bk{at, at, first, end};
    for (size_t i = first; i < end; ++i) {
      infos_[i].offset = bk.end;
      infos_[i].bucket = b;
      bk.end += infos_[i].numel;
    }
    bk.end = bk.begin + (bk.end - bk.begin + multiple - 1) / multiple * multiple;
    at = bk.end;
    buckets_.push_back(bk);
  }
  padded_total_ = at;
  allocate_flat();
}

void ParameterStore::allocate_flat() {
  values_ = Tensor::zeros({padded_total_}, dtype_, MemoryCategory::Parameters, device_);
  grads_ = Tensor::zeros({padded_total_}, dtype_, MemoryCategory::Gradients, device_);
  use_flat_values(values_);
  bucket_grads_.assign(buckets_.size(), Tensor());
  for (size_t b = 0; b < buckets_.size(); ++b)
    bucket_grads_[b] = grads_.flat_view(buckets_[b].begin, {buckets_[b].numel()});
}

void ParameterStore::use_flat_values(Tensor flat) {
  if (flat.numel() != padded_total_ || flat.dtype() != dtype_)
    throw std::logic_error("use_flat_values: " + flat.str() + " is not laid out like the parameters");
  values_ = std::move(flat);
  bucket_values_.assign(buckets_.size(), Tensor());
  for (size_t b = 0; b < buckets_.size(); ++b)
    bucket_values_[b] = values_.flat_view(buckets_[b].begin, {buckets_[b].numel()});
}

void ParameterStore::drop_values() {
  values_ = Tensor();
  bucket_values_.assign(buckets_.size(), Tensor());
}

void ParameterStore::drop_grads() {
  grads_ = Tensor();
  bucket_grads_.assign(buckets_.size(), Tensor());
}

void ParameterStore::zero_grads() {
  if (grads_.defined()) {
    grads_.zero_();
    return;
  }
  for (auto& g : bucket_grads_)
    if (g.defined()) g.zero_();
}

Tensor ParameterStore::in_bucket(const std::vector<Tensor>& storage, const ParamRef& first, const Shape& shape,
                                 const char* what) const {
  const ParameterInfo& p = infos_.at(first.index);
  const Tensor& t = storage.at(p.bucket);
  if (!t.defined())
    throw std::logic_error("parameter '" + p.name + "': its bucket's " + what +
                           " are not held here now (ZeRO: used outside acquire/release)");
  return t.flat_view(p.offset - buckets_[p.bucket].begin, shape);
}

const ParameterInfo& ParameterStore::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw std::out_of_range("no parameter named '" + name + "'");
  return infos_[it->second];
}

template <class T>
static void fill(T* dst, const ParameterInfo& p, uint64_t seed) {
  if (p.init == InitRule::Ones) {
    for (int64_t i = 0; i < p.numel; ++i) dst[i] = T(1);
    return;
  }
  const uint64_t key = parameter_key(seed, p.name);
  // Local element (r, c) of a [rows, cols] part is full element
  // (r + row0, c + col0) of the [.., full_cols] tensor (1-D: rows of one).
  const bool matrix = p.shape.size() == 2;
  const int64_t cols = matrix ? p.shape[1] : p.numel, full_cols = matrix ? p.full_shape[1] : p.numel;
  const int64_t row0 = matrix ? p.full_offset[0] : 0, col0 = matrix ? p.full_offset[1] : p.full_offset[0];
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < p.numel; ++i) {
    const int64_t full_index = (i / cols + row0) * full_cols + i % cols + col0;
    dst[i] = static_cast<T>(normal_at(key, static_cast<uint64_t>(full_index)) * p.init_std);
  }
}

void ParameterStore::initialize(uint64_t seed) {
  if (buckets_.empty()) allocate();
  if (!values_.defined()) throw std::logic_error("initialize: the values are sharded (ZeRO-3): use initialize_into");
  if (values_.device().is_cpu() && (dtype_ == DType::F32 || dtype_ == DType::F64)) return initialize_into(values_, seed);
  // 16-bit or GPU values: generated in fp32 (or fp64) on the host, then rounded/copied over.
  Tensor host = Tensor::zeros({padded_total_}, dtype_ == DType::F64 ? DType::F64 : DType::F32, MemoryCategory::Workspace);
  initialize_into(host, seed);
  values_.convert_from(host);
}

void ParameterStore::initialize_into(Tensor& flat, uint64_t seed) const {
  if (!flat.device().is_cpu())
    throw std::logic_error("initialize_into: host values only (generate on the host, then copy to the GPU)");
  if (flat.numel() != padded_total_) throw std::logic_error("initialize_into: " + flat.str() + " is not laid out like the parameters");
  for (const auto& p : infos_) {
    if (flat.dtype() == DType::F32) fill(flat.data<float>() + p.offset, p, seed);
    else if (flat.dtype() == DType::F64) fill(flat.data<double>() + p.offset, p, seed);
    else throw std::logic_error("initialize_into: F32 or F64 values (16-bit values are rounded from F32 ones)");
  }
}

}  // namespace llm
