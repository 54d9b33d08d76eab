// The CUDA runtime: the caching allocator (reuse per stream, record_stream,
// byte counters, out-of-memory report), host↔device copies, zero_, and dtype
// conversion on the GPU against the CPU's, bit for bit.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/allocator.h"
#include "core/cuda/cuda_ops.h"
#include "core/cuda/runtime.h"
#include "core/tensor.h"
#include "tests/gpu/gpu_test_support.h"

using namespace llm;

namespace {

const Device kGpu = Device::cuda(0);

Tensor gpu_empty(const Shape& shape, DType dtype, MemoryCategory c = MemoryCategory::Other) {
  return Tensor::empty(shape, dtype, c, kGpu);
}

Tensor to_gpu(const Tensor& cpu) {
  Tensor t = gpu_empty(cpu.shape(), cpu.dtype());
  t.copy_from(cpu);
  return t;
}

Tensor to_cpu(const Tensor& gpu) {
  Tensor t = Tensor::empty(gpu.shape(), gpu.dtype(), MemoryCategory::Other);
  t.copy_from(gpu);
  return t;
}

// A CPU tensor of `n` elements of `dtype` whose bits are random (every pattern: NaNs
// with payloads, infinities, subnormals), with some hand-picked edge cases first.
Tensor random_bits(int64_t n, DType dtype, uint32_t seed) {
  Tensor t = Tensor::empty({n}, dtype, MemoryCategory::Other);
  std::mt19937 rng(seed);
  if (dtype == DType::F32 || dtype == DType::I32) {
    const std::vector<uint32_t> edges = {
        0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffa5a5a5u,
        0x00000001u, 0x807fffffu, 0x33000000u, 0x33000001u, 0xb3800000u, 0x477fefffu, 0x477ff000u,
        0x477fe000u, 0x7f7fffffu, 0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x387fc000u, 0x38800000u,
        0x3f800fffu, 0x3f801000u, 0x3f803000u};
    uint32_t* p = static_cast<uint32_t*>(t.raw());
    for (int64_t i = 0; i < n; ++i) p[i] = i < static_cast<int64_t>(edges.size()) ? edges[i] : rng();
  } else {
    uint16_t* p = static_cast<uint16_t*>(t.raw());
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<uint16_t>(rng());
  }
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// The index of the first element whose bits differ, or -1.
int64_t first_difference(const Tensor& a, const Tensor& b) {
  const size_t w = dtype_size(a.dtype());
  const char *pa = static_cast<const char*>(a.raw()), *pb = static_cast<const char*>(b.raw());
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(pa + i * w, pb + i * w, w)) return i;
  return -1;
}

}  // namespace

TEST(CachingAllocator, FreedBlockIsReusedOnTheSameStream) {
  LLM_REQUIRE_GPU();
  cuda::empty_cache(0);
  const size_t reserved0 = cuda::reserved_bytes(0);
  EXPECT_EQ(cuda::cached_bytes(0), 0u);
  void* first = nullptr;
  {
    Tensor t = gpu_empty({1000}, DType::F32);  // 4000 bytes, rounded to 4096
    first = t.raw();
    EXPECT_EQ(cuda::reserved_bytes(0), reserved0 + 4096);
    EXPECT_EQ(cuda::cached_bytes(0), 0u);
  }
  EXPECT_EQ(cuda::cached_bytes(0), 4096u);
  EXPECT_EQ(cuda::reserved_bytes(0), reserved0 + 4096);
  {
    Tensor t = gpu_empty({1000}, DType::F32);
    EXPECT_EQ(t.raw(), first);
    EXPECT_EQ(cuda::cached_bytes(0), 0u);
    EXPECT_EQ(cuda::reserved_bytes(0), reserved0 + 4096);
  }
  {
    Tensor t = gpu_empty({2000}, DType::BF16);  // also 4000 bytes: the same block
    EXPECT_EQ(t.raw(), first);
  }
  cuda::empty_cache(0);
  EXPECT_EQ(cuda::cached_bytes(0), 0u);
  EXPECT_EQ(cuda::reserved_bytes(0), reserved0);
}

