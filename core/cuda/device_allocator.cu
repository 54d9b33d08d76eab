// The caching, stream-ordered allocator behind Tensor storage on a GPU
// (llm::cuda::alloc / free; core/allocator.cpp keeps the per-category counters).
//
// cudaMalloc and cudaFree synchronise the device and cost tens of microseconds,
// and a training step allocates and frees the same activation shapes every
// micro-batch. So a freed block is kept and handed to the next request of a
// fitting size on the stream the block was allocated for: work queued on one
// stream runs in order, so the new owner's kernels start only after the old
// owner's are done, with no synchronisation. A block that another stream also
// used (record_stream) is different: its free records an event on each such
// stream, and the block becomes reusable only when all of them have completed.
//
// Sizes are rounded (512 B below 1 MiB, 2 MiB multiples above) so that shapes
// that differ a little share blocks. Blocks are never split: a cached block
// serves a request only when it wastes at most a quarter of it (small requests:
// at most the request's size again). When cudaMalloc runs out of memory the
// cache is returned to the driver (after synchronising the device) and the
// request tried once more; a second failure throws with the allocator's and
// the tracker's state.
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "core/allocator.h"
#include "core/cuda/runtime.h"

namespace llm::cuda {
namespace {

constexpr size_t kSmallLimit = size_t(1) << 20;  // requests up to 1 MiB are "small"
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t(2) << 20;

size_t round_size(size_t bytes) {
  if (bytes <= kSmallLimit) return (bytes + kSmallRound - 1) / kSmallRound * kSmallRound;
  return (bytes + kLargeRound - 1) / kLargeRound * kLargeRound;
}

// Largest cached block that may serve a request of `rounded` bytes.
size_t max_fit(size_t rounded) { return rounded <= kSmallLimit ? 2 * rounded : rounded + rounded / 4; }

struct Block {
  char* ptr = nullptr;
  size_t size = 0;  // rounded, as allocated
  cudaStream_t stream = nullptr;
  bool in_use = false;
  std::vector<cudaStream_t> used_on;  // other streams (record_stream) since the last alloc
  int pending = 0;                    // events not yet completed since the free
};

// Cached blocks ordered for best fit within a stream.
struct FreeOrder {
  bool operator()(const Block* a, const Block* b) const {
    const auto sa = reinterpret_cast<uintptr_t>(a->stream), sb = reinterpret_cast<uintptr_t>(b->stream);
    return std::tie(sa, a->size, a->ptr) < std::tie(sb, b->size, b->ptr);
  }
};

struct DeviceState {
  std::map<uintptr_t, Block*> blocks;  // every block held (in use or cached), by start address
  std::set<Block*, FreeOrder> free;    // cached and ready for reuse
  struct Pending {
    cudaEvent_t event;
    Block* block;
  };
  std::vector<Pending> pending;       // cached, waiting for other streams
  std::vector<cudaEvent_t> spare_events;
  size_t reserved = 0, cached = 0;    // cached includes blocks in `pending`
};

struct State {
  std::mutex mu;
  std::map<int, DeviceState> devices;
};

// Never destroyed: tensors held in statics may be freed after static destructors ran.
State& state() {
  static State* s = new State();
  return *s;
}


// Moves the blocks whose events have all completed to the free set. Caller holds the
// lock and has the block's device current.
void process_events(DeviceState& ds) {
  size_t kept = 0;
  for (size_t i = 0; i < ds.pending.size(); ++i) {
    DeviceState::Pending p = ds.pending[i];
    const cudaError_t e = cudaEventQuery(p.event);
    if (e == cudaErrorNotReady) {
      ds.pending[kept++] = p;
      continue;
    }
    LLM_CUDA_CHECK(e);
    ds.spare_events.push_back(p.event);
    if (--p.block->pending == 0) ds.free.insert(p.block);
  }
  ds.pending.resize(kept);
}

// Returns every cached, ready block of the device to the driver. Caller holds the
// lock and has the device current; the device has been synchronised when pending
// blocks should go too.
void release_cached(DeviceState& ds) {
  process_events(ds);
  for (Block* b : ds.free) {
    LLM_CUDA_CHECK(cudaFree(b->ptr));
    ds.reserved -= b->size;
    ds.cached -= b->size;
    ds.blocks.erase(reinterpret_cast<uintptr_t>(b->ptr));
    delete b;
  }
  ds.free.clear();
}

// The block holding `p` (also an address inside it: views carry offsets), or null.
Block* find_block(DeviceState& ds, const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = ds.blocks.upper_bound(a);
  if (it == ds.blocks.begin()) return nullptr;
  --it;
  Block* b = it->second;
  return a < it->first + b->size ? b : nullptr;
}

[[noreturn]] void throw_out_of_memory(int device, size_t bytes, size_t rounded, size_t reserved, size_t cached) {
  size_t free_b = 0, total_b = 0;
  const bool info = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
  cudaGetLastError();  // leave no error behind for the next launch check
  std::string msg = "CUDA out of memory: allocating " + format_bytes(bytes) + " (" + std::to_string(bytes) +
                    " bytes, " + format_bytes(rounded) + " rounded) on " + Device::cuda(device).str() +
                    " failed after returning the allocator's cache to the driver; the allocator holds " +
                    format_bytes(reserved) + " reserved, of which " + format_bytes(cached) + " cached";
  if (info) msg += "; the device has " + format_bytes(free_b) + " free of " + format_bytes(total_b);
  msg += ". Live tensors by category:\n" + memory_tracker(Device::cuda(device)).report() +
         "Reduce the micro-batch size, use activation recomputation or a higher ZeRO stage, or add "
         "tensor/pipeline parallelism.";
  throw std::runtime_error(msg);
}

}  // namespace

bool available() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();  // "no device" must not linger as the last error
  return ok;
}

