// The CUDA attention kernels (core/cuda/flash_attention.cu) against the CPU op run in
// double: forward (out, lse), backward (all of dq, dk, dv, added into a nonzero dqkv)
// and decode, over batch 2, seq 1 / 37 / 128 / 300 (tails that are not a multiple of
// the 64-row tiles), 4 query heads over 2 or 4 kv groups, head_dim 64 and 128.
//   F32 runs the generic CUDA-core kernels and must agree to 1e-5 (relative norm);
//   BF16 / F16 run the tensor-core flash kernels (inputs rounded to 16 bits first, the
//   reference computed on the rounded values) and must agree to 1e-2; BF16 is also run
//   through the generic kernels (LLM_CUDA_ATTENTION=generic) as a cross-check.
// Outputs that the kernels overwrite start as NaN, so an element left unwritten fails.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/gpu/gpu_test_support.h"

using namespace llm;

namespace {

constexpr MemoryCategory kCat = MemoryCategory::Other;

void sync() { LLM_CUDA_CHECK(cudaDeviceSynchronize()); }

// CPU F64 tensor of normal(0, scale) values.
Tensor randn(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Tensor t = Tensor::empty(shape, DType::F64, kCat);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = d(rng);
  return t;
}

Tensor filled(const Shape& shape, DType dtype, double v) {
  Tensor t = Tensor::empty(shape, DType::F64, kCat);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = v;
  return t.to(dtype, kCat);
}

// Copies to the GPU / back; synchronises the whole device on both sides so that the
// copies never race the kernels on the compute stream.
Tensor to_gpu(const Tensor& cpu) {
  sync();
  Tensor g = Tensor::empty(cpu.shape(), cpu.dtype(), kCat, Device::cuda(0));
  g.copy_from(cpu);
  sync();
  return g;
}
Tensor to_cpu_f64(const Tensor& gpu) {
  sync();
  Tensor c = Tensor::empty(gpu.shape(), gpu.dtype(), kCat);
  c.copy_from(gpu);
  return c.to(DType::F64, kCat);
}

// ‖a − b‖ / max(‖b − base‖, floor·√n) over columns [c0, c1) of [rows, ld] matrices
// (base: what b started from, or null). The floor keeps sections whose exact gradient
// is (nearly) zero, e.g. dq and dk at seq 1, from dividing noise by zero.
double rel_err(const Tensor& a, const Tensor& b, const Tensor* base, int64_t ld, int64_t c0, int64_t c1,
               double floor = 0.0) {
  const double* pa = a.data<double>();
  const double* pb = b.data<double>();
  const double* p0 = base ? base->data<double>() : nullptr;
  const int64_t rows = a.numel() / ld;
  double num = 0, den = 0;
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i = r * ld + c;
      const double d = pa[i] - pb[i], ref = pb[i] - (p0 ? p0[i] : 0.0);
      num += d * d;
      den += ref * ref;
      ++n;
    }
  return std::sqrt(num) / std::max(std::sqrt(den), floor * std::sqrt(static_cast<double>(n)));
}

double rms_section(const Tensor& t, int64_t ld, int64_t c0, int64_t c1) {
  const double* p = t.data<double>();
  const int64_t rows = t.numel() / ld;
  double s = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < c1; ++c) s += p[r * ld + c] * p[r * ld + c];
  const double n = static_cast<double>(rows * (c1 - c0));
  return n > 0 ? std::sqrt(s / n) : 0.0;
}

// Sets LLM_CUDA_ATTENTION for the lifetime of the object.
class ImplOverride {
 public:
  explicit ImplOverride(const char* impl) {
    if (impl) setenv("LLM_CUDA_ATTENTION", impl, 1);
    active_ = impl != nullptr;
  }
  ~ImplOverride() {
    if (active_) unsetenv("LLM_CUDA_ATTENTION");
  }

 private:
  bool active_ = false;
};

struct Case {
  int64_t B, S, H, G, D;
};

