// The CUDA device runtime: error checks, device selection, the compute stream,
// streams and events, and the caching allocator's controls.
//
// Every kernel launcher in core/cuda/ runs on current_stream() and checks its
// launch with LLM_CUDA_CHECK(cudaGetLastError()). Tensor storage on a GPU
// comes from the caching, stream-ordered allocator behind llm::cuda::alloc /
// free (core/allocator.h keeps the per-category byte counters for both
// devices): a freed block is reused by later work on the stream it was
// allocated for, which stream order makes safe without a synchronisation;
// a block that another stream (NCCL's) also used is marked with
// record_stream() and is reused only once that stream's work has passed.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace llm::cuda {

// Throws std::runtime_error "CUDA error <name> (<text>) in <what> at <file>:<line>".
void check(cudaError_t err, const char* what, const char* file, int line);
#define LLM_CUDA_CHECK(expr) ::llm::cuda::check((expr), #expr, __FILE__, __LINE__)

// Picks this process's GPU from the node-local rank (OMPI_COMM_WORLD_LOCAL_RANK,
// SLURM_LOCALID, LOCAL_RANK or MPI_LOCALRANKID; 0 when none is set), modulo the
// visible devices, makes it current and returns it. Throws a clear error when
// no device is visible.
int select_device_for_local_rank();
int current_device();

struct DeviceInfo {
  std::string name;
  int sm_count = 0, cc_major = 0, cc_minor = 0;
  size_t total_memory = 0;
};
DeviceInfo device_info(int device);

// The stream every kernel and stream-ordered copy of the current device runs on
// (a non-blocking stream created per device on first use).
cudaStream_t current_stream();
void set_current_stream(cudaStream_t stream);  // nullptr: back to the device's own
void synchronize();                            // waits for current_stream()

class Stream {
 public:
  Stream();  // non-blocking, on the current device
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  explicit Event(bool timing = false);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t stream);
  void wait(cudaStream_t stream) const;  // stream waits for this event (no host block)
  void synchronize() const;              // host waits
  bool query() const;                    // true when done
  float elapsed_ms(const Event& later) const;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// Makes `device` current for the scope and restores the previous one after
// (kernels, copies, events and cuBLASLt plans belong to the current device).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool changed_ = false;
};

// Marks that `stream` uses the block holding `ptr`: when it is freed it is
// reused only after the work queued on `stream` up to the free has finished.
void record_stream(const void* ptr, cudaStream_t stream);

// Bytes the allocator holds from cudaMalloc (in use + cached) and cached only.
size_t reserved_bytes(int device);
size_t cached_bytes(int device);
// Returns cached blocks to the driver (after synchronising the device).
void empty_cache(int device);

}  // namespace llm::cuda
