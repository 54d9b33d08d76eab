// linear_forward / linear_backward on the GPU (cuBLASLt) against the CPU op run
// in F64 on the same (rounded) inputs: F32 within 1e-5 and BF16/F16 within 1e-2
// relative (Frobenius) error. Outputs that are overwritten start as NaN, so an
// element the GPU does not write fails the comparison.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/gpu/gpu_test_support.h"

using namespace llm;

namespace {

const Device kGpu = Device::cuda(0);

// Uniform values in [-1, 1) rounded to `dtype`, on the CPU.
Tensor random_cpu(const Shape& shape, DType dtype, uint32_t seed) {
  Tensor f = Tensor::empty(shape, DType::F32, MemoryCategory::Other);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < f.numel(); ++i) f.data<float>()[i] = u(rng);
  return f.to(dtype, MemoryCategory::Other);
}

Tensor nan_cpu(const Shape& shape, DType dtype) {
  Tensor f = Tensor::empty(shape, DType::F32, MemoryCategory::Other);
  for (int64_t i = 0; i < f.numel(); ++i) f.data<float>()[i] = std::numeric_limits<float>::quiet_NaN();
  return f.to(dtype, MemoryCategory::Other);
}

Tensor to_gpu(const Tensor& cpu) {
  Tensor t = Tensor::empty(cpu.shape(), cpu.dtype(), MemoryCategory::Activations, kGpu);
  t.copy_from(cpu);
  return t;
}

// The tensor's values as F64 on the CPU (exact: every F32, BF16 and F16 is a double).
Tensor f64(const Tensor& t) {
  Tensor host = t;
  if (!t.device().is_cpu()) {
    host = Tensor::empty(t.shape(), t.dtype(), MemoryCategory::Other);
    host.copy_from(t);
  }
  return host.to(DType::F64, MemoryCategory::Other);
}

// ‖got − want‖ / ‖want‖ (NaN when got has a NaN).
double relative_error(const Tensor& got, const Tensor& want) {
  const Tensor g = f64(got), w = f64(want);
  double num = 0, den = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    const double d = g.data<double>()[i] - w.data<double>()[i];
    num += d * d;
    den += w.data<double>()[i] * w.data<double>()[i];
  }
  return std::sqrt(num / den);
}

double tolerance(DType t) { return t == DType::F32 ? 1e-5 : 1e-2; }

struct GemmShape {
  int64_t rows, in, out;
};

std::string describe(const GemmShape& s, DType t) {
  return std::string(dtype_name(t)) + " rows=" + std::to_string(s.rows) + " in=" + std::to_string(s.in) +
         " out=" + std::to_string(s.out);
}

const std::vector<GemmShape> kShapes = {{37, 96, 80}, {1, 7, 3}, {37, 97, 81}, {512, 1024, 1536}};

void check_forward(const GemmShape& s, DType t, bool accumulate) {
  SCOPED_TRACE(describe(s, t) + (accumulate ? " accumulate" : ""));
  const Tensor x = random_cpu({s.rows, s.in}, t, 1), w = random_cpu({s.out, s.in}, t, 2);
  const Tensor y0 = accumulate ? random_cpu({s.rows, s.out}, t, 3) : nan_cpu({s.rows, s.out}, t);
  Tensor y = to_gpu(y0);
  ops::linear_forward(to_gpu(x), to_gpu(w), y, accumulate);

  Tensor want = accumulate ? f64(y0) : Tensor::empty({s.rows, s.out}, DType::F64, MemoryCategory::Other);
  ops::linear_forward(f64(x), f64(w), want, accumulate);
  const double err = relative_error(y, want);
  EXPECT_LT(err, tolerance(t));  // false for NaN too
}

