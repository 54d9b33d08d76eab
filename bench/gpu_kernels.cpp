// Memory bandwidth of the fused CUDA kernels (core/cuda/*.cu) at the ~1B model's
// shapes: 8192 token rows (4 × 2048), hidden 2048, ffn 5632, 16 heads of 128 with
// 8 kv groups, vocabulary 32000; BF16 activations (F32 statistics, F32 master
// weights and moments for AdamW). Each kernel is timed with CUDA events over
// `iterations` calls after 3 warm-up calls; the bytes it must move (the formula
// is printed beside it) over that time give GB/s and the fraction of the H100
// SXM's 3350 GB/s of HBM3. Exits 0 with a message where there is no GPU.
//
//   llm-bench-gpu-kernels [iterations]        (default 20)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "core/tensor.h"

using namespace llm;

namespace {

constexpr double kPeakGBs = 3350.0;  // H100 SXM, HBM3
const Device kGpu = Device::cuda(0);

// A GPU tensor of random values in [lo, hi): one random host block, tiled.
Tensor random_gpu(const Shape& shape, DType dt, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  Tensor t = Tensor::empty(shape, dt, MemoryCategory::Other, kGpu);
  const int64_t n = t.numel(), block = std::min<int64_t>(n, 1 << 20);
  Tensor h64 = Tensor::empty({block}, DType::F64, MemoryCategory::Other);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  for (int64_t i = 0; i < block; ++i) h64.data<double>()[i] = dist(rng);
  const Tensor h = h64.to(dt, MemoryCategory::Other);
  for (int64_t off = 0; off < n; off += block) {
    const int64_t len = std::min(block, n - off);
    t.flat_view(off, {len}).copy_from(h.flat_view(0, {len}));
  }
  LLM_CUDA_CHECK(cudaDeviceSynchronize());  // the copies may run on another stream
  return t;
}

Tensor ids_gpu(const std::vector<int32_t>& ids) {
  Tensor h = Tensor::empty({static_cast<int64_t>(ids.size())}, DType::I32, MemoryCategory::Other);
  std::copy(ids.begin(), ids.end(), h.data<int32_t>());
  Tensor d = Tensor::empty(h.shape(), DType::I32, MemoryCategory::Other, kGpu);
  d.copy_from(h);
  LLM_CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

double time_ms(const std::function<void()>& f, int iters) {
  for (int i = 0; i < 3; ++i) f();
  cuda::Event start(true), stop(true);
  start.record(cuda::current_stream());
  for (int i = 0; i < iters; ++i) f();
  stop.record(cuda::current_stream());
  stop.synchronize();
  return start.elapsed_ms(stop) / iters;
}

void report(const char* name, const std::string& formula, double bytes, double ms) {
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("%-26s %9.1f us %9.1f MB %8.0f GB/s %6.1f%%   %s\n", name, ms * 1e3, bytes / 1e6, gbs,
              100.0 * gbs / kPeakGBs, formula.c_str());
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
    std::printf("device %d: %s, %d SMs, sm_%d%d; %d iterations after 3 warm-up calls; %% of %.0f GB/s\n", device,
                info.name.c_str(), info.sm_count, info.cc_major, info.cc_minor, iters, kPeakGBs);

    const int64_t R = 8192, D = 2048, F = 5632, H = 16, G = 8, HD = 128, V = 32000;
    const DType bf = DType::BF16;
    const double s = 2.0;  // bytes per BF16 element
    std::printf("rows %lld, hidden %lld, ffn %lld, heads %lld, groups %lld, head_dim %lld, vocab %lld; BF16 (s = 2)\n\n",
                (long long)R, (long long)D, (long long)F, (long long)H, (long long)G, (long long)HD, (long long)V);
    std::printf("%-26s %12s %12s %13s %7s   %s\n", "kernel", "time", "moved", "bandwidth", "peak", "bytes");

    // ---- embedding
    {
      std::mt19937 rng(1);
      std::vector<int32_t> tokens(R);
      for (auto& t : tokens) t = static_cast<int32_t>(rng() % V);
      const double u = static_cast<double>(std::set<int32_t>(tokens.begin(), tokens.end()).size());
      const Tensor tok = ids_gpu(tokens), table = random_gpu({V, D}, bf, 2);
      Tensor out = Tensor::empty({R, D}, bf, MemoryCategory::Other, kGpu);
      report("embedding_forward", "2·n·D·s + 4n", 2 * R * D * s + 4.0 * R,
             time_ms([&] { ops::embedding_forward(tok, table, out); }, iters));
      Tensor dtable = random_gpu({V, D}, bf, 3);
      report("embedding_backward", "n·D·s + 2·u·D·s + 40n (sort)", R * D * s + 2 * u * D * s + 40.0 * R,
             time_ms([&] { ops::embedding_backward(tok, out, dtable); }, iters));
    }
    // ---- RMSNorm
    {
      const Tensor x = random_gpu({R, D}, bf, 4), res = random_gpu({R, D}, bf, 5), w = random_gpu({D}, bf, 6);
      Tensor y = Tensor::empty({R, D}, bf, MemoryCategory::Other, kGpu);
      Tensor h = Tensor::empty({R, D}, bf, MemoryCategory::Other, kGpu);
      Tensor rstd = Tensor::empty({R}, DType::F32, MemoryCategory::Other, kGpu);
      report("rmsnorm_forward", "2·R·D·s + 4R + D·s", 2 * R * D * s + 4.0 * R + D * s,
             time_ms([&] { ops::rmsnorm_forward(x, w, 1e-5, y, rstd); }, iters));
      report("add_rmsnorm_forward", "4·R·D·s + 4R + D·s", 4 * R * D * s + 4.0 * R + D * s,
             time_ms([&] { ops::add_rmsnorm_forward(x, res, w, 1e-5, h, y, rstd); }, iters));
      Tensor dx = random_gpu({R, D}, bf, 7), dw = random_gpu({D}, bf, 8);
      const double chunks = static_cast<double>(std::min<int64_t>((R + 15) / 16, 1024));
      report("rmsnorm_backward", "4·R·D·s + 4R + 8·C·D + 2·D·s", 4 * R * D * s + 4.0 * R + 8 * chunks * D + 2 * D * s,
             time_ms([&] { ops::rmsnorm_backward(y, x, w, rstd, dx, dw); }, iters));
      report("add_", "3·R·D·s", 3 * R * D * s, time_ms([&] { ops::add_(dx, x); }, iters));
    }
    // ---- RoPE (q and k of the fused qkv buffer)
    {
      const ops::QkvLayout l{4, 2048, H, G, HD};
      Tensor qkv = random_gpu({R, l.row_stride()}, bf, 9);
      const double bytes = 2.0 * R * (H + G) * HD * s;
      report("rope_forward", "2·R·(H+G)·D·s", bytes, time_ms([&] { ops::rope_forward(qkv, l, 0, 10000.0); }, iters));
      report("rope_backward", "2·R·(H+G)·D·s", bytes,
             time_ms([&] { ops::rope_backward(qkv, l, 0, 10000.0); }, iters));
    }
    // ---- SwiGLU
    {
      const Tensor gu = random_gpu({R, 2 * F}, bf, 10, -4, 4);
      Tensor out = Tensor::empty({R, F}, bf, MemoryCategory::Other, kGpu);
      report("swiglu_forward", "3·R·F·s", 3 * R * F * s, time_ms([&] { ops::swiglu_forward(gu, out); }, iters));
      Tensor dgu = random_gpu({R, 2 * F}, bf, 11);
      report("swiglu_backward", "7·R·F·s", 7 * R * F * s,
             time_ms([&] { ops::swiglu_backward(out, gu, dgu); }, iters));
    }
    // ---- cross-entropy over the vocabulary
    {
      std::mt19937 rng(12);
      std::vector<int32_t> targets(R);
      for (auto& t : targets) t = static_cast<int32_t>(rng() % V);
      const Tensor tg = ids_gpu(targets);
      Tensor logits = random_gpu({R, V}, bf, 13, -8, 8);
      Tensor loss = Tensor::empty({R}, DType::F32, MemoryCategory::Other, kGpu);
      Tensor lse = Tensor::empty({R}, DType::F32, MemoryCategory::Other, kGpu);
      Tensor row_max = Tensor::empty({R}, DType::F32, MemoryCategory::Other, kGpu);
      Tensor stats = Tensor::empty({2, R}, DType::F64, MemoryCategory::Other, kGpu);
      report("cross_entropy_forward", "R·V·s + 12R", R * V * s + 12.0 * R,
             time_ms([&] { ops::cross_entropy_forward(logits, tg, loss, lse); }, iters));
      report("cross_entropy_row_max", "R·V·s + 4R", R * V * s + 4.0 * R,
             time_ms([&] { ops::cross_entropy_row_max(logits, row_max); }, iters));
      report("cross_entropy_partial_sums", "R·V·s + 24R", R * V * s + 24.0 * R,
             time_ms([&] { ops::cross_entropy_partial_sums(logits, tg, 0, V, row_max, stats); }, iters));
      const Tensor dloss = random_gpu({R}, DType::F32, 14, 0, 1e-4);
      report("cross_entropy_backward", "2·R·V·s + 12R", 2 * R * V * s + 12.0 * R,
             time_ms([&] { ops::cross_entropy_backward_inplace(logits, lse, tg, dloss); }, iters));
    }
    // ---- optimizer: AdamW over 4 blocks' parameters, and the gradient reductions
    {
      const int64_t layers = 4;
      std::vector<int64_t> sizes;
      for (int64_t k = 0; k < layers; ++k)
        for (int64_t n : {D, (H + 2 * G) * HD * D, H * HD * D, D, 2 * F * D, F * D}) sizes.push_back(n);
      int64_t total = 0;
      for (int64_t n : sizes) total += n;
      Tensor p = random_gpu({total}, DType::F32, 15, -0.05, 0.05), g = random_gpu({total}, bf, 16, -1e-3, 1e-3);
      Tensor m = random_gpu({total}, DType::F32, 17, -1e-4, 1e-4), v = random_gpu({total}, DType::F32, 18, 0, 1e-6);
      Tensor copy = Tensor::empty({total}, bf, MemoryCategory::Other, kGpu);
      std::vector<ops::AdamWSegmentTensors> segs;
      std::vector<Tensor> grads;
      int64_t off = 0;
      for (int64_t n : sizes) {
        ops::AdamWSegmentTensors t;
        t.param = p.flat_view(off, {n});
        t.grad = g.flat_view(off, {n});
        t.exp_avg = m.flat_view(off, {n});
        t.exp_avg_sq = v.flat_view(off, {n});
        t.model_copy = copy.flat_view(off, {n});
        t.weight_decay = n == D ? 0.0 : 0.1;
        segs.push_back(t);
        grads.push_back(t.grad);
        off += n;
      }
      const ops::AdamWParams ap{3e-4, 0.9, 0.95, 1e-8, 0.1, 10, 1.0};
      const double n = static_cast<double>(total);
      std::printf("\noptimizer: %lld parameters in %zu segments (4 blocks), BF16 grads, BF16 model copy\n",
                  (long long)total, segs.size());
      report("adamw_multi_step", "n·(24 + 2 + 2)", n * 28, time_ms([&] { ops::adamw_multi_step(segs, ap); }, iters));
      report("sums_of_squares (+sync)", "n·s", n * s, time_ms([&] { ops::sums_of_squares(grads); }, iters));
      report("all_finite (+sync)", "n·s", n * s, time_ms([&] { ops::all_finite(g); }, iters));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llm-bench-gpu-kernels: %s\n", e.what());
    return 1;
  }
}