void* alloc(int device, size_t bytes) {
  if (bytes == 0) return nullptr;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream();
  const size_t size = round_size(bytes);
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mu);
  DeviceState& ds = s.devices[device];
  process_events(ds);

  // Best fit among this stream's cached blocks.
  Block probe;
  probe.stream = stream;
  probe.size = size;
  auto it = ds.free.lower_bound(&probe);
  if (it != ds.free.end() && (*it)->stream == stream && (*it)->size <= max_fit(size)) {
    Block* b = *it;
    ds.free.erase(it);
    b->in_use = true;
    ds.cached -= b->size;
    return b->ptr;
  }

  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, size);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it: later launch checks must not see it
    // Return the cache (every stream's) to the driver and try once more; pending
    // blocks are safe to free once the device is idle.
    LLM_CUDA_CHECK(cudaDeviceSynchronize());
    release_cached(ds);
    err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      const size_t reserved = ds.reserved, cached = ds.cached;
      lock.unlock();
      throw_out_of_memory(device, bytes, size, reserved, cached);
    }
  }
  LLM_CUDA_CHECK(err);
  Block* b = new Block();
  b->ptr = static_cast<char*>(p);
  b->size = size;
  b->stream = stream;
  b->in_use = true;
  ds.blocks[reinterpret_cast<uintptr_t>(p)] = b;
  ds.reserved += size;
  return p;
}

void free(int device, void* p) {
  if (!p) return;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  DeviceState& ds = s.devices[device];
  auto it = ds.blocks.find(reinterpret_cast<uintptr_t>(p));
  if (it == ds.blocks.end() || !it->second->in_use)
    throw std::logic_error("llm::cuda::free: " + std::to_string(reinterpret_cast<uintptr_t>(p)) + " on " +
                           Device::cuda(device).str() + " is not a live block of the caching allocator");
  Block* b = it->second;
  b->in_use = false;
  ds.cached += b->size;
  if (b->used_on.empty()) {
    ds.free.insert(b);  // stream order makes it safe for the next user on b->stream
    return;
  }
  // Used on other streams too: reusable once their work queued so far has finished.
  DeviceGuard guard(device);
  for (cudaStream_t other : b->used_on) {
    cudaEvent_t e = nullptr;
    if (!ds.spare_events.empty()) {
      e = ds.spare_events.back();
      ds.spare_events.pop_back();
    } else {
      LLM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    }
    LLM_CUDA_CHECK(cudaEventRecord(e, other));
    ds.pending.push_back({e, b});
    ++b->pending;
  }
  b->used_on.clear();
}

void record_stream(const void* ptr, cudaStream_t stream) {
  if (!ptr) return;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  for (auto& [device, ds] : s.devices) {
    Block* b = find_block(ds, ptr);
    if (!b) continue;
    if (!b->in_use)
      throw std::logic_error("llm::cuda::record_stream: the block holding this pointer has been freed");
    if (stream == b->stream) return;  // its own stream: stream order covers it
    for (cudaStream_t st : b->used_on)
      if (st == stream) return;
    b->used_on.push_back(stream);
    return;
  }
  throw std::invalid_argument("llm::cuda::record_stream: pointer " +
                              std::to_string(reinterpret_cast<uintptr_t>(ptr)) +
                              " was not allocated by the caching allocator");
}

size_t reserved_bytes(int device) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.devices.find(device);
  return it == s.devices.end() ? 0 : it->second.reserved;
}

size_t cached_bytes(int device) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.devices.find(device);
  return it == s.devices.end() ? 0 : it->second.cached;
}

void empty_cache(int device) {
  DeviceGuard guard(device);
  // Synchronise first so that blocks waiting on other streams' events can go too;
  // outside the lock, so other threads' frees are not held up by it.
  LLM_CUDA_CHECK(cudaDeviceSynchronize());
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.devices.find(device);
  if (it == s.devices.end()) return;
  release_cached(it->second);
}

}  // namespace llm::cuda
