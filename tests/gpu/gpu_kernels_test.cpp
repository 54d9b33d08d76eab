// The fused CUDA kernels (core/cuda/{elementwise,embedding,rmsnorm,rope,swiglu,
// cross_entropy,adamw,grad_norm}.cu) through the op interface, against the CPU
// kernels run in double on the same (rounded) inputs:
//   F32:       ‖gpu − ref‖/‖ref‖ ≤ 1e-5
//   BF16, F16: ≤ 1e-2 (inputs rounded to the dtype first, the reference computed
//              from the rounded values; the outputs carry one rounding).
// Outputs that an op overwrites start as NaN, so an element it fails to write
// shows up. Sizes include odd ones (scalar paths, vector tails) and misaligned
// views (scalar heads). Each test skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
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

const Device kGpu = Device::cuda(0);
constexpr MemoryCategory kCat = MemoryCategory::Other;
const double kNaN = std::numeric_limits<double>::quiet_NaN();

// Copies go through the legacy stream today and the compute stream later: wait
// for everything around them.
void sync() { LLM_CUDA_CHECK(cudaDeviceSynchronize()); }

Tensor random64(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Tensor t = Tensor::empty(shape, DType::F64, kCat);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

Tensor full64(const Shape& shape, double v) {
  Tensor t = Tensor::empty(shape, DType::F64, kCat);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<double>()[i] = v;
  return t;
}

// The values a tensor of dtype dt holds, as F64.
Tensor rounded(const Tensor& x64, DType dt) { return x64.to(dt, kCat).to(DType::F64, kCat); }

// x64 rounded to dt, on the GPU.
Tensor to_gpu(const Tensor& x64, DType dt) {
  Tensor h = x64.to(dt, kCat);
  Tensor d = Tensor::empty(h.shape(), dt, kCat, kGpu);
  sync();
  d.copy_from(h);
  sync();
  return d;
}

Tensor ids_gpu(const std::vector<int32_t>& ids) {
  Tensor h = Tensor::empty({static_cast<int64_t>(ids.size())}, DType::I32, kCat);
  if (!ids.empty()) std::memcpy(h.raw(), ids.data(), ids.size() * sizeof(int32_t));
  Tensor d = Tensor::empty(h.shape(), DType::I32, kCat, kGpu);
  d.copy_from(h);
  sync();
  return d;
}

Tensor ids_cpu(const std::vector<int32_t>& ids) {
  Tensor h = Tensor::empty({static_cast<int64_t>(ids.size())}, DType::I32, kCat);
  if (!ids.empty()) std::memcpy(h.raw(), ids.data(), ids.size() * sizeof(int32_t));
  return h;
}

// A GPU tensor of NaNs (for outputs that must be written).
Tensor poisoned(const Shape& shape, DType dt) { return to_gpu(full64(shape, kNaN), dt); }

// The GPU tensor's values on the CPU (same dtype).
Tensor to_host(const Tensor& d) {
  Tensor h = Tensor::empty(d.shape(), d.dtype(), kCat);
  sync();
  h.copy_from(d);
  sync();
  return h;
}

Tensor to_cpu64(const Tensor& d) {
  Tensor h = to_host(d);
  return h.dtype() == DType::F64 ? h : h.to(DType::F64, kCat);
}

// ‖a − ref‖ / ‖ref‖ (‖a − ref‖ when ref is 0); infinity when a holds a NaN or inf.
double rel_err(const Tensor& a, const Tensor& ref) {
  EXPECT_EQ(a.numel(), ref.numel());
  const double* x = a.data<double>();
  const double* r = ref.data<double>();
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (!std::isfinite(x[i]) && std::isfinite(r[i])) return std::numeric_limits<double>::infinity();
    if (std::isfinite(r[i])) {
      num += (x[i] - r[i]) * (x[i] - r[i]);
      den += r[i] * r[i];
    }
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double tol(DType dt) { return dt == DType::F32 ? 1e-5 : 1e-2; }

// Same as expect_close for a GPU result against an F64 reference.
#define EXPECT_CLOSE(gpu, ref, tolerance) EXPECT_LE(rel_err(to_cpu64(gpu), (ref)), (tolerance)) << #gpu

const std::vector<DType> kDtypes = {DType::F32, DType::BF16, DType::F16};

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  Tensor x = to_host(a), y = to_host(b);
  return x.nbytes() == y.nbytes() && std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
}

// ---------------------------------------------------------------------------

TEST(GpuKernels, AddInPlace) {
  LLM_REQUIRE_GPU();
  for (DType dt : kDtypes) {
    for (int64_t n : {1, 7, 1001, 40000}) {
      // Views at element offsets 0/0 (aligned), 3/3 (same misalignment), 1/2 (different).
      for (auto [oy, ox] : {std::pair<int64_t, int64_t>{0, 0}, {3, 3}, {1, 2}}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n) + " offsets " + std::to_string(oy) +
                     "/" + std::to_string(ox));
        const Tensor y64 = rounded(random64({n + 4}, 1 + n), dt), x64 = rounded(random64({n + 4}, 2 + n), dt);
        Tensor y = to_gpu(y64, dt), x = to_gpu(x64, dt);
        Tensor yv = y.flat_view(oy, {n});
        ops::add_(yv, x.flat_view(ox, {n}));
        Tensor ref = y64.clone(kCat);
        Tensor rv = ref.flat_view(oy, {n});
        ops::add_(rv, x64.flat_view(ox, {n}));
        EXPECT_CLOSE(y, ref, tol(dt));
        // Elements outside the view are untouched.
        Tensor got = to_cpu64(y);
        for (int64_t i = 0; i < n + 4; ++i)
          if (i < oy || i >= oy + n) {
            EXPECT_EQ(got.data<double>()[i], y64.data<double>()[i]) << i;
          }
      }
    }
  }
}

