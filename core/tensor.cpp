#include "core/tensor.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#ifdef LLM_WITH_CUDA
#include <cuda_runtime.h>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/runtime.h"
#endif

namespace llm {
namespace {


// d rounded to float by round-to-odd (truncate, then set the last bit if inexact).
// Rounding that float to BF16 or F16 (13 or more bits fewer) to nearest even gives
// d rounded directly: no double rounding through F32.
float round_to_odd_float(double d) {
  const float f = static_cast<float>(d);
  if (d != d || static_cast<double>(f) == d) return f;  // NaN, or exact (infinities too)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) --u;  // rounded away from zero: step back
  u |= 1u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

// The value of one element, exactly, as float (F32, BF16, F16) or double (F64).
template <class S>
auto widen(S x) {
  if constexpr (std::is_floating_point_v<S>) return x;
  else return static_cast<float>(x);
}

// x rounded to nearest even into D.
template <class D, class W>
D narrow(W x) {
  if constexpr (std::is_same_v<D, W>) return x;
  else if constexpr (std::is_floating_point_v<D>) return static_cast<D>(x);
  else if constexpr (std::is_same_v<W, double>) return D(round_to_odd_float(x));
  else return D(x);
}

template <class S, class D>
void convert(const S* src, D* dst, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) dst[i] = narrow<D>(widen(src[i]));
}

// Runs f(T{}) with T the C++ type of a floating dtype; false for other dtypes.
template <class F>
bool visit_floating(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return true;
    case DType::F64: f(double{}); return true;
    case DType::BF16: f(bf16{}); return true;
    case DType::F16: f(f16{}); return true;
    default: return false;
  }
}

}  // namespace

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(s));
    if (__builtin_mul_overflow(n, d, &n)) throw std::invalid_argument("shape " + shape_str(s) + " has too many elements");
  }
  return n;
}

Storage::Storage(size_t bytes, Device device, MemoryCategory category)
    : bytes_(bytes), device_(device), category_(category) {
  data_ = device_alloc(device, bytes, category);
}

Storage::~Storage() { device_free(device_, data_, bytes_, category_); }

Tensor Tensor::empty(const Shape& shape, DType dtype, MemoryCategory category, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype),
                                         device, category);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, MemoryCategory category, Device device) {
  Tensor t = empty(shape, dtype, category, device);
  t.zero_();
  return t;
}

void* Tensor::raw() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->data()) + offset_bytes_;
}

void Tensor::check_dtype(DType want) const {
  if (want != dtype_)
    throw std::logic_error(std::string("tensor of dtype ") + dtype_name(dtype_) + " accessed as " +
                           dtype_name(want));
}