void check_backward(const GemmShape& s, DType t, bool with_dx) {
  SCOPED_TRACE(describe(s, t) + (with_dx ? " with dx" : " without dx"));
  const Tensor dy = random_cpu({s.rows, s.out}, t, 4), x = random_cpu({s.rows, s.in}, t, 5),
               w = random_cpu({s.out, s.in}, t, 6);
  const Tensor dx0 = random_cpu({s.rows, s.in}, t, 7), dw0 = random_cpu({s.out, s.in}, t, 8);
  Tensor dx = to_gpu(dx0), dw = to_gpu(dw0);
  ops::linear_backward(to_gpu(dy), to_gpu(x), to_gpu(w), with_dx ? &dx : nullptr, dw);

  Tensor want_dx = f64(dx0), want_dw = f64(dw0);
  ops::linear_backward(f64(dy), f64(x), f64(w), with_dx ? &want_dx : nullptr, want_dw);
  EXPECT_LT(relative_error(dw, want_dw), tolerance(t)) << "dw";
  if (with_dx) EXPECT_LT(relative_error(dx, want_dx), tolerance(t)) << "dx";
  else EXPECT_EQ(relative_error(dx, dx0), 0.0) << "dx was written although none was passed";
}

}  // namespace

TEST(GpuGemm, ForwardF32) {
  LLM_REQUIRE_GPU();
  for (const auto& s : kShapes) {
    check_forward(s, DType::F32, false);
    check_forward(s, DType::F32, true);
  }
}

TEST(GpuGemm, ForwardBF16) {
  LLM_REQUIRE_GPU();
  for (const auto& s : kShapes) {
    check_forward(s, DType::BF16, false);
    check_forward(s, DType::BF16, true);
  }
}

TEST(GpuGemm, ForwardF16) {
  LLM_REQUIRE_GPU();
  check_forward(kShapes[0], DType::F16, false);
  check_forward(kShapes[3], DType::F16, true);
}

TEST(GpuGemm, BackwardF32) {
  LLM_REQUIRE_GPU();
  for (const auto& s : kShapes) {
    check_backward(s, DType::F32, true);
    check_backward(s, DType::F32, false);
  }
}

TEST(GpuGemm, BackwardBF16) {
  LLM_REQUIRE_GPU();
  for (const auto& s : kShapes) {
    check_backward(s, DType::BF16, true);
    check_backward(s, DType::BF16, false);
  }
}

TEST(GpuGemm, BackwardF16) {
  LLM_REQUIRE_GPU();
  check_backward(kShapes[0], DType::F16, true);
  check_backward(kShapes[3], DType::F16, false);
}

// Operands that are views at an offset (2-byte aligned): the algorithm is chosen for
// that alignment, not the heuristic's default 256 bytes.
TEST(GpuGemm, MisalignedViews) {
  LLM_REQUIRE_GPU();
  const GemmShape s{37, 96, 80};
  for (DType t : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(t));
    const Tensor x = random_cpu({s.rows, s.in}, t, 11), w = random_cpu({s.out, s.in}, t, 12);
    Tensor xbuf = Tensor::empty({s.rows * s.in + 1}, t, MemoryCategory::Activations, kGpu);
    Tensor ybuf = to_gpu(nan_cpu({s.rows * s.out + 1}, t));
    Tensor xv = xbuf.flat_view(1, {s.rows, s.in}), yv = ybuf.flat_view(1, {s.rows, s.out});
    xv.copy_from(x);
    ops::linear_forward(xv, to_gpu(w), yv);
    Tensor want = Tensor::empty({s.rows, s.out}, DType::F64, MemoryCategory::Other);
    ops::linear_forward(f64(x), f64(w), want);
    EXPECT_LT(relative_error(yv, want), tolerance(t));
  }
}

// The cached plan gives the same bits on a second call, and also runs on another stream
// (with its own workspace).
TEST(GpuGemm, RepeatableAndOnAnotherStream) {
  LLM_REQUIRE_GPU();
  const GemmShape s{512, 1024, 1536};
  const Tensor x = to_gpu(random_cpu({s.rows, s.in}, DType::BF16, 21));
  const Tensor w = to_gpu(random_cpu({s.out, s.in}, DType::BF16, 22));
  Tensor y1 = Tensor::empty({s.rows, s.out}, DType::BF16, MemoryCategory::Activations, kGpu);
  Tensor y2 = Tensor::empty({s.rows, s.out}, DType::BF16, MemoryCategory::Activations, kGpu);
  ops::linear_forward(x, w, y1);
  ops::linear_forward(x, w, y2);
  EXPECT_EQ(relative_error(y2, y1), 0.0);

  cuda::synchronize();
  cuda::Stream other;
  cuda::set_current_stream(other.get());
  Tensor y3;
  try {
    y3 = Tensor::empty({s.rows, s.out}, DType::BF16, MemoryCategory::Activations, kGpu);
    ops::linear_forward(x, w, y3);
    cuda::synchronize();
  } catch (...) {
    cuda::set_current_stream(nullptr);
    throw;
  }
  cuda::set_current_stream(nullptr);
  EXPECT_EQ(relative_error(y3, y1), 0.0);
}

