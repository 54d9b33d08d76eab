// CUDA device memory for Tensor storage. A caching, stream-ordered allocator
// replaces this with the CUDA backend issue; byte accounting stays in
// core/allocator.cpp so both devices report the same categories.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "core/allocator.h"

namespace llm::cuda {

static void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

bool available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void* alloc(int device, size_t bytes) {
  check(cudaSetDevice(device), "cudaSetDevice");
  void* p = nullptr;
  check(cudaMalloc(&p, bytes), "cudaMalloc");
  return p;
}

void free(int device, void* p) {
  check(cudaSetDevice(device), "cudaSetDevice");
  check(cudaFree(p), "cudaFree");
}

}  // namespace llm::cuda
