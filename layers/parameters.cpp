#include "layers/parameters.h"

#include <stdexcept>

#include "core/random.h"

namespace llm {

ParamRef ParameterStore::add(const std::string& name, const Shape& shape, InitRule init, double init_std,
                             bool weight_decay, const TensorShard& shard) {
  if (values_.defined()) throw std::logic_error("parameter '" + name + "' registered after allocate()");
  if (index_.count(name)) throw std::logic_error("parameter '" + name + "' registered twice");
  ParameterInfo p{name, shape, total_, shape_numel(shape), init, init_std, weight_decay};
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
  return {p.offset, shape};
}

void ParameterStore::allocate() {
  values_ = Tensor::zeros({total_}, dtype_, MemoryCategory::Parameters, device_);
  grads_ = Tensor::zeros({total_}, dtype_, MemoryCategory::Gradients, device_);
}

void ParameterStore::pad_to_multiple(int64_t m) {
  const int64_t padded = (total_ + m - 1) / m * m;
  if (values_.defined() && values_.numel() == padded) return;
  values_ = Tensor::zeros({padded}, dtype_, MemoryCategory::Parameters, device_);
  grads_ = Tensor::zeros({padded}, dtype_, MemoryCategory::Gradients, device_);
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
  if (!values_.defined()) allocate();
  if (!values_.device().is_cpu()) throw std::logic_error("initialize: CPU only until the CUDA backend");
  for (const auto& p : infos_) {
    if (dtype_ == DType::F32) fill(values_.data<float>() + p.offset, p, seed);
    else if (dtype_ == DType::F64) fill(values_.data<double>() + p.offset, p, seed);
    else throw std::logic_error("initialize: parameters must be F32 or F64");
  }
}

}  // namespace llm