TEST(GpuKernels, EmbeddingForwardBackward) {
  LLM_REQUIRE_GPU();
  const int64_t vocab = 50;
  std::mt19937 rng(7);
  std::vector<int32_t> tokens(300);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % 12 == 0 ? 3 : rng() % vocab);  // id 3 repeats a lot
  const int64_t n = static_cast<int64_t>(tokens.size());
  const Tensor tok_gpu = ids_gpu(tokens), tok_cpu = ids_cpu(tokens);
  for (DType dt : kDtypes) {
    for (int64_t dim : {37, 64, 264}) {
      // Whole table, and the vocab-parallel part [20, 35) of 50 rows.
      for (auto [row_begin, rows] : {std::pair<int64_t, int64_t>{0, vocab}, {20, 15}}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " dim=" + std::to_string(dim) + " rows [" +
                     std::to_string(row_begin) + ", +" + std::to_string(rows) + ")");
        const int64_t total = row_begin == 0 ? -1 : vocab;
        const Tensor table64 = rounded(random64({rows, dim}, 11 + dim), dt);
        Tensor out = poisoned({n, dim}, dt);
        ops::embedding_forward(tok_gpu, to_gpu(table64, dt), out, row_begin, total);
        Tensor ref = Tensor::empty({n, dim}, DType::F64, kCat);
        ops::embedding_forward(tok_cpu, table64, ref, row_begin, total);
        EXPECT_CLOSE(out, ref, 0.0);  // a copy: exact

        const Tensor dout64 = rounded(random64({n, dim}, 13 + dim), dt);
        const Tensor dtable0 = rounded(random64({rows, dim}, 17 + dim), dt);
        Tensor dtable = to_gpu(dtable0, dt);
        const Tensor dout = to_gpu(dout64, dt);
        ops::embedding_backward(tok_gpu, dout, dtable, row_begin, total);
        Tensor dref = dtable0.clone(kCat);
        ops::embedding_backward(tok_cpu, dout64, dref, row_begin, total);
        EXPECT_CLOSE(dtable, dref, tol(dt));
        // Deterministic: the same call from the same start gives the same bits.
        Tensor again = to_gpu(dtable0, dt);
        ops::embedding_backward(tok_gpu, dout, again, row_begin, total);
        EXPECT_TRUE(bitwise_equal(dtable, again));
      }
    }
  }
}

TEST(GpuKernels, EmbeddingInvalidIdGivesNaNRow) {
  LLM_REQUIRE_GPU();
  const Tensor tok = ids_gpu({1, 9, -1, 2});  // 9 and −1 are outside a 5-row vocabulary
  const Tensor table = to_gpu(random64({5, 16}, 3), DType::F32);
  Tensor out = to_gpu(full64({4, 16}, 0.0), DType::F32);
  ops::embedding_forward(tok, table, out);
  const Tensor got = to_cpu64(out);
  for (int64_t c = 0; c < 16; ++c) {
    EXPECT_FALSE(std::isnan(got.data<double>()[0 * 16 + c]));
    EXPECT_TRUE(std::isnan(got.data<double>()[1 * 16 + c]));
    EXPECT_TRUE(std::isnan(got.data<double>()[2 * 16 + c]));
    EXPECT_FALSE(std::isnan(got.data<double>()[3 * 16 + c]));
  }
  // The backward skips them (and reads nothing outside the table).
  Tensor dtable = to_gpu(full64({5, 16}, 0.0), DType::F32);
  ops::embedding_backward(tok, to_gpu(full64({4, 16}, 1.0), DType::F32), dtable);
  const Tensor d = to_cpu64(dtable);
  for (int64_t r = 0; r < 5; ++r) EXPECT_EQ(d.data<double>()[r * 16], (r == 1 || r == 2) ? 1.0 : 0.0) << r;
}

