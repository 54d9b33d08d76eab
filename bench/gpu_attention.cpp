// Causal attention on the GPU (core/cuda/flash_attention.cu): forward and backward
// throughput in BF16 on the tensor-core kernels.
//
//   build/bin/llm-bench-gpu-attention [--iters N] [--warmup N]
//
// Per configuration (B, S, H, G, D) it times --iters calls (after --warmup) of
// ops::attention_forward and of ops::attention_backward with CUDA events on the compute
// stream, and prints one line each:
//   RESULT pass=fwd B=8 S=1024 H=12 G=12 D=64 ms=.. tflops=.. peak_fraction=..
// FLOPs count the causal half only: forward 4·B·H·S²·D/2 (two S×S×D products, half of
// each masked), backward 2.5× forward (five products). peak_fraction is against
// 989 TFLOP/s, the H100 SXM's dense BF16 tensor-core peak. LLM_CUDA_ATTENTION=generic
// benchmarks the CUDA-core kernels instead (slow; use a small --iters). Without a GPU it
// prints a message and exits 0.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "core/tensor.h"

using namespace llm;

namespace {

constexpr double kPeakTflops = 989.0;
constexpr MemoryCategory kCat = MemoryCategory::Other;

struct Config {
  int64_t B, S, H, G, D;
};

Tensor random_gpu(const Shape& shape, DType dt, uint64_t seed, double scale) {
  Tensor t = Tensor::empty(shape, DType::F32, kCat);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(scale) * u(rng) * 1.7320508f;  // unit variance
  Tensor h = t.to(dt, kCat);
  Tensor g = Tensor::empty(shape, dt, kCat, Device::cuda(llm::cuda::current_device()));
  LLM_CUDA_CHECK(cudaDeviceSynchronize());
  g.copy_from(h);
  LLM_CUDA_CHECK(cudaDeviceSynchronize());
  return g;
}

template <class F>
double time_ms(int warmup, int iters, F&& f) {
  for (int i = 0; i < warmup; ++i) f();
  llm::cuda::Event start(true), stop(true);
  cudaStream_t s = llm::cuda::current_stream();
  start.record(s);
  for (int i = 0; i < iters; ++i) f();
  stop.record(s);
  stop.synchronize();
  return start.elapsed_ms(stop) / iters;
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 20, warmup = 3;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iters") && i + 1 < argc)
      iters = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--warmup") && i + 1 < argc)
      warmup = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--iters N] [--warmup N]\n", argv[0]);
      return 2;
    }
  }
  if (!llm::cuda::available()) {
    std::printf("no GPU: llm-bench-gpu-attention skipped\n");
    return 0;
  }
  try {
    const int dev = llm::cuda::select_device_for_local_rank();
    const auto info = llm::cuda::device_info(dev);
    const char* impl = std::getenv("LLM_CUDA_ATTENTION");
    std::printf("device %s (sm_%d%d, %d SMs), BF16, impl %s, %d iterations after %d warm-up\n", info.name.c_str(),
                info.cc_major, info.cc_minor, info.sm_count, impl ? impl : "flash", iters, warmup);
    const std::vector<Config> configs = {{8, 1024, 12, 12, 64}, {4, 2048, 16, 8, 128}};
    for (const Config& c : configs) {
      const ops::QkvLayout l{c.B, c.S, c.H, c.G, c.D};
      const int64_t rows = c.B * c.S, HD = c.H * c.D;
      Tensor qkv = random_gpu({rows, l.row_stride()}, DType::BF16, 1, 1.0);
      Tensor dout = random_gpu({rows, HD}, DType::BF16, 2, 1.0);
      Tensor dqkv = random_gpu({rows, l.row_stride()}, DType::BF16, 3, 0.0);
      Tensor out = Tensor::empty({rows, HD}, DType::BF16, kCat, qkv.device());
      Tensor lse = Tensor::empty({c.B * c.H * c.S}, DType::F32, kCat, qkv.device());
      const double fwd_flops = 4.0 * c.B * c.H * static_cast<double>(c.S) * c.S * c.D / 2.0;
      const double bwd_flops = 2.5 * fwd_flops;
      const double fwd_ms = time_ms(warmup, iters, [&] { ops::attention_forward(qkv, l, out, lse); });
      const double bwd_ms = time_ms(warmup, iters, [&] { ops::attention_backward(dout, qkv, l, out, lse, dqkv); });
      for (int pass = 0; pass < 2; ++pass) {
        const double ms = pass ? bwd_ms : fwd_ms, flops = pass ? bwd_flops : fwd_flops;
        const double tflops = flops / (ms * 1e-3) / 1e12;
        std::printf("RESULT pass=%s B=%lld S=%lld H=%lld G=%lld D=%lld ms=%.3f tflops=%.1f peak_fraction=%.3f\n",
                    pass ? "bwd" : "fwd", static_cast<long long>(c.B), static_cast<long long>(c.S),
                    static_cast<long long>(c.H), static_cast<long long>(c.G), static_cast<long long>(c.D), ms, tflops,
                    tflops / kPeakTflops);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llm-bench-gpu-attention: %s\n", e.what());
    return 1;
  }
  return 0;
}