TEST(CachingAllocator, LargeBlocksRoundToTwoMebibytesAndServeSmallerRequests) {
  LLM_REQUIRE_GPU();
  cuda::empty_cache(0);
  const size_t reserved0 = cuda::reserved_bytes(0);
  const size_t MiB = size_t(1) << 20;
  void* first = nullptr;
  {
    Tensor t = gpu_empty({static_cast<int64_t>(63 * MiB + 1)}, DType::BF16);  // 126 MiB + 2 B → 128 MiB
    first = t.raw();
    EXPECT_EQ(cuda::reserved_bytes(0), reserved0 + 128 * MiB);
  }
  {
    Tensor t = gpu_empty({static_cast<int64_t>(60 * MiB)}, DType::BF16);  // 120 MiB: wastes 8, fits
    EXPECT_EQ(t.raw(), first);
    EXPECT_EQ(cuda::reserved_bytes(0), reserved0 + 128 * MiB);
  }
  {
    Tensor t = gpu_empty({static_cast<int64_t>(16 * MiB)}, DType::BF16);  // 32 MiB: would waste 96, a new block
    EXPECT_NE(t.raw(), first);
    EXPECT_EQ(cuda::reserved_bytes(0), reserved0 + 160 * MiB);
    EXPECT_EQ(cuda::cached_bytes(0), 128 * MiB);
  }
  cuda::empty_cache(0);
  EXPECT_EQ(cuda::reserved_bytes(0), reserved0);
}

TEST(CachingAllocator, BlocksAreNotSharedBetweenStreams) {
  LLM_REQUIRE_GPU();
  cuda::empty_cache(0);
  void* first = nullptr;
  { first = gpu_empty({4096}, DType::F32).raw(); }
  cuda::Stream other;
  cuda::set_current_stream(other.get());
  void* second = nullptr;
  try {
    Tensor t = gpu_empty({4096}, DType::F32);
    second = t.raw();
  } catch (...) {
    cuda::set_current_stream(nullptr);
    throw;
  }
  cuda::set_current_stream(nullptr);
  EXPECT_NE(second, first);  // the cached block belongs to the default stream
  { EXPECT_EQ(gpu_empty({4096}, DType::F32).raw(), first); }
  LLM_CUDA_CHECK(cudaStreamSynchronize(other.get()));
  cuda::empty_cache(0);
}

namespace {
// Blocks a stream (through a host function) until released; releases on scope exit
// so that a failing test cannot leave the device waiting forever.
struct StreamGate {
  std::atomic<bool> open{false};
  explicit StreamGate(cudaStream_t s) {
    LLM_CUDA_CHECK(cudaLaunchHostFunc(
        s,
        [](void* flag) {
          while (!static_cast<std::atomic<bool>*>(flag)->load()) std::this_thread::yield();
        },
        &open));
  }
  void release() { open = true; }
  ~StreamGate() { open = true; }
};
}  // namespace

TEST(CachingAllocator, RecordStreamDelaysReuseUntilTheOtherStreamHasPassed) {
  LLM_REQUIRE_GPU();
  cuda::empty_cache(0);
  const size_t reserved0 = cuda::reserved_bytes(0);
  cuda::Stream other;
  void *first = nullptr, *second = nullptr;
  {
    StreamGate gate(other.get());
    {
      Tensor t = gpu_empty({1024, 1024}, DType::F32);
      first = t.raw();
      // An address inside the block (a view) marks the whole block.
      cuda::record_stream(t.slice_rows(512, 1024).raw(), other.get());
    }  // freed while `other` is still blocked: not reusable yet
    EXPECT_EQ(cuda::cached_bytes(0), 4u << 20);
    {
      Tensor t = gpu_empty({1024, 1024}, DType::F32);
      second = t.raw();
      EXPECT_NE(second, first);
    }
    gate.release();
    LLM_CUDA_CHECK(cudaStreamSynchronize(other.get()));
  }
  // Both blocks are ready now: two requests get exactly those two, no new memory.
  Tensor a = gpu_empty({1024, 1024}, DType::F32), b = gpu_empty({1024, 1024}, DType::F32);
  EXPECT_EQ((std::set<void*>{a.raw(), b.raw()}), (std::set<void*>{first, second}));
  EXPECT_EQ(cuda::reserved_bytes(0), reserved0 + (8u << 20));
  EXPECT_EQ(cuda::cached_bytes(0), 0u);
  EXPECT_THROW(cuda::record_stream(reinterpret_cast<void*>(uintptr_t(16)), other.get()), std::invalid_argument);
}