TEST(GpuKernels, RmsNormForwardBackward) {
  LLM_REQUIRE_GPU();
  const double eps = 1e-5;
  for (DType dt : kDtypes) {
    for (int64_t dim : {37, 64, 2048, 3000, 5000}) {  // F32 3000: backward spills dw; 5000: forward re-reads
      const int64_t rows = 37;
      SCOPED_TRACE(std::string(dtype_name(dt)) + " dim=" + std::to_string(dim));
      const Tensor x64 = rounded(random64({rows, dim}, 21 + dim, -2, 2), dt);
      const Tensor w64 = rounded(random64({dim}, 22 + dim, 0.5, 1.5), dt);
      const Tensor x = to_gpu(x64, dt), w = to_gpu(w64, dt);
      Tensor y = poisoned({rows, dim}, dt), rstd = poisoned({rows}, DType::F32);
      ops::rmsnorm_forward(x, w, eps, y, rstd);
      Tensor yref = Tensor::empty({rows, dim}, DType::F64, kCat), rref = Tensor::empty({rows}, DType::F64, kCat);
      ops::rmsnorm_forward(x64, w64, eps, yref, rref);
      EXPECT_CLOSE(y, yref, tol(dt));
      EXPECT_CLOSE(rstd, rref, 1e-5);

      // Backward adds into dx and dw; the reference takes the GPU's rstd (fp32 statistics).
      const Tensor dy64 = rounded(random64({rows, dim}, 23 + dim), dt);
      const Tensor dx0 = rounded(random64({rows, dim}, 24 + dim), dt), dw0 = rounded(random64({dim}, 25 + dim), dt);
      Tensor dx = to_gpu(dx0, dt), dw = to_gpu(dw0, dt);
      ops::rmsnorm_backward(to_gpu(dy64, dt), x, w, rstd, dx, dw);
      Tensor dxref = dx0.clone(kCat), dwref = dw0.clone(kCat);
      ops::rmsnorm_backward(dy64, x64, w64, to_cpu64(rstd), dxref, dwref);
      EXPECT_CLOSE(dx, dxref, tol(dt));
      EXPECT_CLOSE(dw, dwref, tol(dt));
      // dw (a cross-row reduction) is deterministic.
      Tensor dx2 = to_gpu(dx0, dt), dw2 = to_gpu(dw0, dt);
      ops::rmsnorm_backward(to_gpu(dy64, dt), x, w, rstd, dx2, dw2);
      EXPECT_TRUE(bitwise_equal(dw, dw2));
      EXPECT_TRUE(bitwise_equal(dx, dx2));
    }
  }
}

TEST(GpuKernels, RmsNormBackwardManyRows) {
  LLM_REQUIRE_GPU();
  // More rows than the backward's chunk cap (1024 chunks of 16): chunks of several rows.
  const int64_t rows = 20000, dim = 24;
  const Tensor x64 = rounded(random64({rows, dim}, 31), DType::F32), w64 = random64({dim}, 32, 0.5, 1.5);
  const Tensor dy64 = rounded(random64({rows, dim}, 33), DType::F32);
  const Tensor x = to_gpu(x64, DType::F32), w = to_gpu(w64, DType::F32);
  Tensor y = poisoned({rows, dim}, DType::F32), rstd = poisoned({rows}, DType::F32);
  ops::rmsnorm_forward(x, w, 1e-6, y, rstd);
  Tensor dx = to_gpu(full64({rows, dim}, 0.0), DType::F32), dw = to_gpu(full64({dim}, 0.0), DType::F32);
  ops::rmsnorm_backward(to_gpu(dy64, DType::F32), x, w, rstd, dx, dw);
  Tensor dxref = full64({rows, dim}, 0.0), dwref = full64({dim}, 0.0);
  ops::rmsnorm_backward(dy64, x64, rounded(w64, DType::F32), to_cpu64(rstd), dxref, dwref);
  EXPECT_CLOSE(dx, dxref, 1e-5);
  EXPECT_CLOSE(dw, dwref, 1e-5);
}

