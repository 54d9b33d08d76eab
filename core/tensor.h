// A contiguous, row-major, reference-counted tensor.
//
// A Tensor is a view (offset + shape) into a Storage; views share storage.
// Storage is charged to one MemoryCategory for the lifetime of the buffer.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/dtype.h"

namespace llm {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

class Storage {
 public:
  Storage(size_t bytes, Device device, MemoryCategory category);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  MemoryCategory category() const { return category_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  MemoryCategory category_;
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, DType dtype, MemoryCategory category,
                      Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, MemoryCategory category,
                      Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const { return shape_.at(d < 0 ? d + dim() : d); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  MemoryCategory category() const { return storage_->category(); }

  void* raw() const;
  template <typename T> T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(raw());
  }

  // Same storage, new shape with the same number of elements.
  Tensor view(const Shape& shape) const;
  // Rows [begin, end) along the first dimension (a view).
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // A view of `count` elements starting at flat element `offset`, shaped `shape`.
  Tensor flat_view(int64_t offset, const Shape& shape) const;

  void zero_();
  void copy_from(const Tensor& src);  // same dtype and numel; any devices
  Tensor clone(MemoryCategory category) const;
  // A copy on another device (host <-> GPU), same dtype and shape.
  Tensor clone_to(Device device, MemoryCategory category) const;
  // Element-wise conversion between the floating dtypes F32, F64, BF16 and F16 (CPU):
  // same numel, values rounded to nearest even into this tensor's dtype (F64 → 16 bits
  // is rounded once, not through F32). Same dtypes (also I32) are a plain copy_from.
  void convert_from(const Tensor& src);
  // A new tensor of `dtype` holding this one's values (rounded), charged to `category`.
  Tensor to(DType dtype, MemoryCategory category) const;
  std::string str() const;  // "F32[4, 8] cpu"

 private:
  void check_dtype(DType want) const;
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
};

}  // namespace llm