TEST(CachingAllocator, CategoryCountersTrackLiveTensorsInRequestedBytes) {
  LLM_REQUIRE_GPU();
  MemoryTracker& tracker = memory_tracker(kGpu);
  const size_t params0 = tracker.current(MemoryCategory::Parameters);
  const size_t state0 = tracker.current(MemoryCategory::OptimizerState);
  const size_t total0 = tracker.current_total();
  {
    Tensor p = Tensor::empty({123}, DType::BF16, MemoryCategory::Parameters, kGpu);
    Tensor m = Tensor::empty({7, 5}, DType::F32, MemoryCategory::OptimizerState, kGpu);
    EXPECT_EQ(tracker.current(MemoryCategory::Parameters), params0 + 246);
    EXPECT_EQ(tracker.current(MemoryCategory::OptimizerState), state0 + 140);
    EXPECT_EQ(tracker.current_total(), total0 + 386);
    EXPECT_GE(tracker.peak(MemoryCategory::Parameters), params0 + 246);
  }
  EXPECT_EQ(tracker.current(MemoryCategory::Parameters), params0);
  EXPECT_EQ(tracker.current(MemoryCategory::OptimizerState), state0);
  EXPECT_EQ(tracker.current_total(), total0);
}

TEST(CachingAllocator, OutOfMemoryReportsTheRequestAndTheCategories) {
  LLM_REQUIRE_GPU();
  Tensor keep = Tensor::empty({1024}, DType::F32, MemoryCategory::Parameters, kGpu);
  const size_t total = cuda::device_info(0).total_memory;
  const size_t activations0 = memory_tracker(kGpu).current(MemoryCategory::Activations);
  try {
    Tensor huge = Tensor::empty({static_cast<int64_t>(total / 2)}, DType::F32, MemoryCategory::Activations, kGpu);
    FAIL() << "allocating twice the device's memory succeeded";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("out of memory"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(total / 2 * 4) + " bytes"), std::string::npos) << msg;
    EXPECT_NE(msg.find("reserved"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cached"), std::string::npos) << msg;
    EXPECT_NE(msg.find("parameters"), std::string::npos) << msg;
  }
  EXPECT_EQ(memory_tracker(kGpu).current(MemoryCategory::Activations), activations0);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // no error left for the next launch check
  Tensor after = gpu_empty({1000}, DType::F32);  // and the allocator still works
  after.zero_();
  cuda::synchronize();
}

TEST(TensorOnGpu, CopiesRoundTripThroughTheDeviceBitwise) {
  LLM_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64, DType::I32}) {
    Tensor src = dt == DType::F64 ? random_bits(100003, DType::F32, 7).to(DType::F64, MemoryCategory::Other)
                                  : random_bits(100003, dt, 7);
    Tensor g = to_gpu(src);
    Tensor g2 = g.clone(MemoryCategory::Other);  // device to device
    Tensor back = to_cpu(g2);
    EXPECT_TRUE(same_bits(back, src)) << dtype_name(dt);
  }
  // Into and out of views at odd offsets.
  Tensor src = random_bits(1000, DType::BF16, 8);
  Tensor g = gpu_empty({1000}, DType::BF16);
  g.zero_();
  g.flat_view(3, {501}).copy_from(src.flat_view(1, {501}));
  Tensor back = to_cpu(g);
  const uint16_t* b = static_cast<const uint16_t*>(back.raw());
  const uint16_t* s = static_cast<const uint16_t*>(src.raw());
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(b[i], (i >= 3 && i < 504) ? s[i - 2] : 0) << i;
  // Overlapping views of one GPU buffer behave like memmove.
  Tensor seq = Tensor::empty({100}, DType::I32, MemoryCategory::Other);
  for (int i = 0; i < 100; ++i) seq.data<int32_t>()[i] = i;
  Tensor gs = to_gpu(seq);
  gs.flat_view(10, {80}).copy_from(gs.flat_view(0, {80}));
  Tensor r = to_cpu(gs);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(r.data<int32_t>()[i], i < 10 || i >= 90 ? i : i - 10) << i;
}