TEST(GpuKernels, AddRmsNormForward) {
  LLM_REQUIRE_GPU();
  const double eps = 1e-5;
  for (DType dt : kDtypes) {
    for (int64_t dim : {37, 128}) {
      for (bool in_place : {false, true}) {
        const int64_t rows = 19;
        SCOPED_TRACE(std::string(dtype_name(dt)) + " dim=" + std::to_string(dim) + (in_place ? " h = x" : ""));
        const Tensor x64 = rounded(random64({rows, dim}, 41 + dim), dt);
        const Tensor r64 = rounded(random64({rows, dim}, 42 + dim), dt);
        const Tensor w64 = rounded(random64({dim}, 43 + dim, 0.5, 1.5), dt);
        Tensor x = to_gpu(x64, dt);
        Tensor h = in_place ? x : poisoned({rows, dim}, dt);
        Tensor y = poisoned({rows, dim}, dt), rstd = poisoned({rows}, DType::F32);
        ops::add_rmsnorm_forward(x, to_gpu(r64, dt), to_gpu(w64, dt), eps, h, y, rstd);
        // The reference: h = x + residual rounded to dt, then the norm of the rounded h.
        Tensor href = x64.clone(kCat);
        ops::add_(href, r64);
        href = rounded(href, dt);
        Tensor yref = Tensor::empty({rows, dim}, DType::F64, kCat), rref = Tensor::empty({rows}, DType::F64, kCat);
        ops::rmsnorm_forward(href, w64, eps, yref, rref);
        EXPECT_CLOSE(h, href, dt == DType::F32 ? 1e-6 : 0.0);  // h is exactly the rounded sum
        EXPECT_CLOSE(y, yref, tol(dt));
        EXPECT_CLOSE(rstd, rref, 1e-5);
        // The fused kernel equals the two-pass op on the GPU: add_, then rmsnorm_forward.
        Tensor h2 = to_gpu(x64, dt);
        ops::add_(h2, to_gpu(r64, dt));
        Tensor y2 = poisoned({rows, dim}, dt), rstd2 = poisoned({rows}, DType::F32);
        ops::rmsnorm_forward(h2, to_gpu(w64, dt), eps, y2, rstd2);
        EXPECT_TRUE(bitwise_equal(h, h2));
        EXPECT_TRUE(bitwise_equal(y, y2));
        EXPECT_TRUE(bitwise_equal(rstd, rstd2));
      }
    }
  }
}

TEST(GpuKernels, RopeForwardBackward) {
  LLM_REQUIRE_GPU();
  for (DType dt : kDtypes) {
    for (int64_t head_dim : {6, 16, 128}) {  // half 3: scalar path; 8 and 64: vectors
      ops::QkvLayout l{2, 5, 4, 2, head_dim};
      const int64_t rows = l.batch * l.seq, ld = l.row_stride();
      const int64_t pos_offset = 3;
      const double theta = 10000.0;
      SCOPED_TRACE(std::string(dtype_name(dt)) + " head_dim=" + std::to_string(head_dim));
      const Tensor qkv64 = rounded(random64({rows, ld}, 51 + head_dim), dt);
      Tensor qkv = to_gpu(qkv64, dt);
      ops::rope_forward(qkv, l, pos_offset, theta);
      Tensor ref = qkv64.clone(kCat);
      ops::rope_forward(ref, l, pos_offset, theta);
      EXPECT_CLOSE(qkv, ref, tol(dt));
      // v is untouched.
      const Tensor got = to_cpu64(qkv);
      const int64_t v0 = (l.heads + l.groups) * head_dim;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = v0; c < ld; ++c)
          ASSERT_EQ(got.data<double>()[r * ld + c], qkv64.data<double>()[r * ld + c]);

      // Backward: the transposed rotation, in place (overwrite).
      const Tensor d64 = rounded(random64({rows, ld}, 52 + head_dim), dt);
      Tensor d = to_gpu(d64, dt);
      ops::rope_backward(d, l, pos_offset, theta);
      Tensor dref = d64.clone(kCat);
      ops::rope_backward(dref, l, pos_offset, theta);
      EXPECT_CLOSE(d, dref, tol(dt));
    }
  }
}

TEST(GpuKernels, RopeLargePositionsF32) {
  LLM_REQUIRE_GPU();
  // Angles in double as on the CPU: at position ~10^5 fp32 angles would be off by ~1e-2.
  ops::QkvLayout l{1, 3, 2, 1, 64};
  const Tensor x64 = rounded(random64({3, l.row_stride()}, 61), DType::F32);
  Tensor x = to_gpu(x64, DType::F32);
  ops::rope_forward(x, l, 100000, 500000.0);
  Tensor ref = x64.clone(kCat);
  ops::rope_forward(ref, l, 100000, 500000.0);
  EXPECT_CLOSE(x, ref, 1e-6);
}

TEST(GpuKernels, SwiGluForwardBackward) {
  LLM_REQUIRE_GPU();
  for (DType dt : kDtypes) {
    for (int64_t F : {37, 64, 5632 / 8}) {
      const int64_t rows = 13;
      SCOPED_TRACE(std::string(dtype_name(dt)) + " F=" + std::to_string(F));
      const Tensor gu64 = rounded(random64({rows, 2 * F}, 71 + F, -6, 6), dt);
      const Tensor gu = to_gpu(gu64, dt);
      Tensor out = poisoned({rows, F}, dt);
      ops::swiglu_forward(gu, out);
      Tensor ref = Tensor::empty({rows, F}, DType::F64, kCat);
      ops::swiglu_forward(gu64, ref);
      EXPECT_CLOSE(out, ref, tol(dt));

      const Tensor dout64 = rounded(random64({rows, F}, 72 + F), dt);
      const Tensor dgu0 = rounded(random64({rows, 2 * F}, 73 + F), dt);
      Tensor dgu = to_gpu(dgu0, dt);
      ops::swiglu_backward(to_gpu(dout64, dt), gu, dgu);
      Tensor dref = dgu0.clone(kCat);
      ops::swiglu_backward(dout64, gu64, dref);
      EXPECT_CLOSE(dgu, dref, tol(dt));
    }
  }
}

