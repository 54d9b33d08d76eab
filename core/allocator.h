// Memory accounting by category, and the allocators that keep it.
//
// Every buffer the runtime owns is charged to one category, so a run can print
// what its parameters, gradients, optimizer state and activations cost and the
// peak of each (ZeRO's memory formulas are checked against these counters).
#pragma once
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace llm {

enum class MemoryCategory : uint8_t {
  Parameters,
  Gradients,
  MasterWeights,
  OptimizerState,
  Activations,
  Workspace,
  Communication,
  Other,
  kCount
};
constexpr size_t kNumMemoryCategories = static_cast<size_t>(MemoryCategory::kCount);
const char* memory_category_name(MemoryCategory c);

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool operator==(const Device&) const = default;
  std::string str() const;
};

// Current and peak bytes per category for one device, plus the peak of the total.
class MemoryTracker {
 public:
  void on_alloc(MemoryCategory c, size_t bytes);
  void on_free(MemoryCategory c, size_t bytes);
  size_t current(MemoryCategory c) const { return current_[idx(c)].load(); }
  size_t peak(MemoryCategory c) const { return peak_[idx(c)].load(); }
  size_t current_total() const { return total_.load(); }
  size_t peak_total() const { return peak_total_.load(); }
  void reset_peaks();
  // One line per non-empty category: "parameters 1.2 MiB (peak 1.2 MiB)".
  std::string report() const;

 private:
  static size_t idx(MemoryCategory c) { return static_cast<size_t>(c); }
  std::array<std::atomic<size_t>, kNumMemoryCategories> current_{};
  std::array<std::atomic<size_t>, kNumMemoryCategories> peak_{};
  std::atomic<size_t> total_{0}, peak_total_{0};
};

// The tracker of a device (one per device type and index).
MemoryTracker& memory_tracker(Device d);

// Raw allocation entry points; Tensor storage goes through these.
void* device_alloc(Device d, size_t bytes, MemoryCategory c);
void device_free(Device d, void* p, size_t bytes, MemoryCategory c);

#ifdef LLM_WITH_CUDA
namespace cuda {
void* alloc(int device, size_t bytes);
void free(int device, void* p);
bool available();
}  // namespace cuda
#endif

// Host blocks kept for reuse after their tensors died, and a way to return them.
size_t host_cached_bytes();
void release_host_cache();

std::string format_bytes(size_t bytes);

}  // namespace llm