Tensor Tensor::view(const Shape& shape) const {
  if (shape_numel(shape) != numel())
    throw std::invalid_argument("view " + shape_str(shape) + " of tensor " + str() + ": element count differs");
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  if (dim() < 1 || begin < 0 || end < begin || end > shape_[0])
    throw std::out_of_range("slice_rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") of tensor " + str());
  Tensor t = *this;
  const int64_t row = shape_[0] ? numel() / shape_[0] : 0;
  t.offset_bytes_ += static_cast<size_t>(begin * row) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::flat_view(int64_t offset, const Shape& shape) const {
  const int64_t n = shape_numel(shape);
  if (offset < 0 || offset + n > numel())
    throw std::out_of_range("flat_view at " + std::to_string(offset) + " of " + shape_str(shape) +
                            " outside tensor " + str());
  Tensor t = *this;
  t.offset_bytes_ += static_cast<size_t>(offset) * dtype_size(dtype_);
  t.shape_ = shape;
  return t;
}

void Tensor::zero_() {
  if (!storage_ || nbytes() == 0) return;
  if (device().is_cpu()) {
    std::memset(raw(), 0, nbytes());
  } else {
#ifdef LLM_WITH_CUDA
    cuda::DeviceGuard guard(device().index);
    LLM_CUDA_CHECK(cudaMemsetAsync(raw(), 0, nbytes(), cuda::current_stream()));
#endif
  }
}

void Tensor::copy_from(const Tensor& src) {
  if (src.dtype() != dtype_ || src.numel() != numel())
    throw std::invalid_argument("copy_from: " + src.str() + " into " + str());
  if (nbytes() == 0) return;
  if (device().is_cpu() && src.device().is_cpu()) {
    std::memmove(raw(), src.raw(), nbytes());
  } else {
#ifdef LLM_WITH_CUDA
    const Device dd = device(), sd = src.device();
    if (dd == sd) {
      if (raw() == src.raw()) return;
      const char *s0 = static_cast<const char*>(src.raw()), *d0 = static_cast<const char*>(raw());
      if (s0 < d0 + nbytes() && d0 < s0 + nbytes()) {  // cudaMemcpy does not allow overlap; memmove does
        copy_from(src.clone(MemoryCategory::Workspace));
        return;
      }
    }
    // Another GPU's data: let the work queued on its stream finish before reading it.
    if (!dd.is_cpu() && !sd.is_cpu() && dd != sd) {
      cuda::DeviceGuard guard(sd.index);
      cuda::synchronize();
    }
    cuda::DeviceGuard guard(dd.is_cpu() ? sd.index : dd.index);
    const cudaStream_t stream = cuda::current_stream();
    LLM_CUDA_CHECK(cudaMemcpyAsync(raw(), src.raw(), nbytes(), cudaMemcpyDefault, stream));
    // Host memory (or another GPU's block) is valid and reusable once this returns.
    if (dd != sd) LLM_CUDA_CHECK(cudaStreamSynchronize(stream));
#else
    throw std::runtime_error("copy between devices needs a CUDA build");
#endif
  }
}

Tensor Tensor::clone(MemoryCategory category) const {
  Tensor t = empty(shape_, dtype_, category, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::clone_to(Device device, MemoryCategory category) const {
  Tensor t = empty(shape_, dtype_, category, device);
  t.copy_from(*this);
  return t;
}

void Tensor::convert_from(const Tensor& src) {
  if (src.dtype() == dtype_) return copy_from(src);
  if (src.numel() != numel())
    throw std::invalid_argument("convert_from: " + src.str() + " into " + str() + ": element count differs");
  if (!device().is_cpu() || !src.device().is_cpu()) {
#ifdef LLM_WITH_CUDA
    if (device() == src.device()) return ops::cuda::convert(src, *this);  // checks dtypes and overlap
    if (!device().is_cpu() && src.dtype() == DType::F64) {
      // The GPU kernel has no F64: round on the host, then copy.
      Tensor rounded = empty(src.shape(), dtype_, MemoryCategory::Workspace, src.device());
      rounded.convert_from(src);
      return copy_from(rounded);
    }
    // Stage the source on this tensor's device, then convert there.
    Tensor staged = empty(src.shape(), src.dtype(), MemoryCategory::Workspace, device());
    staged.copy_from(src);
    return convert_from(staged);
#else
    throw std::invalid_argument("convert_from: " + src.str() + " into " + str() +
                                ": dtype conversion runs on the CPU only");
#endif
  }
  const char* s0 = static_cast<const char*>(src.raw());
  const char* d0 = static_cast<const char*>(raw());
  if (nbytes() && src.nbytes() && s0 < d0 + nbytes() && d0 < s0 + src.nbytes())
    throw std::invalid_argument("convert_from: " + src.str() + " into " + str() + ": the buffers overlap");
  bool ok = false;
  visit_floating(src.dtype(), [&](auto s) {
    ok = visit_floating(dtype_, [&](auto d) {
      convert(static_cast<const decltype(s)*>(src.raw()), static_cast<decltype(d)*>(raw()), numel());
    });
  });
  if (!ok)
    throw std::invalid_argument("convert_from: " + src.str() + " into " + str() +
                                ": conversions are between F32, F64, BF16 and F16 only");
}

Tensor Tensor::to(DType dtype, MemoryCategory category) const {
  Tensor t = empty(shape_, dtype, category, device());
  t.convert_from(*this);
  return t;
}

std::string Tensor::str() const {
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + " " + device().str();
}

}  // namespace llm