// Targets over [0, V) with some ignored (−1) rows.
std::vector<int32_t> random_targets(int64_t rows, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(rows);
  for (auto& x : t) x = rng() % 5 == 0 ? -1 : static_cast<int32_t>(rng() % V);
  t[0] = 0;
  t[rows - 1] = static_cast<int32_t>(V - 1);
  return t;
}

// Columns [c0, c1) of a [rows, V] F64 tensor.
Tensor columns(const Tensor& x, int64_t c0, int64_t c1) {
  const int64_t rows = x.size(0), V = x.size(1);
  Tensor out = Tensor::empty({rows, c1 - c0}, DType::F64, kCat);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < c1; ++c) out.data<double>()[r * (c1 - c0) + c - c0] = x.data<double>()[r * V + c];
  return out;
}

TEST(GpuKernels, CrossEntropyForwardBackward) {
  LLM_REQUIRE_GPU();
  for (DType dt : kDtypes) {
    for (int64_t V : {37, 64, 1000, 4099}) {
      const int64_t rows = 23;
      SCOPED_TRACE(std::string(dtype_name(dt)) + " V=" + std::to_string(V));
      const std::vector<int32_t> targets = random_targets(rows, V, 81 + V);
      const Tensor tg = ids_gpu(targets), tc = ids_cpu(targets);
      const Tensor logits64 = rounded(random64({rows, V}, 82 + V, -8, 8), dt);
      const Tensor logits = to_gpu(logits64, dt);
      Tensor loss = poisoned({rows}, DType::F32), lse = poisoned({rows}, DType::F32);
      ops::cross_entropy_forward(logits, tg, loss, lse);
      Tensor lref = Tensor::empty({rows}, DType::F64, kCat), sref = Tensor::empty({rows}, DType::F64, kCat);
      ops::cross_entropy_forward(logits64, tc, lref, sref);
      EXPECT_CLOSE(lse, sref, 1e-6);
      EXPECT_CLOSE(loss, lref, 1e-5);
      const Tensor lh = to_cpu64(loss);
      for (int64_t r = 0; r < rows; ++r)
        if (targets[r] < 0) {
          EXPECT_EQ(lh.data<double>()[r], 0.0);
        }

      // Backward in place, with the GPU's lse; dloss = 1/rows as for a mean loss.
      const Tensor dloss64 = full64({rows}, 1.0 / rows);
      Tensor d = to_gpu(logits64, dt);
      ops::cross_entropy_backward_inplace(d, lse, tg, to_gpu(dloss64, DType::F32));
      Tensor dref = logits64.clone(kCat);
      ops::cross_entropy_backward_inplace(dref, to_cpu64(lse), tc, dloss64);
      EXPECT_CLOSE(d, dref, tol(dt));

      // Vocab-parallel: two parts [0, V1) and [V1, V), the first a multiple of 8 wide.
      const int64_t V1 = (V / 2 + 7) / 8 * 8;
      Tensor max_ref = Tensor::empty({rows}, DType::F64, kCat);
      ops::cross_entropy_row_max(logits64, max_ref);
      double sum_exp_ref[64] = {}, target_ref[64] = {};
      Tensor sum_gpu = full64({rows}, 0.0), tgt_gpu = full64({rows}, 0.0);
      for (auto [c0, c1] : {std::pair<int64_t, int64_t>{0, V1}, {V1, V}}) {
        const Tensor part64 = columns(logits64, c0, c1);
        const Tensor part = to_gpu(part64, dt);
        Tensor row_max = poisoned({rows}, DType::F32);
        ops::cross_entropy_row_max(part, row_max);
        Tensor mref = Tensor::empty({rows}, DType::F64, kCat);
        ops::cross_entropy_row_max(part64, mref);
        EXPECT_CLOSE(row_max, mref, 0.0);  // the max of the values: exact
        // Partial sums against the global maxima.
        Tensor stats = poisoned({2, rows}, DType::F64);
        ops::cross_entropy_partial_sums(part, tg, c0, V, to_gpu(max_ref, DType::F32), stats);
        Tensor stats_ref = Tensor::empty({2, rows}, DType::F64, kCat);
        ops::cross_entropy_partial_sums(part64, tc, c0, V, rounded(max_ref, DType::F32), stats_ref);
        EXPECT_CLOSE(stats, stats_ref, 1e-5);
        const Tensor sh = to_cpu64(stats);
        for (int64_t r = 0; r < rows; ++r) {
          sum_exp_ref[r] += sh.data<double>()[r];
          target_ref[r] += sh.data<double>()[rows + r];
        }
        // The part's backward with the full rows' lse equals those columns of the whole backward.
        Tensor dpart = to_gpu(part64, dt);
        ops::cross_entropy_backward_inplace(dpart, lse, tg, to_gpu(dloss64, DType::F32), c0, V);
        EXPECT_CLOSE(dpart, columns(dref, c0, c1), tol(dt));
      }
      // The combined parts give the forward's lse and loss.
      const Tensor lse_h = to_cpu64(lse), loss_h = to_cpu64(loss);
      for (int64_t r = 0; r < rows; ++r) {
        const double m = max_ref.data<double>()[r];
        const double l = m + std::log(sum_exp_ref[r]);
        EXPECT_NEAR(l, lse_h.data<double>()[r], 1e-5 * std::abs(l) + 1e-6) << r;
        if (targets[r] >= 0) {
          EXPECT_NEAR(l - target_ref[r], loss_h.data<double>()[r], 1e-4) << r;
        }
      }
    }
  }
}