struct Variant {
  DType dtype;
  double tol;
  const char* impl;  // LLM_CUDA_ATTENTION, or null for the default
};

// One forward + backward comparison. qkv_offset > 0 places qkv at that element offset
// inside a larger buffer (a base pointer that is not 16-byte aligned).
void check_case(const Case& c, const Variant& v, uint64_t seed, int64_t qkv_offset = 0) {
  SCOPED_TRACE("B=" + std::to_string(c.B) + " S=" + std::to_string(c.S) + " H=" + std::to_string(c.H) +
               " G=" + std::to_string(c.G) + " D=" + std::to_string(c.D) + " dtype=" + dtype_name(v.dtype) +
               (v.impl ? std::string(" impl=") + v.impl : std::string()) +
               (qkv_offset ? " offset=" + std::to_string(qkv_offset) : std::string()));
  ImplOverride impl(v.impl);
  const ops::QkvLayout l{c.B, c.S, c.H, c.G, c.D};
  const int64_t rows = c.B * c.S, ld = l.row_stride(), HD = c.H * c.D, GD = c.G * c.D;
  const DType dt = v.dtype;

  // Inputs rounded to the tested dtype; the reference sees the rounded values.
  const Tensor qkv_dt = randn({rows, ld}, seed).to(dt, kCat);
  const Tensor dout_dt = randn({rows, HD}, seed + 1).to(dt, kCat);
  const Tensor qkv_ref = qkv_dt.to(DType::F64, kCat), dout_ref = dout_dt.to(DType::F64, kCat);

  Tensor out_ref = Tensor::empty({rows, HD}, DType::F64, kCat);
  Tensor lse_ref = Tensor::empty({c.B * c.H * c.S}, DType::F64, kCat);
  ops::attention_forward(qkv_ref, l, out_ref, lse_ref);

  // ---- forward
  Tensor qkv_g;
  if (qkv_offset > 0) {
    Tensor big = to_gpu(filled({rows * ld + qkv_offset}, dt, 0.0));
    qkv_g = big.flat_view(qkv_offset, {rows, ld});
    qkv_g.copy_from(to_gpu(qkv_dt));
    sync();
  } else {
    qkv_g = to_gpu(qkv_dt);
  }
  Tensor out_g = to_gpu(filled({rows, HD}, dt, NAN));
  Tensor lse_g = to_gpu(filled({c.B * c.H * c.S}, DType::F32, NAN));
  ops::attention_forward(qkv_g, l, out_g, lse_g);
  const Tensor out_got = to_cpu_f64(out_g), lse_got = to_cpu_f64(lse_g);
  EXPECT_LT(rel_err(out_got, out_ref, nullptr, HD, 0, HD), v.tol) << "out";
  EXPECT_LT(rel_err(lse_got, lse_ref, nullptr, 1, 0, 1), v.tol) << "lse";

  // ---- backward, from the reference's out and lse (rounded to what the GPU stores) so
  // that both sides differentiate the same thing.
  const Tensor out_in = out_ref.to(dt, kCat), lse_in = lse_ref.to(DType::F32, kCat);
  const Tensor out_in_ref = out_in.to(DType::F64, kCat), lse_in_ref = lse_in.to(DType::F64, kCat);
  Tensor grad_ref = Tensor::zeros({rows, ld}, DType::F64, kCat);
  ops::attention_backward(dout_ref, qkv_ref, l, out_in_ref, lse_in_ref, grad_ref);

  // Starting dqkv: per section (q, k, v) normal with half the gradient's rms (at least
  // 0.05), rounded to dt, so that an overwrite instead of an add fails by ~50%.
  const int64_t bounds[4] = {0, HD, HD + GD, ld};
  Tensor start = randn({rows, ld}, seed + 2);
  {
    double* p = start.data<double>();
    for (int s = 0; s < 3; ++s) {
      const double amp = 0.5 * std::max(rms_section(grad_ref, ld, bounds[s], bounds[s + 1]), 0.1);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t col = bounds[s]; col < bounds[s + 1]; ++col) p[r * ld + col] *= amp;
    }
  }
  const Tensor start_dt = start.to(dt, kCat), start_ref = start_dt.to(DType::F64, kCat);
  Tensor expect = start_ref.clone(kCat);
  {
    double* e = expect.data<double>();
    const double* gr = grad_ref.data<double>();
    for (int64_t i = 0; i < expect.numel(); ++i) e[i] += gr[i];
  }
  Tensor dqkv_g = to_gpu(start_dt);
  ops::attention_backward(to_gpu(dout_dt), qkv_g, l, to_gpu(out_in), to_gpu(lse_in), dqkv_g);
  const Tensor got = to_cpu_f64(dqkv_g);
  const char* names[3] = {"dq", "dk", "dv"};
  for (int s = 0; s < 3; ++s)
    EXPECT_LT(rel_err(got, expect, &start_ref, ld, bounds[s], bounds[s + 1], 0.1), v.tol) << names[s];
}

