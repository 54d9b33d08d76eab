#include "core/allocator.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <new>
#include <stdexcept>

namespace llm {

const char* memory_category_name(MemoryCategory c) {
  switch (c) {
    case MemoryCategory::Parameters: return "parameters";
    case MemoryCategory::Gradients: return "gradients";
    case MemoryCategory::MasterWeights: return "master_weights";
    case MemoryCategory::OptimizerState: return "optimizer_state";
    case MemoryCategory::Activations: return "activations";
    case MemoryCategory::Workspace: return "workspace";
    case MemoryCategory::Communication: return "communication";
    case MemoryCategory::Other: return "other";
    case MemoryCategory::kCount: break;
  }
  return "?";
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

static void raise_max(std::atomic<size_t>& peak, size_t value) {
  size_t prev = peak.load();
  while (value > prev && !peak.compare_exchange_weak(prev, value)) {
  }
}

void MemoryTracker::on_alloc(MemoryCategory c, size_t bytes) {
  raise_max(peak_[idx(c)], current_[idx(c)].fetch_add(bytes) + bytes);
  raise_max(peak_total_, total_.fetch_add(bytes) + bytes);
}

void MemoryTracker::on_free(MemoryCategory c, size_t bytes) {
  current_[idx(c)].fetch_sub(bytes);
  total_.fetch_sub(bytes);
}

void MemoryTracker::reset_peaks() {
  for (size_t i = 0; i < kNumMemoryCategories; ++i) peak_[i] = current_[i].load();
  peak_total_ = total_.load();
}

std::string format_bytes(size_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  else if (b >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024));
  else if (b >= 1024.0) std::snprintf(buf, sizeof buf, "%.2f KiB", b / 1024.0);
  else std::snprintf(buf, sizeof buf, "%zu B", bytes);
  return buf;
}

std::string MemoryTracker::report() const {
  std::string out;
  for (size_t i = 0; i < kNumMemoryCategories; ++i) {
    if (peak_[i] == 0) continue;
    out += std::string(memory_category_name(static_cast<MemoryCategory>(i))) + " " +
           format_bytes(current_[i]) + " (peak " + format_bytes(peak_[i]) + ")\n";
  }
  out += "total " + format_bytes(total_) + " (peak " + format_bytes(peak_total_) + ")\n";
  return out;
}

MemoryTracker& memory_tracker(Device d) {
  static MemoryTracker cpu_tracker;
  if (d.is_cpu()) return cpu_tracker;
  static std::mutex mu;
  static std::map<int, std::unique_ptr<MemoryTracker>> cuda_trackers;
  std::lock_guard<std::mutex> lock(mu);
  auto& t = cuda_trackers[d.index];
  if (!t) t = std::make_unique<MemoryTracker>();
  return *t;
}

// CPU blocks are cached by rounded size and reused: the same activation shapes
// recur every micro-batch, and fresh pages would cost a page fault and a
// zero-fill each time. The counters track live tensors; cached bytes are
// reported separately.
namespace {
struct HostCache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;
  size_t cached_bytes = 0;
};
HostCache& host_cache() {
  static HostCache* c = new HostCache();  // never destroyed: tensors may outlive static destructors
  return *c;
}
size_t host_block_size(size_t bytes) { return (bytes + 4095) / 4096 * 4096; }
}  // namespace

size_t host_cached_bytes() {
  std::lock_guard<std::mutex> lock(host_cache().mu);
  return host_cache().cached_bytes;
}

void release_host_cache() {
  HostCache& c = host_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [size, blocks] : c.free_blocks)
    for (void* p : blocks) std::free(p);
  c.free_blocks.clear();
  c.cached_bytes = 0;
}

void* device_alloc(Device d, size_t bytes, MemoryCategory c) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  if (d.is_cpu()) {
    const size_t block = host_block_size(bytes);
    HostCache& cache = host_cache();
    {
      std::lock_guard<std::mutex> lock(cache.mu);
      auto it = cache.free_blocks.find(block);
      if (it != cache.free_blocks.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        cache.cached_bytes -= block;
      }
    }
    if (!p) p = std::aligned_alloc(64, block);  // 64: a cache line, and what AVX-512 loads like
    if (!p) throw std::bad_alloc();
  } else {
#ifdef LLM_WITH_CUDA
    p = cuda::alloc(d.index, bytes);
#else
    throw std::runtime_error("device " + d.str() +
                             " requested, but this build has no CUDA backend (rebuild with -DLLM_WITH_CUDA=ON)");
#endif
  }
  memory_tracker(d).on_alloc(c, bytes);
  return p;
}

void device_free(Device d, void* p, size_t bytes, MemoryCategory c) {
  if (!p) return;
  if (d.is_cpu()) {
    const size_t block = host_block_size(bytes);
    HostCache& cache = host_cache();
    std::lock_guard<std::mutex> lock(cache.mu);
    cache.free_blocks[block].push_back(p);
    cache.cached_bytes += block;
  } else {
#ifdef LLM_WITH_CUDA
    cuda::free(d.index, p);
#endif
  }
  memory_tracker(d).on_free(c, bytes);
}

}  // namespace llm