TEST(GpuKernels, CrossEntropyInvalidTargetGivesNaN) {
  LLM_REQUIRE_GPU();
  const int64_t rows = 3, V = 16;
  const Tensor tg = ids_gpu({2, 16, -2});  // 16 and −2 are invalid (the CPU throws)
  const Tensor logits = to_gpu(random64({rows, V}, 91), DType::F32);
  Tensor loss = poisoned({rows}, DType::F32), lse = poisoned({rows}, DType::F32);
  ops::cross_entropy_forward(logits, tg, loss, lse);
  const Tensor l = to_cpu64(loss);
  EXPECT_TRUE(std::isfinite(l.data<double>()[0]));
  EXPECT_TRUE(std::isnan(l.data<double>()[1]));
  EXPECT_TRUE(std::isnan(l.data<double>()[2]));
  Tensor d = to_gpu(random64({rows, V}, 91), DType::F32);
  ops::cross_entropy_backward_inplace(d, lse, tg, to_gpu(full64({rows}, 1.0), DType::F32));
  const Tensor dh = to_cpu64(d);
  EXPECT_TRUE(std::isfinite(dh.data<double>()[0]));
  EXPECT_TRUE(std::isnan(dh.data<double>()[V]));
  EXPECT_TRUE(std::isnan(dh.data<double>()[2 * V]));
}

// AdamW over three segments of flat buffers at odd offsets and sizes, three steps,
// against the CPU's adamw_step in double on each segment.
void check_adamw(DType grad_dtype, DType copy_dtype, bool multi) {
  const int64_t total = 3000;
  const std::vector<std::pair<int64_t, int64_t>> segs = {{0, 1001}, {1001, 7}, {1008, 1992}};
  const std::vector<double> decays = {0.1, 0.0, 0.05};
  const Tensor p64 = rounded(random64({total}, 101, -0.1, 0.1), DType::F32);
  Tensor m64 = full64({total}, 0.0), v64 = full64({total}, 0.0), ref = p64.clone(kCat);
  Tensor p = to_gpu(p64, DType::F32), m = to_gpu(m64, DType::F32), v = to_gpu(v64, DType::F32);
  Tensor copy = poisoned({total}, copy_dtype);
  ops::AdamWParams ap{1e-2, 0.9, 0.95, 1e-8, 0.0, 1, 0.5};
  for (int64_t step = 1; step <= 3; ++step) {
    ap.step = step;
    const Tensor g64 = rounded(random64({total}, 200 + step), grad_dtype);
    const Tensor g = to_gpu(g64, grad_dtype);
    std::vector<ops::AdamWSegmentTensors> st;
    for (size_t k = 0; k < segs.size(); ++k) {
      const auto [o, n] = segs[k];
      ops::AdamWSegmentTensors s;
      s.param = p.flat_view(o, {n});
      s.grad = g.flat_view(o, {n});
      s.exp_avg = m.flat_view(o, {n});
      s.exp_avg_sq = v.flat_view(o, {n});
      if (k != 1) s.model_copy = copy.flat_view(o, {n});  // segment 1 has none
      s.weight_decay = decays[k];
      st.push_back(s);
      ops::AdamWParams q = ap;
      q.weight_decay = decays[k];
      if (!multi) {
        Tensor pv = s.param, mv = s.exp_avg, vv = s.exp_avg_sq;
        ops::adamw_step(pv, s.grad, mv, vv, q);
      }
      Tensor rp = ref.flat_view(o, {n}), rm = m64.flat_view(o, {n}), rv = v64.flat_view(o, {n});
      ops::adamw_step(rp, g64.flat_view(o, {n}), rm, rv, q);
    }
    if (multi) ops::adamw_multi_step(st, ap);
  }
  // The update p − p0 (not p itself, whose norm would hide the update's error).
  Tensor dp = to_cpu64(p), dref = ref.clone(kCat);
  for (int64_t i = 0; i < total; ++i) {
    dp.data<double>()[i] -= p64.data<double>()[i];
    dref.data<double>()[i] -= p64.data<double>()[i];
  }
  EXPECT_LE(rel_err(dp, dref), 1e-5);
  EXPECT_CLOSE(m, m64, 1e-5);
  EXPECT_CLOSE(v, v64, 1e-5);
  if (multi) {  // the copy is the final param rounded, where a segment has one
    const Tensor pc = to_host(p).to(copy_dtype, kCat), ch = to_host(copy);
    const size_t es = dtype_size(copy_dtype);
    for (size_t k = 0; k < segs.size(); ++k) {
      const auto [o, n] = segs[k];
      const char* a = static_cast<const char*>(pc.raw()) + o * es;
      const char* b = static_cast<const char*>(ch.raw()) + o * es;
      if (k == 1) {
        const Tensor c64 = to_cpu64(copy);
        for (int64_t i = o; i < o + n; ++i) EXPECT_TRUE(std::isnan(c64.data<double>()[i])) << "written: " << i;
      } else {
        EXPECT_EQ(std::memcmp(a, b, n * es), 0) << "segment " << k;
      }
    }
  }
}