std::vector<Case> main_cases() {
  std::vector<Case> cs;
  for (int64_t D : {64, 128})
    for (int64_t G : {2, 4})
      for (int64_t S : {1, 37, 128, 300}) cs.push_back({2, S, 4, G, D});
  return cs;
}

void run_all(const Variant& v) {
  uint64_t seed = 1000;
  for (const Case& c : main_cases()) {
    check_case(c, v, seed);
    seed += 10;
  }
}

TEST(GpuAttention, F32GenericMatchesCpu) {
  LLM_REQUIRE_GPU();
  run_all({DType::F32, 1e-5, nullptr});
}

TEST(GpuAttention, Bf16FlashMatchesCpu) {
  LLM_REQUIRE_GPU();
  run_all({DType::BF16, 1e-2, nullptr});
}

TEST(GpuAttention, F16FlashMatchesCpu) {
  LLM_REQUIRE_GPU();
  run_all({DType::F16, 1e-2, nullptr});
}

TEST(GpuAttention, Bf16GenericMatchesCpu) {
  LLM_REQUIRE_GPU();
  run_all({DType::BF16, 1e-2, "generic"});
}

// The flash kernels against the generic ones directly (same inputs, same dtype): both
// should sit within the 16-bit rounding of each other.
TEST(GpuAttention, Bf16FlashMatchesGeneric) {
  LLM_REQUIRE_GPU();
  const ops::QkvLayout l{2, 200, 8, 2, 128};
  const int64_t rows = l.batch * l.seq, ld = l.row_stride(), HD = l.heads * l.head_dim;
  const Tensor qkv = to_gpu(randn({rows, ld}, 7).to(DType::BF16, kCat));
  Tensor out_a = to_gpu(filled({rows, HD}, DType::BF16, NAN)), out_b = to_gpu(filled({rows, HD}, DType::BF16, NAN));
  Tensor lse_a = to_gpu(filled({l.batch * l.heads * l.seq}, DType::F32, NAN));
  Tensor lse_b = to_gpu(filled({l.batch * l.heads * l.seq}, DType::F32, NAN));
  ops::attention_forward(qkv, l, out_a, lse_a);
  {
    ImplOverride generic("generic");
    ops::attention_forward(qkv, l, out_b, lse_b);
  }
  EXPECT_LT(rel_err(to_cpu_f64(out_a), to_cpu_f64(out_b), nullptr, HD, 0, HD), 1e-2);
  EXPECT_LT(rel_err(to_cpu_f64(lse_a), to_cpu_f64(lse_b), nullptr, 1, 0, 1), 1e-4);
}

