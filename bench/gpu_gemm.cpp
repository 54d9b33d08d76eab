// BF16 GEMM throughput of ops::linear_forward / linear_backward (cuBLASLt) for the
// GEMMs of one LLaMA block and the LM head, for a ~1B model and a 125M model, with
// 8192 token rows per micro-batch. Prints TFLOP/s and the fraction of the H100 SXM's
// dense BF16 peak (989 TFLOP/s). Exits 0 with a message where there is no GPU.
//
//   llm-bench-gpu-gemm [iterations]        (default 20, after 3 warm-up runs)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "core/tensor.h"

using namespace llm;

namespace {

constexpr double kPeakTflops = 989.0;  // H100 SXM, dense BF16

struct Gemm {
  const char* model;
  const char* name;
  int64_t rows, in, out;
};

// Fills a GPU tensor with random BF16 values in [-1, 1) by tiling one host block
// (realistic data: zeros would run cooler and clock higher).
void fill_random(Tensor& t, const Tensor& pattern) {
  const int64_t n = t.numel(), chunk = pattern.numel();
  for (int64_t off = 0; off < n; off += chunk) {
    const int64_t len = std::min(chunk, n - off);
    t.flat_view(off, {len}).copy_from(pattern.flat_view(0, {len}));
  }
}

template <class F>
double time_ms(F&& f, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) f();
  cuda::Event start(true), stop(true);
  start.record(cuda::current_stream());
  for (int i = 0; i < iters; ++i) f();
  stop.record(cuda::current_stream());
  stop.synchronize();
  return start.elapsed_ms(stop) / iters;
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda::available()) {
    std::printf("no GPU: no CUDA device found, nothing to benchmark\n");
    return 0;
  }
  try {
    const int iters = argc > 1 ? std::max(1, std::atoi(argv[1])) : 20;
    const int device = cuda::select_device_for_local_rank();
    const cuda::DeviceInfo info = cuda::device_info(device);
    std::printf("device %d: %s, %d SMs, sm_%d%d; BF16 in, fp32 accumulate, BF16 out; %d iterations\n", device,
                info.name.c_str(), info.sm_count, info.cc_major, info.cc_minor, iters);

    // ~1B: hidden 2048, ffn 5632, 16 heads of 128, 8 kv groups; 125M: hidden 768, ffn 2048,
    // 12 heads of 64 (no grouping). qkv is one fused [(H + 2G)·D, d] weight, gate/up one [2F, d].
    const int64_t rows = 8192, vocab = 32000;
    const std::vector<Gemm> gemms = {
        {"1B", "qkv", rows, 2048, 2048 + 2 * 1024},
        {"1B", "attn out", rows, 2048, 2048},
        {"1B", "gate/up", rows, 2048, 2 * 5632},
        {"1B", "down", rows, 5632, 2048},
        {"1B", "lm head", rows, 2048, vocab},
        {"125M", "qkv", rows, 768, 3 * 768},
        {"125M", "attn out", rows, 768, 768},
        {"125M", "gate/up", rows, 768, 2 * 2048},
        {"125M", "down", rows, 2048, 768},
        {"125M", "lm head", rows, 768, vocab},
    };

    Tensor pattern = Tensor::empty({1 << 20}, DType::F32, MemoryCategory::Other);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (int64_t i = 0; i < pattern.numel(); ++i) pattern.data<float>()[i] = u(rng);
    const Tensor pattern_bf16 = pattern.to(DType::BF16, MemoryCategory::Other);

    std::printf("\n%-5s %-9s %6s %6s %6s | %9s %8s %6s | %9s %8s %6s\n", "model", "gemm", "rows", "in", "out",
                "fwd ms", "TFLOP/s", "peak", "bwd ms", "TFLOP/s", "peak");
    double fwd_flops_all = 0, fwd_ms_all = 0, bwd_flops_all = 0, bwd_ms_all = 0;
    for (const Gemm& g : gemms) {
      const Device d = Device::cuda(device);
      auto make = [&](int64_t r, int64_t c, MemoryCategory cat) {
        Tensor t = Tensor::empty({r, c}, DType::BF16, cat, d);
        fill_random(t, pattern_bf16);
        return t;
      };
      Tensor x = make(g.rows, g.in, MemoryCategory::Activations);
      Tensor w = make(g.out, g.in, MemoryCategory::Parameters);
      Tensor y = make(g.rows, g.out, MemoryCategory::Activations);
      Tensor dy = make(g.rows, g.out, MemoryCategory::Activations);
      Tensor dx = make(g.rows, g.in, MemoryCategory::Activations);
      Tensor dw = make(g.out, g.in, MemoryCategory::Gradients);
      const double flops = 2.0 * static_cast<double>(g.rows) * static_cast<double>(g.in) * static_cast<double>(g.out);
      const double fwd = time_ms([&] { ops::linear_forward(x, w, y); }, 3, iters);
      const double bwd = time_ms([&] { ops::linear_backward(dy, x, w, &dx, dw); }, 3, iters);
      const double fwd_tf = flops / (fwd * 1e-3) / 1e12, bwd_tf = 2 * flops / (bwd * 1e-3) / 1e12;
      std::printf("%-5s %-9s %6lld %6lld %6lld | %9.3f %8.1f %5.1f%% | %9.3f %8.1f %5.1f%%\n", g.model, g.name,
                  static_cast<long long>(g.rows), static_cast<long long>(g.in), static_cast<long long>(g.out), fwd,
                  fwd_tf, 100 * fwd_tf / kPeakTflops, bwd, bwd_tf, 100 * bwd_tf / kPeakTflops);
      fwd_flops_all += flops;
      fwd_ms_all += fwd;
      bwd_flops_all += 2 * flops;
      bwd_ms_all += bwd;
    }
    const double fwd_tf = fwd_flops_all / (fwd_ms_all * 1e-3) / 1e12;
    const double bwd_tf = bwd_flops_all / (bwd_ms_all * 1e-3) / 1e12;
    std::printf("%-5s %-9s %20s | %9.3f %8.1f %5.1f%% | %9.3f %8.1f %5.1f%%\n", "all", "(sum)", "", fwd_ms_all,
                fwd_tf, 100 * fwd_tf / kPeakTflops, bwd_ms_all, bwd_tf, 100 * bwd_tf / kPeakTflops);
    std::printf("\npeak: %.0f TFLOP/s (H100 SXM dense BF16); on another GPU read the percentages accordingly\n",
                kPeakTflops);
    std::printf("allocator: %s reserved, %s cached\n", format_bytes(cuda::reserved_bytes(device)).c_str(),
                format_bytes(cuda::cached_bytes(device)).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llm-bench-gpu-gemm: %s\n", e.what());
    return 1;
  }
}