TEST(GpuKernels, AdamWStep) {
  LLM_REQUIRE_GPU();
  for (DType g : kDtypes) {
    SCOPED_TRACE(dtype_name(g));
    check_adamw(g, DType::BF16, false);
  }
}

TEST(GpuKernels, AdamWMultiStep) {
  LLM_REQUIRE_GPU();
  for (DType g : kDtypes)
    for (DType c : kDtypes) {
      SCOPED_TRACE(std::string("grad ") + dtype_name(g) + ", copy " + dtype_name(c));
      check_adamw(g, c, true);
    }
}

TEST(GpuKernels, AdamWMultiStepManySegments) {
  LLM_REQUIRE_GPU();
  // Hundreds of segments (a model's parameters), some empty, in one launch.
  const int64_t nseg = 300;
  std::vector<int64_t> sizes;
  int64_t total = 0;
  for (int64_t k = 0; k < nseg; ++k) {
    sizes.push_back(k % 17 == 0 ? 0 : (k * 7919) % 5000 + 1);
    total += sizes.back();
  }
  const Tensor p64 = rounded(random64({total}, 301, -0.1, 0.1), DType::F32), g64 = rounded(random64({total}, 302), DType::BF16);
  Tensor m64 = full64({total}, 0.0), v64 = full64({total}, 0.0), ref = p64.clone(kCat);
  Tensor p = to_gpu(p64, DType::F32), g = to_gpu(g64, DType::BF16), m = to_gpu(m64, DType::F32),
         v = to_gpu(v64, DType::F32);
  ops::AdamWParams ap{1e-2, 0.9, 0.95, 1e-8, 0.0, 1, 1.0};
  std::vector<ops::AdamWSegmentTensors> st;
  int64_t o = 0;
  for (int64_t k = 0; k < nseg; ++k) {
    const int64_t n = sizes[k];
    ops::AdamWSegmentTensors s;
    s.param = p.flat_view(o, {n});
    s.grad = g.flat_view(o, {n});
    s.exp_avg = m.flat_view(o, {n});
    s.exp_avg_sq = v.flat_view(o, {n});
    s.weight_decay = (k % 3) * 0.05;
    st.push_back(s);
    ops::AdamWParams q = ap;
    q.weight_decay = s.weight_decay;
    Tensor rp = ref.flat_view(o, {n}), rm = m64.flat_view(o, {n}), rv = v64.flat_view(o, {n});
    ops::adamw_step(rp, g64.flat_view(o, {n}), rm, rv, q);
    o += n;
  }
  ops::adamw_multi_step(st, ap);
  Tensor dp = to_cpu64(p), dref = ref.clone(kCat);
  for (int64_t i = 0; i < total; ++i) {
    dp.data<double>()[i] -= p64.data<double>()[i];
    dref.data<double>()[i] -= p64.data<double>()[i];
  }
  EXPECT_LE(rel_err(dp, dref), 1e-5);
  EXPECT_CLOSE(m, m64, 1e-5);
  EXPECT_CLOSE(v, v64, 1e-5);
}

