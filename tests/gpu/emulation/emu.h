// CPU emulation of the CUDA features the attention kernels use: one std::thread per CUDA
// thread, std::barrier for __syncthreads / warp collectives, ldmatrix / mma.m16n8k16 /
// shuffles computed from all 32 lanes' operands per the PTX ISA fragment layouts.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <barrier>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#include <algorithm>

#undef __global__
#undef __device__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#undef __shared__
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(x)

namespace emu {
struct D3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local D3 tIdx, bIdx;
inline D3 gDim, bDim;
struct Warp { std::barrier<> bar{32}; uint32_t slot[32][16]; };
struct Block {
  std::barrier<> bar;
  std::vector<unsigned char> smem, stat;
  std::vector<std::unique_ptr<Warp>> warps;
  Block(int n, size_t dyn) : bar(n), smem(dyn + 64), stat(65536 + 64) {
    for (int i = 0; i < (n + 31) / 32; ++i) warps.emplace_back(new Warp);
    // poison shared memory: results must not depend on its initial contents
    std::fill(smem.begin(), smem.end(), 0xff);
    std::fill(stat.begin(), stat.end(), 0xff);
  }
  unsigned char* dyn() { auto p = reinterpret_cast<uintptr_t>(smem.data()); return reinterpret_cast<unsigned char*>((p + 63) & ~uintptr_t(63)); }
  void* st() { auto p = reinterpret_cast<uintptr_t>(stat.data()); return reinterpret_cast<void*>((p + 63) & ~uintptr_t(63)); }
};
inline thread_local Block* cur;
inline int lane() { return tIdx.x & 31; }
inline Warp& warp() { return *cur->warps[tIdx.x >> 5]; }
template <class F>
void exchange(const uint32_t* in, int n, F&& f) {
  Warp& w = warp();
  const int l = lane();
  for (int i = 0; i < n; ++i) w.slot[l][i] = in[i];
  w.bar.arrive_and_wait();
  f(w.slot);
  w.bar.arrive_and_wait();
}
inline std::atomic<long> n_mma{0};

template <class K, class... A>
void launch(D3 grid, unsigned threads, size_t smem, K kernel, A... args) {
  gDim = grid;
  bDim = {threads, 1, 1};
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        Block blk(threads, smem);
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < threads; ++t)
          ts.emplace_back([&, t] {
            cur = &blk;
            tIdx = {t, 0, 0};
            bIdx = {x, y, z};
            kernel(args...);
          });
        for (auto& th : ts) th.join();
      }
}
}  // namespace emu

#define threadIdx emu::tIdx
#define blockIdx emu::bIdx
#define gridDim emu::gDim
#define blockDim emu::bDim
inline void __syncthreads() { emu::cur->bar.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp().bar.arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int m) {
  uint32_t in;
  std::memcpy(&in, &v, 4);
  float r;
  emu::exchange(&in, 1, [&](auto& s) { std::memcpy(&r, &s[emu::lane() ^ m][0], 4); });
  return r;
}
inline float __shfl_sync(unsigned, float v, int src) {
  uint32_t in;
  std::memcpy(&in, &v, 4);
  float r;
  emu::exchange(&in, 1, [&](auto& s) { std::memcpy(&r, &s[src][0], 4); });
  return r;
}
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline int min(int a, int b) { return a < b ? a : b; }