// No rows: dw += dyᵀ·x is an empty sum and keeps dw; an empty `in` with rows left
// over is a shape error, as on the CPU (rows = numel / in is then 0).
TEST(GpuGemm, EmptyOperands) {
  LLM_REQUIRE_GPU();
  const Tensor dy = Tensor::empty({0, 3}, DType::F32, MemoryCategory::Activations, kGpu);
  const Tensor x = Tensor::empty({0, 5}, DType::F32, MemoryCategory::Activations, kGpu);
  const Tensor w = to_gpu(random_cpu({3, 5}, DType::F32, 30));
  const Tensor dw0 = random_cpu({3, 5}, DType::F32, 31);
  Tensor dw = to_gpu(dw0);
  Tensor dx = Tensor::empty({0, 5}, DType::F32, MemoryCategory::Activations, kGpu);
  ops::linear_backward(dy, x, w, &dx, dw);
  EXPECT_EQ(relative_error(dw, dw0), 0.0);
  Tensor y = Tensor::empty({0, 3}, DType::F32, MemoryCategory::Activations, kGpu);
  ops::linear_forward(x, w, y);  // nothing to do
  const Tensor x_empty_in = Tensor::empty({5, 0}, DType::F32, MemoryCategory::Activations, kGpu);
  const Tensor w_empty_in = Tensor::empty({3, 0}, DType::F32, MemoryCategory::Activations, kGpu);
  Tensor y5 = Tensor::empty({5, 3}, DType::F32, MemoryCategory::Activations, kGpu);
  EXPECT_THROW(ops::linear_forward(x_empty_in, w_empty_in, y5), std::invalid_argument);
  cuda::synchronize();
}

TEST(GpuGemm, RejectsMismatchedOperands) {
  LLM_REQUIRE_GPU();
  Tensor x = to_gpu(random_cpu({4, 8}, DType::BF16, 41));
  Tensor w = to_gpu(random_cpu({6, 8}, DType::BF16, 42));
  Tensor y = Tensor::empty({4, 6}, DType::BF16, MemoryCategory::Activations, kGpu);
  Tensor y_f32 = Tensor::empty({4, 6}, DType::F32, MemoryCategory::Activations, kGpu);
  Tensor y_small = Tensor::empty({4, 5}, DType::BF16, MemoryCategory::Activations, kGpu);
  Tensor w_cpu = random_cpu({6, 8}, DType::BF16, 43);
  Tensor x_f64 = Tensor::empty({4, 8}, DType::F64, MemoryCategory::Activations, kGpu);
  Tensor w_f64 = Tensor::empty({6, 8}, DType::F64, MemoryCategory::Activations, kGpu);
  Tensor y_f64 = Tensor::empty({4, 6}, DType::F64, MemoryCategory::Activations, kGpu);
  EXPECT_THROW(ops::linear_forward(x, w, y_f32), std::invalid_argument);
  EXPECT_THROW(ops::linear_forward(x, w, y_small), std::invalid_argument);
  EXPECT_THROW(ops::linear_forward(x, w_cpu, y), std::invalid_argument);
  EXPECT_THROW(ops::linear_forward(x_f64, w_f64, y_f64), std::invalid_argument);
  Tensor dw = Tensor::empty({6, 8}, DType::BF16, MemoryCategory::Gradients, kGpu);
  Tensor dx_wrong = Tensor::empty({4, 7}, DType::BF16, MemoryCategory::Gradients, kGpu);
  EXPECT_THROW(ops::linear_backward(y, x, w, &dx_wrong, dw), std::invalid_argument);
  EXPECT_THROW(ops::linear_backward(y_f32, x, w, nullptr, dw), std::invalid_argument);
  try {
    ops::linear_forward(x, w, y_f32);
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("linear_forward"), std::string::npos) << msg;
    EXPECT_NE(msg.find("y"), std::string::npos) << msg;
  }
}