TEST(GpuKernels, SumsOfSquaresAndAllFinite) {
  LLM_REQUIRE_GPU();
  std::vector<Tensor> xs;
  std::vector<double> want;
  uint64_t seed = 400;
  for (DType dt : kDtypes)
    for (int64_t n : {0, 1, 7, 1001, 100003}) {
      const Tensor x64 = random64({n + 3}, ++seed, -3, 3);
      const Tensor host = x64.to(dt, kCat).flat_view(3, {n});  // misaligned by 3 elements
      xs.push_back(to_gpu(x64, dt).flat_view(3, {n}));
      want.push_back(ops::sum_of_squares(host));
    }
  const std::vector<double> got = ops::sums_of_squares(xs);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-12 * want[i]) << i;
    EXPECT_EQ(ops::sum_of_squares(xs[i]), got[i]) << i;  // the same blocks and order alone
  }
  EXPECT_EQ(ops::sums_of_squares(xs), got);  // deterministic
  EXPECT_TRUE(ops::sums_of_squares({}).empty());

  for (DType dt : kDtypes)
    for (int64_t n : {1, 7, 1001, 100003}) {
      for (int64_t bad : {int64_t{-1}, int64_t{0}, n / 2, n - 1}) {
        for (double value : {kNaN, std::numeric_limits<double>::infinity()}) {
          Tensor x64 = random64({n + 3}, 500 + n);
          if (bad >= 0) x64.data<double>()[3 + bad] = value;
          const Tensor x = to_gpu(x64, dt).flat_view(3, {n});
          EXPECT_EQ(ops::all_finite(x), bad < 0) << dtype_name(dt) << " n=" << n << " bad at " << bad;
        }
      }
    }
  // 16-bit overflow is not finite either (65504 is F16's largest).
  EXPECT_FALSE(ops::all_finite(to_gpu(full64({9}, 1e6), DType::F16)));
  EXPECT_TRUE(ops::all_finite(to_gpu(full64({9}, 1e6), DType::BF16)));
}

TEST(GpuKernels, OperandChecks) {
  LLM_REQUIRE_GPU();
  const Tensor x = to_gpu(random64({4, 8}, 1), DType::BF16), w = to_gpu(random64({8}, 2), DType::BF16);
  Tensor y = poisoned({4, 8}, DType::BF16), rstd = poisoned({4}, DType::F32);
  const Tensor w32 = to_gpu(random64({8}, 2), DType::F32);
  Tensor rstd_bf16 = poisoned({4}, DType::BF16), y_short = poisoned({3, 8}, DType::BF16);
  Tensor y_cpu = Tensor::empty({4, 8}, DType::BF16, kCat);
  EXPECT_THROW(ops::rmsnorm_forward(x, w32, 1e-5, y, rstd), std::invalid_argument);
  EXPECT_THROW(ops::rmsnorm_forward(x, w, 1e-5, y, rstd_bf16), std::invalid_argument);
  EXPECT_THROW(ops::rmsnorm_forward(x, w, 1e-5, y_short, rstd), std::invalid_argument);
  EXPECT_THROW(ops::rmsnorm_forward(x, w, 1e-5, y_cpu, rstd), std::invalid_argument);
  try {
    ops::rmsnorm_forward(x, w, 1e-5, y_short, rstd);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("rmsnorm_forward"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("y "), std::string::npos) << e.what();
  }
  Tensor f64 = to_gpu(random64({8}, 3), DType::F64);
  EXPECT_THROW(ops::add_(f64, f64), std::invalid_argument);
  Tensor a = to_gpu(random64({8}, 3), DType::F32);
  EXPECT_THROW(ops::add_(a, w), std::invalid_argument);  // BF16 into F32
  Tensor p = to_gpu(random64({8}, 4), DType::BF16), g = to_gpu(random64({8}, 5), DType::BF16);
  Tensor m = to_gpu(full64({8}, 0), DType::F32), v = to_gpu(full64({8}, 0), DType::F32);
  ops::AdamWParams ap{1e-3, 0.9, 0.95, 1e-8, 0.1, 1, 1.0};
  EXPECT_THROW(ops::adamw_step(p, g, m, v, ap), std::invalid_argument);  // master weights must be F32
  const Tensor tok = ids_gpu({0, 1});
  Tensor out = poisoned({2, 8}, DType::F32);
  EXPECT_THROW(ops::embedding_forward(tok, w.view({1, 8}), out), std::invalid_argument);  // dtype differs
  Tensor logits = to_gpu(random64({2, 8}, 6), DType::F32), loss = poisoned({2}, DType::F32);
  Tensor lse_bf16 = poisoned({2}, DType::BF16);
  EXPECT_THROW(ops::cross_entropy_forward(logits, tok, loss, lse_bf16), std::invalid_argument);
  ops::QkvLayout l{1, 2, 1, 1, 3};  // odd head_dim
  Tensor qkv = to_gpu(random64({2, 9}, 7), DType::F32);
  EXPECT_THROW(ops::rope_forward(qkv, l, 0, 10000.0), std::invalid_argument);
}

}  // namespace
