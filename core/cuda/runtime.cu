// The CUDA device runtime (see runtime.h).
#include "core/cuda/runtime.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

namespace llm::cuda {

void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return;
  throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                           ") in " + what + " at " + file + ":" + std::to_string(line));
}

int select_device_for_local_rank() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0)
    throw std::runtime_error(std::string("no CUDA device is visible (") +
                             (err == cudaSuccess ? "none found" : cudaGetErrorString(err)) +
                             "): run on a GPU machine, check CUDA_VISIBLE_DEVICES, or use --device cpu");
  int local = 0;
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK", "MPI_LOCALRANKID"})
    if (const char* v = std::getenv(var)) {
      local = std::atoi(v);
      break;
    }
  const int device = local % count;
  LLM_CUDA_CHECK(cudaSetDevice(device));
  return device;
}

int current_device() {
  int d = 0;
  LLM_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

DeviceInfo device_info(int device) {
  cudaDeviceProp p{};
  LLM_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return {p.name, p.multiProcessorCount, p.major, p.minor, p.totalGlobalMem};
}

namespace {
struct Streams {
  std::mutex mu;
  std::map<int, cudaStream_t> own;  // per device, created on first use
};
Streams& streams() {
  static Streams s;
  return s;
}
thread_local std::map<int, cudaStream_t> overridden;
}  // namespace

cudaStream_t current_stream() {
  const int d = current_device();
  if (auto it = overridden.find(d); it != overridden.end()) return it->second;
  Streams& s = streams();
  std::lock_guard<std::mutex> lock(s.mu);
  cudaStream_t& st = s.own[d];
  if (!st) LLM_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  return st;
}

void set_current_stream(cudaStream_t stream) {
  const int d = current_device();
  if (stream) overridden[d] = stream;
  else overridden.erase(d);
}

void synchronize() { LLM_CUDA_CHECK(cudaStreamSynchronize(current_stream())); }

DeviceGuard::DeviceGuard(int device) {
  LLM_CUDA_CHECK(cudaGetDevice(&prev_));
  changed_ = prev_ != device;
  if (changed_) LLM_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  if (changed_) cudaSetDevice(prev_);  // no throw from a destructor
}

Stream::Stream() { LLM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
Stream::~Stream() {
  // Finish its work first: the caching allocator keys cached blocks by stream handle,
  // and a stream created later may get the same handle.
  if (stream_) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

Event::Event(bool timing) {
  LLM_CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
}
Event::~Event() {
  if (event_) cudaEventDestroy(event_);
}
void Event::record(cudaStream_t stream) { LLM_CUDA_CHECK(cudaEventRecord(event_, stream)); }
void Event::wait(cudaStream_t stream) const { LLM_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }
void Event::synchronize() const { LLM_CUDA_CHECK(cudaEventSynchronize(event_)); }
bool Event::query() const {
  const cudaError_t e = cudaEventQuery(event_);
  if (e == cudaErrorNotReady) return false;
  LLM_CUDA_CHECK(e);
  return true;
}
float Event::elapsed_ms(const Event& later) const {
  float ms = 0;
  LLM_CUDA_CHECK(cudaEventElapsedTime(&ms, event_, later.event_));
  return ms;
}

}  // namespace llm::cuda