// Head dims the flash kernels do not take (16-bit falls back to the generic kernels),
// one kv group for all heads, and a qkv base pointer off the 16-byte alignment.
TEST(GpuAttention, OtherHeadDimsAndLayouts) {
  LLM_REQUIRE_GPU();
  check_case({1, 70, 4, 1, 32}, {DType::F32, 1e-5, nullptr}, 50);
  check_case({1, 70, 4, 1, 96}, {DType::BF16, 1e-2, nullptr}, 51);
  check_case({2, 65, 6, 3, 80}, {DType::F16, 1e-2, nullptr}, 52);
  check_case({1, 129, 8, 1, 64}, {DType::BF16, 1e-2, nullptr}, 53);
  check_case({1, 50, 4, 2, 64}, {DType::BF16, 1e-2, nullptr}, 54, /*qkv_offset=*/1);
  check_case({1, 20, 2, 1, 256}, {DType::F32, 1e-5, nullptr}, 55);
}

void check_decode(int64_t tq, int64_t tk, int64_t H, int64_t G, int64_t D, DType dt, double tol, uint64_t seed) {
  SCOPED_TRACE("decode tq=" + std::to_string(tq) + " tk=" + std::to_string(tk) + " D=" + std::to_string(D) +
               " dtype=" + dtype_name(dt));
  const int64_t cap = tk + 8;  // the cache holds more rows than are filled
  const Tensor q = randn({tq, H * D}, seed).to(dt, kCat);
  const Tensor kc = randn({cap, G * D}, seed + 1).to(dt, kCat);
  const Tensor vc = randn({cap, G * D}, seed + 2).to(dt, kCat);
  Tensor ref = Tensor::empty({tq, H * D}, DType::F64, kCat);
  ops::attention_decode(q.to(DType::F64, kCat), kc.to(DType::F64, kCat), vc.to(DType::F64, kCat), tk, H, G, D, ref);
  Tensor out = to_gpu(filled({tq, H * D}, dt, NAN));
  ops::attention_decode(to_gpu(q), to_gpu(kc), to_gpu(vc), tk, H, G, D, out);
  EXPECT_LT(rel_err(to_cpu_f64(out), ref, nullptr, H * D, 0, H * D), tol);
}

TEST(GpuAttention, DecodeMatchesCpu) {
  LLM_REQUIRE_GPU();
  uint64_t seed = 300;
  for (int64_t D : {64, 128})
    for (int64_t tq : {1, 5}) {
      check_decode(tq, 40, 4, 2, D, DType::F32, 1e-5, seed++);
      check_decode(tq, 40, 4, 2, D, DType::BF16, 1e-2, seed++);
    }
  check_decode(3, 3, 4, 4, 64, DType::F32, 1e-5, seed++);     // every cached key is a query
  check_decode(1, 1000, 8, 2, 128, DType::F16, 1e-2, seed++);  // a long cache
}

TEST(GpuAttention, RejectsBadOperands) {
  LLM_REQUIRE_GPU();
  const ops::QkvLayout l{1, 8, 2, 1, 64};
  const int64_t rows = 8, ld = l.row_stride(), HD = 128;
  Tensor qkv = to_gpu(filled({rows, ld}, DType::BF16, 0.5));
  Tensor out = to_gpu(filled({rows, HD}, DType::BF16, 0.0));
  Tensor lse_bad = to_gpu(filled({16}, DType::BF16, 0.0));
  EXPECT_THROW(ops::attention_forward(qkv, l, out, lse_bad), std::invalid_argument);
  Tensor lse = to_gpu(filled({16}, DType::F32, 0.0));
  Tensor out_cpu = filled({rows, HD}, DType::BF16, 0.0);
  EXPECT_THROW(ops::attention_forward(qkv, l, out_cpu, lse), std::invalid_argument);
  Tensor out_f32 = to_gpu(filled({rows, HD}, DType::F32, 0.0));
  EXPECT_THROW(ops::attention_forward(qkv, l, out_f32, lse), std::invalid_argument);
  const ops::QkvLayout bad_groups{1, 8, 3, 2, 64};
  EXPECT_THROW(ops::attention_forward(qkv, bad_groups, out, lse), std::invalid_argument);
  ops::attention_forward(qkv, l, out, lse);  // the good call still runs
  sync();
}

}  // namespace
