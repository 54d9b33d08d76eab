// CUDA device memory for Tensor storage. PLACEHOLDER: plain cudaMalloc/cudaFree
// until the caching, stream-ordered allocator lands; byte accounting stays in
// core/allocator.cpp so both devices report the same categories.
#include <cuda_runtime.h>

#include "core/allocator.h"
#include "core/cuda/runtime.h"

namespace llm::cuda {

bool available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void* alloc(int device, size_t bytes) {
  LLM_CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  LLM_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

void free(int device, void* p) {
  LLM_CUDA_CHECK(cudaSetDevice(device));
  LLM_CUDA_CHECK(cudaFree(p));
}

void record_stream(const void*, cudaStream_t) {}
size_t reserved_bytes(int) { return 0; }
size_t cached_bytes(int) { return 0; }
void empty_cache(int) {}

}  // namespace llm::cuda