TEST(TensorOnGpu, ZeroClearsExactlyTheView) {
  LLM_REQUIRE_GPU();
  Tensor src = Tensor::empty({64, 33}, DType::F32, MemoryCategory::Other);
  for (int64_t i = 0; i < src.numel(); ++i) src.data<float>()[i] = 1.0f + static_cast<float>(i);
  Tensor g = to_gpu(src);
  g.slice_rows(10, 20).zero_();
  Tensor back = to_cpu(g);
  for (int64_t i = 0; i < src.numel(); ++i) {
    const bool cleared = i >= 10 * 33 && i < 20 * 33;
    ASSERT_EQ(back.data<float>()[i], cleared ? 0.0f : src.data<float>()[i]) << i;
  }
  Tensor z = Tensor::zeros({12345}, DType::BF16, MemoryCategory::Other, kGpu);
  Tensor zb = to_cpu(z);
  for (int64_t i = 0; i < zb.numel(); ++i) ASSERT_EQ(static_cast<const uint16_t*>(zb.raw())[i], 0) << i;
}

// Every pair of F32, BF16 and F16, every bit pattern class, against the CPU: the GPU
// kernel (aligned, vectorised, with a scalar tail), a misaligned view (the scalar
// path), and the staged host↔device conversions.
TEST(TensorOnGpu, ConvertMatchesTheCpuBitwise) {
  LLM_REQUIRE_GPU();
  const DType types[] = {DType::F32, DType::BF16, DType::F16};
  const int64_t n = 1000003;
  uint32_t seed = 1;
  for (DType from : types) {
    const Tensor src = random_bits(n, from, seed++);
    const Tensor g = to_gpu(src);
    for (DType to : types) {
      SCOPED_TRACE(std::string(dtype_name(from)) + " -> " + dtype_name(to));
      Tensor want = Tensor::empty({n}, to, MemoryCategory::Other);
      want.convert_from(src);

      Tensor out = gpu_empty({n}, to);
      out.convert_from(g);  // same device: ops::cuda::convert
      Tensor got = to_cpu(out);
      EXPECT_EQ(first_difference(got, want), -1);

      // Views starting one element in: pointers not 16-byte aligned.
      Tensor out2 = gpu_empty({n}, to);
      out2.flat_view(1, {n - 2}).convert_from(g.flat_view(1, {n - 2}));
      Tensor got2 = to_cpu(out2).flat_view(1, {n - 2});
      EXPECT_EQ(first_difference(got2, want.flat_view(1, {n - 2})), -1);

      // Host → device and device → host with a dtype change.
      Tensor out3 = gpu_empty({n}, to);
      out3.convert_from(src);
      EXPECT_EQ(first_difference(to_cpu(out3), want), -1);
      Tensor host_out = Tensor::empty({n}, to, MemoryCategory::Other);
      host_out.convert_from(g);
      EXPECT_EQ(first_difference(host_out, want), -1);
    }
  }
  // F64 on the host into 16 bits on the GPU: rounded once, as on the CPU.
  Tensor d = Tensor::empty({4096}, DType::F64, MemoryCategory::Other);
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  for (int64_t i = 0; i < d.numel(); ++i) d.data<double>()[i] = normal(rng);
  for (DType to : {DType::BF16, DType::F16, DType::F32}) {
    Tensor want = Tensor::empty({4096}, to, MemoryCategory::Other);
    want.convert_from(d);
    Tensor out = gpu_empty({4096}, to);
    out.convert_from(d);
    EXPECT_EQ(first_difference(to_cpu(out), want), -1) << dtype_name(to);
  }
}

TEST(TensorOnGpu, ConvertRejectsOtherDtypesAndMismatchedSizes) {
  LLM_REQUIRE_GPU();
  Tensor a = gpu_empty({16}, DType::F32), b = gpu_empty({16}, DType::I32), c = gpu_empty({15}, DType::BF16);
  Tensor d = gpu_empty({16}, DType::F64);
  EXPECT_THROW(b.convert_from(a), std::invalid_argument);
  EXPECT_THROW(d.convert_from(a), std::invalid_argument);
  EXPECT_THROW(c.convert_from(a), std::invalid_argument);
  // The kernel itself: operands on the CPU, or of F64, are refused.
  Tensor host = Tensor::empty({16}, DType::BF16, MemoryCategory::Other);
  EXPECT_THROW(ops::cuda::convert(a, host), std::invalid_argument);
  EXPECT_THROW(ops::cuda::convert(a, d), std::invalid_argument);
  cuda::synchronize();
}
