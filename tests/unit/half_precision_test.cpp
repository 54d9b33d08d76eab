// 16-bit storage (BF16, F16) emulated on the CPU: the conversions (exhaustively over all
// 16-bit patterns, and against a rounding reference written in double), Tensor::to /
// convert_from, and every op's "compute in fp32, store in 16 bits" contract: an op on
// 16-bit operands equals, bit for bit, the F32 op on their values with the outputs
// rounded back.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"

using namespace llm;

namespace llm {
void PrintTo(DType t, std::ostream* os) { *os << dtype_name(t); }  // for GoogleTest's messages
}  // namespace llm

namespace {

constexpr MemoryCategory kCat = MemoryCategory::Other;

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t half_bits(float f) { return f16(f).bits; }
uint16_t bf16_bits(float f) { return bf16(f).bits; }

// A tensor of normal(0, scale) values drawn in double, rounded into `dtype`.
Tensor randn(const Shape& shape, DType dtype, uint64_t seed, double scale = 1.0) {
  Tensor t = Tensor::empty(shape, DType::F64, kCat);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = d(rng);
  return t.to(dtype, kCat);
}

Tensor ids(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::I32, kCat);
  for (size_t i = 0; i < v.size(); ++i) t.data<int32_t>()[i] = v[i];
  return t;
}

// Element i of a floating tensor as double.
double value_at(const Tensor& t, int64_t i) {
  return t.to(DType::F64, kCat).data<double>()[i];
}

// Same dtype, shape and bytes (element by element, reporting the first difference).
void expect_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const size_t es = dtype_size(got.dtype());
  const char* g = static_cast<const char*>(got.raw());
  const char* w = static_cast<const char*>(want.raw());
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < got.numel(); ++i)
    if (std::memcmp(g + i * es, w + i * es, es) != 0 && bad++ == 0) first = i;
  if (bad == 0) return;
  std::string detail;
  if (got.dtype() != DType::I32)
    detail = ": got " + std::to_string(value_at(got, first)) + ", want " + std::to_string(value_at(want, first));
  ADD_FAILURE() << what << ": " << bad << " of " << got.numel() << " elements differ, first at " << first
                << detail;
}

// The contract of every op: run `op` on `args` as given, and on a reference copy in
// which each 16-bit tensor is an F32 tensor of the same values (the others cloned).
// Afterwards every argument must equal its reference, rounded to the argument's dtype,
// bit for bit: inputs unchanged, outputs computed in fp32 (from the outputs' current
// values where the op adds into them) and rounded once.
using Args = std::vector<Tensor>;
void expect_fp32_semantics(const std::string& what, Args args, const std::function<void(Args&)>& op) {
  Args ref;
  for (const Tensor& a : args) ref.push_back(is_half_dtype(a.dtype()) ? a.to(DType::F32, kCat) : a.clone(kCat));
  op(ref);
  op(args);
  for (size_t i = 0; i < args.size(); ++i)
    expect_same_bits(args[i], ref[i].to(args[i].dtype(), kCat), what + ", operand " + std::to_string(i));
}

// IEEE half rounding of a finite float, computed independently in double: the nearest
// multiple of the half ulp at x's binade (2^-24 below 2^-14), ties to even, ±inf at
// and beyond 65520. Returns the half's value.
double reference_half_value(float x) {
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 65520.0) return std::copysign(INFINITY, x);
  int e;
  std::frexp(a, &e);  // a = m·2^e, m in [0.5, 1): a's binade is 2^(e-1)
  const int binade = std::max(e - 1, -14);
  const double ulp = std::ldexp(1.0, binade - 10);
  const double q = std::nearbyint(a / ulp);  // default rounding mode: ties to even
  return std::copysign(q * ulp, x);
}

struct DtypeName {
  std::string operator()(const ::testing::TestParamInfo<DType>& info) const { return dtype_name(info.param); }
};

}  // namespace

// ---------------------------------------------------------------------------------------
// Conversions

TEST(HalfConversion, EveryHalfPatternRoundTrips) {
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    f16 h;
    h.bits = static_cast<uint16_t>(b);
    const float f = static_cast<float>(h);
    const f16 back(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(static_cast<float>(back))) << std::hex << b;
      EXPECT_EQ(back.bits & 0x8000u, b & 0x8000u) << std::hex << b;  // sign kept
    } else {
      EXPECT_EQ(back.bits, b) << std::hex << b << " -> " << f;
    }
  }
}

TEST(HalfConversion, KnownValues) {
  EXPECT_EQ(half_bits(1.0f), 0x3C00);
  EXPECT_EQ(half_bits(-2.0f), 0xC000);
  EXPECT_EQ(half_bits(0.0f), 0x0000);
  EXPECT_EQ(half_bits(-0.0f), 0x8000);
  EXPECT_EQ(half_bits(65504.0f), 0x7BFF);              // largest half
  EXPECT_EQ(half_bits(65519.99f), 0x7BFF);             // below the halfway point to 2^16
  EXPECT_EQ(half_bits(65520.0f), 0x7C00);              // halfway: ties to even = inf
  EXPECT_EQ(half_bits(-65520.0f), 0xFC00);
  EXPECT_EQ(half_bits(1e10f), 0x7C00);
  EXPECT_EQ(half_bits(INFINITY), 0x7C00);
  EXPECT_EQ(half_bits(-INFINITY), 0xFC00);
  EXPECT_TRUE(std::isnan(static_cast<float>(f16(NAN))));
  EXPECT_TRUE(std::isnan(static_cast<float>(f16(-NAN))));
  EXPECT_EQ(half_bits(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(half_bits(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(half_bits(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(half_bits(std::ldexp(1.0f, -25)), 0x0000);  // halfway to 2^-24: ties to even (0)
  EXPECT_EQ(half_bits(-std::ldexp(1.0f, -25)), 0x8000);
  EXPECT_EQ(half_bits(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);  // just above: up
  EXPECT_EQ(half_bits(3 * std::ldexp(1.0f, -25)), 0x0002);  // 1.5 ulp: ties to even (2)
  EXPECT_EQ(half_bits(5 * std::ldexp(1.0f, -25)), 0x0002);  // 2.5 ulp: ties to even (2)
  EXPECT_EQ(half_bits(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)), 0x0400);  // rounds up into normals
  EXPECT_EQ(half_bits(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie between 1 and 1+2^-10: even (1)
  EXPECT_EQ(half_bits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie between odd 0x3C01 and 0x3C02
  EXPECT_EQ(half_bits(-(1.0f + 3 * std::ldexp(1.0f, -11))), 0xBC02);
  EXPECT_EQ(half_bits(2047.0f + 0.5f), 0x6800);  // 2047.5 → 2048 (ulp 1 in [1024, 2048): tie to even)
  EXPECT_EQ(half_bits(0.1f), 0x2E66);
  EXPECT_EQ(half_bits(-3.14159265f), 0xC248);
}

// Every 257th float (all exponents, all low-bit patterns) against the double reference.
TEST(HalfConversion, MatchesARoundingReferenceOnAFloatSweep) {
  int64_t bad = 0;
  for (uint64_t u = 0; u <= 0xffffffffu; u += 97) {
    const float x = bits_float(static_cast<uint32_t>(u));
    const uint16_t h = half_bits(x);
    if (std::isnan(x)) {
      bad += !std::isnan(half_to_float(h));
      continue;
    }
    const double want = reference_half_value(x);
    const float got = half_to_float(h);
    if (static_cast<double>(got) != want || std::signbit(got) != std::signbit(x)) {
      if (bad++ < 5) ADD_FAILURE() << "x " << x << " (" << std::hex << u << "): got " << got << ", want " << want;
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(Bf16Conversion, TiesToEvenOverflowAndNaN) {
  EXPECT_EQ(bf16_bits(1.0f), 0x3F80);
  EXPECT_EQ(bf16_bits(1.0f + std::ldexp(1.0f, -8)), 0x3F80);       // tie: even (1)
  EXPECT_EQ(bf16_bits(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);   // tie between odd 0x3F81 and 0x3F82
  EXPECT_EQ(bf16_bits(-(1.0f + std::ldexp(1.0f, -8))), 0xBF80);
  EXPECT_EQ(bf16_bits(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3F81);  // above the tie: up
  EXPECT_EQ(bf16_bits(bits_float(0x7F7F8000u)), 0x7F80);  // halfway from the largest bf16 to 2^128: inf
  EXPECT_EQ(bf16_bits(bits_float(0x7F7F7FFFu)), 0x7F7F);
  EXPECT_EQ(bf16_bits(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(bf16_bits(-INFINITY), 0xFF80);
  EXPECT_EQ(bf16_bits(bits_float(0x00008000u)), 0x0000);  // subnormal tie: even (0)
  EXPECT_EQ(bf16_bits(bits_float(0x00018000u)), 0x0002);  // subnormal tie: even (2)
  EXPECT_TRUE(std::isnan(static_cast<float>(bf16(NAN))));
  EXPECT_TRUE(std::isnan(static_cast<float>(bf16(bits_float(0x7F800001u)))));  // payload only in low bits
}

TEST(Bf16Conversion, EveryBf16PatternRoundTrips) {
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    bf16 v;
    v.bits = static_cast<uint16_t>(b);
    const float f = static_cast<float>(v);
    EXPECT_EQ(float_bits(f), b << 16);
    const bf16 back(f);
    if (std::isnan(f)) EXPECT_TRUE(std::isnan(static_cast<float>(back))) << std::hex << b;
    else EXPECT_EQ(back.bits, b) << std::hex << b;
  }
}

TEST(TensorConvert, ToRoundsEachDtypeAndBack) {
  const std::vector<float> vals = {1.0f, -2.5f, 1.0f + std::ldexp(1.0f, -11), 65519.0f, 1e-6f, 3.0e38f, -0.0f};
  Tensor x = Tensor::empty({static_cast<int64_t>(vals.size())}, DType::F32, kCat);
  for (size_t i = 0; i < vals.size(); ++i) x.data<float>()[i] = vals[i];
  Tensor h = x.to(DType::F16, kCat), b = x.to(DType::BF16, kCat), d = x.to(DType::F64, kCat);
  for (size_t i = 0; i < vals.size(); ++i) {
    EXPECT_EQ(h.data<f16>()[i].bits, half_bits(vals[i])) << i;
    EXPECT_EQ(b.data<bf16>()[i].bits, bf16_bits(vals[i])) << i;
    EXPECT_EQ(d.data<double>()[i], static_cast<double>(vals[i])) << i;
  }
  // Back to F32 is exact; F16 → BF16 rounds the half's value.
  Tensor hf = h.to(DType::F32, kCat), hb = h.to(DType::BF16, kCat);
  for (size_t i = 0; i < vals.size(); ++i) {
    EXPECT_EQ(float_bits(hf.data<float>()[i]), float_bits(static_cast<float>(h.data<f16>()[i]))) << i;
    EXPECT_EQ(hb.data<bf16>()[i].bits, bf16_bits(static_cast<float>(h.data<f16>()[i]))) << i;
  }
  // convert_from into an existing tensor of another shape with the same numel.
  Tensor into = Tensor::zeros({1, static_cast<int64_t>(vals.size())}, DType::BF16, kCat);
  into.convert_from(d);
  expect_same_bits(into.view(b.shape()), b, "convert_from F64 → BF16");
  // Same dtype: a copy (I32 included).
  Tensor t = ids({3, -1, 7}), t2 = t.to(DType::I32, kCat);
  expect_same_bits(t2, t, "I32 copy");
}

TEST(TensorConvert, F64RoundsOnceNotThroughF32) {
  // 1 + 2^-8 + 2^-40 is just above the bf16 tie 1 + 2^-8, but as float it is the tie
  // itself (which would round to 1): the correct bf16 is 1 + 2^-7. Likewise for half.
  Tensor d = Tensor::empty({4}, DType::F64, kCat);
  d.data<double>()[0] = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
  d.data<double>()[1] = -(1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40));
  d.data<double>()[2] = 1e300;   // beyond float: inf
  d.data<double>()[3] = 1e-300;  // below every subnormal: +0
  Tensor b = d.to(DType::BF16, kCat), h = d.to(DType::F16, kCat);
  EXPECT_EQ(b.data<bf16>()[0].bits, 0x3F81);
  EXPECT_EQ(h.data<f16>()[1].bits, 0xBC01);
  EXPECT_EQ(b.data<bf16>()[2].bits, 0x7F80);
  EXPECT_EQ(h.data<f16>()[2].bits, 0x7C00);
  EXPECT_EQ(b.data<bf16>()[3].bits, 0x0000);
  EXPECT_EQ(h.data<f16>()[3].bits, 0x0000);
  // F64 → F32 is the ordinary rounding.
  EXPECT_EQ(d.to(DType::F32, kCat).data<float>()[0], static_cast<float>(d.data<double>()[0]));
}

TEST(TensorConvert, BadConversionsAreRefused) {
  Tensor f = Tensor::zeros({4}, DType::F32, kCat);
  EXPECT_THROW(ids({1, 2, 3, 4}).to(DType::F32, kCat), std::invalid_argument);
  EXPECT_THROW(f.to(DType::I32, kCat), std::invalid_argument);
  Tensor h = Tensor::zeros({5}, DType::BF16, kCat);
  EXPECT_THROW(h.convert_from(f), std::invalid_argument);  // numel differs
  Tensor whole = Tensor::zeros({8}, DType::F32, kCat);
  Tensor view16 = Tensor::empty({8}, DType::BF16, kCat);
  EXPECT_NO_THROW(view16.convert_from(whole));
  EXPECT_THROW(h.copy_from(f), std::invalid_argument);  // copy_from stays same-dtype
}

TEST(TensorConvert, SixteenBitTensorsChargeTwoBytesPerElement) {
  auto& tr = memory_tracker(Device::cpu());
  for (DType dt : {DType::BF16, DType::F16}) {
    const size_t before = tr.current(MemoryCategory::Activations);
    {
      Tensor a = Tensor::zeros({1000, 3}, dt, MemoryCategory::Activations);
      EXPECT_EQ(a.nbytes(), 6000u);
      EXPECT_EQ(tr.current(MemoryCategory::Activations), before + 6000) << dtype_name(dt);
      Tensor f = a.to(DType::F32, MemoryCategory::Activations);
      EXPECT_EQ(tr.current(MemoryCategory::Activations), before + 6000 + 12000) << dtype_name(dt);
    }
    EXPECT_EQ(tr.current(MemoryCategory::Activations), before);
  }
}

// ---------------------------------------------------------------------------------------
// Ops on 16-bit operands equal the F32 ops with rounded outputs (for BF16 and F16).

class HalfOps : public ::testing::TestWithParam<DType> {};
INSTANTIATE_TEST_SUITE_P(Dtypes, HalfOps, ::testing::Values(DType::BF16, DType::F16), DtypeName());

TEST_P(HalfOps, Linear) {
  const DType dt = GetParam();
  const int64_t rows = 7, in = 24, out = 10;
  auto x = randn({rows, in}, dt, 1), w = randn({out, in}, dt, 2, 0.2), y = randn({rows, out}, dt, 3);
  auto dy = randn({rows, out}, dt, 4), dx = randn({rows, in}, dt, 5), dw = randn({out, in}, dt, 6);
  expect_fp32_semantics("linear_forward", {x, w, y}, [](Args& a) { ops::linear_forward(a[0], a[1], a[2]); });
  expect_fp32_semantics("linear_forward accumulate", {x, w, y},
                        [](Args& a) { ops::linear_forward(a[0], a[1], a[2], /*accumulate=*/true); });
  expect_fp32_semantics("linear_backward", {dy, x, w, dx, dw},
                        [](Args& a) { ops::linear_backward(a[0], a[1], a[2], &a[3], a[4]); });
  expect_fp32_semantics("linear_backward without dx", {dy, x, w, dw},
                        [](Args& a) { ops::linear_backward(a[0], a[1], a[2], nullptr, a[3]); });
}

TEST_P(HalfOps, LinearBackwardAddsIntoAnExisting16BitGradient) {
  const DType dt = GetParam();
  const int64_t rows = 5, in = 8, out = 6;
  auto x = randn({rows, in}, dt, 11), w = randn({out, in}, dt, 12), dy = randn({rows, out}, dt, 13);
  Tensor dw = randn({out, in}, dt, 14), dw0 = dw.clone(kCat);
  ops::linear_backward(dy, x, w, nullptr, dw);
  // Reference: dw0 + dyᵀx in F32 from the 16-bit values, rounded once at the end.
  Tensor dwf = dw0.to(DType::F32, kCat);
  ops::linear_backward(dy.to(DType::F32, kCat), x.to(DType::F32, kCat), w.to(DType::F32, kCat), nullptr, dwf);
  expect_same_bits(dw, dwf.to(dt, kCat), "dw");
  // And it did add: a zero gradient gets only dyᵀx.
  Tensor fresh = Tensor::zeros({out, in}, dt, kCat);
  ops::linear_backward(dy, x, w, nullptr, fresh);
  int64_t differ = 0;
  for (int64_t i = 0; i < dw.numel(); ++i) differ += value_at(fresh, i) != value_at(dw, i);
  EXPECT_GT(differ, dw.numel() / 2);
}

TEST_P(HalfOps, Embedding) {
  const DType dt = GetParam();
  const int64_t vocab = 12, dim = 20;
  Tensor tok = ids({3, 0, 11, 3, 7, 3});
  auto table = randn({vocab, dim}, dt, 21), out = randn({6, dim}, dt, 22), dout = randn({6, dim}, dt, 23);
  auto dtable = randn({vocab, dim}, dt, 24);
  expect_fp32_semantics("embedding_forward", {tok, table, out},
                        [](Args& a) { ops::embedding_forward(a[0], a[1], a[2]); });
  expect_fp32_semantics("embedding_backward", {tok, dout, dtable},
                        [](Args& a) { ops::embedding_backward(a[0], a[1], a[2]); });
  // Vocab-parallel part: rows [4, 10) of a 12-row table.
  auto part = randn({6, dim}, dt, 25), dpart = randn({6, dim}, dt, 26);
  expect_fp32_semantics("embedding_forward part", {tok, part, out},
                        [](Args& a) { ops::embedding_forward(a[0], a[1], a[2], 4, 12); });
  expect_fp32_semantics("embedding_backward part", {tok, dout, dpart},
                        [](Args& a) { ops::embedding_backward(a[0], a[1], a[2], 4, 12); });
}

TEST_P(HalfOps, RmsNorm) {
  const DType dt = GetParam();
  const int64_t rows = 9, dim = 40;
  auto x = randn({rows, dim}, dt, 31), w = randn({dim}, dt, 32), y = randn({rows, dim}, dt, 33);
  auto rstd = randn({rows}, dt, 34), dy = randn({rows, dim}, dt, 35), dx = randn({rows, dim}, dt, 36);
  auto dw = randn({dim}, dt, 37);
  expect_fp32_semantics("rmsnorm_forward", {x, w, y, rstd},
                        [](Args& a) { ops::rmsnorm_forward(a[0], a[1], 1e-5, a[2], a[3]); });
  ops::rmsnorm_forward(x, w, 1e-5, y, rstd);  // a real rstd for backward
  expect_fp32_semantics("rmsnorm_backward", {dy, x, w, rstd, dx, dw},
                        [](Args& a) { ops::rmsnorm_backward(a[0], a[1], a[2], a[3], a[4], a[5]); });
}

TEST_P(HalfOps, Rope) {
  const DType dt = GetParam();
  const ops::QkvLayout l{2, 5, 4, 2, 8};
  auto qkv = randn({l.batch * l.seq, l.row_stride()}, dt, 41);
  expect_fp32_semantics("rope_forward", {qkv}, [&](Args& a) { ops::rope_forward(a[0], l, 3, 10000.0); });
  expect_fp32_semantics("rope_backward", {qkv}, [&](Args& a) { ops::rope_backward(a[0], l, 3, 10000.0); });
}

TEST_P(HalfOps, Attention) {
  const DType dt = GetParam();
  const ops::QkvLayout l{2, 13, 4, 2, 16};
  const int64_t rows = l.batch * l.seq, hd = l.heads * l.head_dim;
  auto qkv = randn({rows, l.row_stride()}, dt, 51), out = randn({rows, hd}, dt, 52);
  auto lse = randn({l.batch * l.heads * l.seq}, dt, 53), dout = randn({rows, hd}, dt, 54);
  auto dqkv = randn({rows, l.row_stride()}, dt, 55);
  expect_fp32_semantics("attention_forward", {qkv, out, lse},
                        [&](Args& a) { ops::attention_forward(a[0], l, a[1], a[2]); });
  ops::attention_forward(qkv, l, out, lse);
  expect_fp32_semantics("attention_backward", {dout, qkv, out, lse, dqkv},
                        [&](Args& a) { ops::attention_backward(a[0], a[1], l, a[2], a[3], a[4]); });
  // Decoding: the last 3 of 11 positions against a cache of 16 rows.
  const int64_t tk = 11, tq = 3, gd = l.groups * l.head_dim;
  auto q = randn({tq, hd}, dt, 56), k = randn({16, gd}, dt, 57), v = randn({16, gd}, dt, 58);
  auto o = randn({tq, hd}, dt, 59);
  expect_fp32_semantics("attention_decode", {q, k, v, o}, [&](Args& a) {
    ops::attention_decode(a[0], a[1], a[2], tk, l.heads, l.groups, l.head_dim, a[3]);
  });
}

TEST_P(HalfOps, SwiGlu) {
  const DType dt = GetParam();
  const int64_t rows = 6, F = 36;
  auto gu = randn({rows, 2 * F}, dt, 61, 3.0), out = randn({rows, F}, dt, 62);
  auto dout = randn({rows, F}, dt, 63), dgu = randn({rows, 2 * F}, dt, 64);
  expect_fp32_semantics("swiglu_forward", {gu, out}, [](Args& a) { ops::swiglu_forward(a[0], a[1]); });
  expect_fp32_semantics("swiglu_backward", {dout, gu, dgu},
                        [](Args& a) { ops::swiglu_backward(a[0], a[1], a[2]); });
}

TEST_P(HalfOps, CrossEntropy) {
  const DType dt = GetParam();
  const int64_t rows = 5, V = 300;
  Tensor t = ids({7, -1, 299, 0, 150});
  auto logits = randn({rows, V}, dt, 71, 4.0), loss = randn({rows}, dt, 72), lse = randn({rows}, dt, 73);
  auto dloss = randn({rows}, dt, 74);
  expect_fp32_semantics("cross_entropy_forward", {logits, t, loss, lse},
                        [](Args& a) { ops::cross_entropy_forward(a[0], a[1], a[2], a[3]); });
  ops::cross_entropy_forward(logits, t, loss, lse);
  expect_fp32_semantics("cross_entropy_backward_inplace", {logits, lse, t, dloss},
                        [](Args& a) { ops::cross_entropy_backward_inplace(a[0], a[1], a[2], a[3]); });
  // Vocab-parallel pieces: columns [100, 200) of 300.
  Tensor part = logits.to(DType::F32, kCat);  // a copy to slice columns from
  Tensor cols = Tensor::empty({rows, 100}, DType::F32, kCat);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < 100; ++j) cols.data<float>()[r * 100 + j] = part.data<float>()[r * V + 100 + j];
  Tensor lp = cols.to(dt, kCat), row_max = randn({rows}, dt, 75);
  expect_fp32_semantics("cross_entropy_row_max", {lp, row_max},
                        [](Args& a) { ops::cross_entropy_row_max(a[0], a[1]); });
  ops::cross_entropy_row_max(lp, row_max);
  Tensor stats = Tensor::zeros({2, rows}, DType::F64, kCat);
  expect_fp32_semantics("cross_entropy_partial_sums", {lp, t, row_max, stats},
                        [](Args& a) { ops::cross_entropy_partial_sums(a[0], a[1], 100, 300, a[2], a[3]); });
  expect_fp32_semantics("cross_entropy_backward_inplace part", {lp, lse, t, dloss}, [](Args& a) {
    ops::cross_entropy_backward_inplace(a[0], a[1], a[2], a[3], 100, 300);
  });
}

TEST_P(HalfOps, AddAndAdamW) {
  const DType dt = GetParam();
  const int64_t n = 3000;
  auto y = randn({n}, dt, 81), x = randn({n}, dt, 82);
  expect_fp32_semantics("add_", {y, x}, [](Args& a) { ops::add_(a[0], a[1]); });
  auto p = randn({n}, dt, 83), g = randn({n}, dt, 84, 0.1), m = randn({n}, dt, 85, 0.01);
  Tensor v64 = randn({n}, DType::F64, 86, 0.01);
  for (int64_t i = 0; i < n; ++i) v64.data<double>()[i] = std::fabs(v64.data<double>()[i]);  // a second moment
  Tensor v = v64.to(dt, kCat);
  const ops::AdamWParams hp{1e-3, 0.9, 0.95, 1e-8, 0.1, 3, 0.5};
  expect_fp32_semantics("adamw_step", {p, g, m, v}, [&](Args& a) { ops::adamw_step(a[0], a[1], a[2], a[3], hp); });
}

TEST_P(HalfOps, SumOfSquaresAndAllFiniteReadSixteenBitValues) {
  const DType dt = GetParam();
  Tensor x = randn({70001}, dt, 91, 3.0);  // past the kernels' parallel thresholds
  EXPECT_EQ(ops::sum_of_squares(x), ops::sum_of_squares(x.to(DType::F32, kCat)));
  EXPECT_EQ(ops::sum_of_squares(x), ops::sum_of_squares(x.to(DType::F64, kCat)));
  EXPECT_TRUE(ops::all_finite(x));
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    Tensor y = x.clone(kCat);
    Tensor one = Tensor::empty({1}, DType::F32, kCat);
    one.data<float>()[0] = bad;
    y.flat_view(x.numel() - 1, {1}).convert_from(one);
    EXPECT_FALSE(ops::all_finite(y)) << bad;
  }
  Tensor big = Tensor::empty({1}, DType::F32, kCat);
  big.data<float>()[0] = dt == DType::F16 ? 65504.0f : 3.0e38f;  // the largest finite values stay finite
  EXPECT_TRUE(ops::all_finite(big.to(dt, kCat)));
  // Exact on small integers.
  Tensor ints = Tensor::empty({4}, DType::F32, kCat);
  for (int i = 0; i < 4; ++i) ints.data<float>()[i] = static_cast<float>(i + 1);
  EXPECT_EQ(ops::sum_of_squares(ints.to(dt, kCat)), 30.0);
}

TEST_P(HalfOps, OperandsMayMixF32Bf16AndF16) {
  const DType dt = GetParam(), other = dt == DType::BF16 ? DType::F16 : DType::BF16;
  auto x = randn({6, 16}, dt, 101), w = randn({8, 16}, DType::F32, 102), y = randn({6, 8}, other, 103);
  expect_fp32_semantics("linear_forward mixed", {x, w, y}, [](Args& a) { ops::linear_forward(a[0], a[1], a[2]); });
  auto dy = randn({6, 8}, DType::F32, 104), dx = randn({6, 16}, other, 105), dw = randn({8, 16}, dt, 106);
  expect_fp32_semantics("linear_backward mixed", {dy, x, w, dx, dw},
                        [](Args& a) { ops::linear_backward(a[0], a[1], a[2], &a[3], a[4]); });
}

// ---------------------------------------------------------------------------------------
// Mixed precision as training uses it.

// Not only consistent with F32 but right: a BF16 GEMM is within bf16 precision of the
// F64 product of the unrounded values (a broken conversion would be far off).
TEST(MixedPrecision, Bf16LinearIsWithinBf16ToleranceOfF64) {
  const int64_t rows = 16, in = 64, out = 24;
  Tensor x = randn({rows, in}, DType::F64, 111), w = randn({out, in}, DType::F64, 112);
  Tensor y = Tensor::empty({rows, out}, DType::F64, kCat);
  ops::linear_forward(x, w, y);
  Tensor yb = Tensor::empty({rows, out}, DType::BF16, kCat);
  ops::linear_forward(x.to(DType::BF16, kCat), w.to(DType::BF16, kCat), yb);
  double num = 0, den = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    num = std::max(num, std::fabs(value_at(yb, i) - y.data<double>()[i]));
    den = std::max(den, std::fabs(y.data<double>()[i]));
  }
  EXPECT_LT(num / den, 1e-2);
  EXPECT_GT(num, 0.0);  // and it really was rounded
}

TEST(MixedPrecision, AdamWWithF32MasterWeightsAndBf16Gradients) {
  const int64_t n = 40000;  // several of the kernel's chunks
  Tensor p = randn({n}, DType::F32, 121), g16 = randn({n}, DType::BF16, 122, 0.1);
  Tensor m = Tensor::zeros({n}, DType::F32, kCat), v = Tensor::zeros({n}, DType::F32, kCat);
  Tensor p2 = p.clone(kCat), g32 = g16.to(DType::F32, kCat);
  Tensor m2 = m.clone(kCat), v2 = v.clone(kCat);
  for (int64_t step = 1; step <= 2; ++step) {
    const ops::AdamWParams hp{1e-3, 0.9, 0.95, 1e-8, 0.1, step, 0.7};
    ops::adamw_step(p, g16, m, v, hp);
    ops::adamw_step(p2, g32, m2, v2, hp);
  }
  expect_same_bits(p, p2, "param");
  expect_same_bits(m, m2, "exp_avg");
  expect_same_bits(v, v2, "exp_avg_sq");
  EXPECT_EQ(p.dtype(), DType::F32);
}

TEST(MixedPrecision, TemporariesAreWorkspaceAndFreed) {
  auto& tr = memory_tracker(Device::cpu());
  const int64_t rows = 32, in = 64, out = 48;
  Tensor x = randn({rows, in}, DType::BF16, 131), w = randn({out, in}, DType::BF16, 132);
  Tensor y = Tensor::empty({rows, out}, DType::BF16, kCat);
  const size_t before = tr.current(MemoryCategory::Workspace);
  tr.reset_peaks();
  ops::linear_forward(x, w, y);
  EXPECT_EQ(tr.current(MemoryCategory::Workspace), before);
  EXPECT_GE(tr.peak(MemoryCategory::Workspace), before + 4 * static_cast<size_t>(x.numel() + w.numel() + y.numel()));
  // All-F32 operands need no copies.
  Tensor xf = x.to(DType::F32, kCat), wf = w.to(DType::F32, kCat), yf = y.to(DType::F32, kCat);
  tr.reset_peaks();
  ops::linear_forward(xf, wf, yf);
  EXPECT_EQ(tr.peak(MemoryCategory::Workspace), before);
}

TEST(MixedPrecision, BadDtypesAreClearErrors) {
  Tensor x64 = randn({4, 8}, DType::F64, 141), w16 = randn({3, 8}, DType::BF16, 142);
  Tensor y32 = Tensor::empty({4, 3}, DType::F32, kCat);
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no std::invalid_argument)");
  };
  std::string e = message([&] { ops::linear_forward(x64, w16, y32); });
  EXPECT_NE(e.find("ops::linear_forward: dtype mismatch"), std::string::npos) << e;
  EXPECT_NE(e.find("F64[4, 8]"), std::string::npos) << e;
  Tensor xi = Tensor::zeros({4, 8}, DType::I32, kCat);
  Tensor w32 = randn({3, 8}, DType::F32, 143);
  e = message([&] { ops::linear_forward(xi, w32, y32); });
  EXPECT_NE(e.find("unsupported dtype I32 (F32, F64, BF16 or F16)"), std::string::npos) << e;
  e = message([&] { ops::sum_of_squares(xi); });
  EXPECT_NE(e.find("unsupported dtype I32 (F32, F64, BF16 or F16)"), std::string::npos) << e;
  Tensor a64 = Tensor::zeros({5}, DType::F64, kCat), a16 = Tensor::zeros({5}, DType::F16, kCat);
  e = message([&] { ops::add_(a64, a16); });
  EXPECT_NE(e.find("x and y differ in dtype"), std::string::npos) << e;
}

TEST(MixedPrecision, AFailingOpLeavesSixteenBitOutputsUntouched) {
  Tensor table = randn({4, 8}, DType::BF16, 151), out = randn({3, 8}, DType::BF16, 152);
  Tensor before = out.clone(kCat);
  EXPECT_THROW(ops::embedding_forward(ids({1, 9, 2}), table, out), std::out_of_range);
  expect_same_bits(out, before, "out");
}
