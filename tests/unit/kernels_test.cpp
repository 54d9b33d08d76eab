// CPU kernels: finite-difference gradient checks in double, values against textbook
// formulas written out here, bad inputs, += semantics, determinism across thread counts,
// and float against double.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cpu/adamw.h"
#include "core/cpu/cross_entropy.h"
#include "core/cpu/embedding.h"
#include "core/cpu/gemm.h"
#include "core/cpu/grad_norm.h"
#include "core/cpu/rmsnorm.h"
#include "core/cpu/rope.h"
#include "core/cpu/swiglu.h"
#include "core/cpu/vec_math.h"

using namespace llm::cpu;

namespace {

using Vec = std::vector<double>;

Vec randn(size_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  Vec v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<float> to_float(const Vec& v) { return std::vector<float>(v.begin(), v.end()); }

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of L with respect to every element of x (restored afterwards).
Vec numeric_grad(Vec& x, const std::function<double()>& L, double h = 1e-6) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = L();
    x[i] = x0 - h;
    const double lm = L();
    x[i] = x0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

void expect_grad_close(const Vec& analytic, const Vec& numeric, const std::string& what) {
  ASSERT_EQ(analytic.size(), numeric.size());
  for (size_t i = 0; i < analytic.size(); ++i) {
    const double err = std::abs(analytic[i] - numeric[i]);
    EXPECT_LE(err, 1e-7 + 1e-6 * std::abs(numeric[i]))
        << what << "[" << i << "]: analytic " << analytic[i] << " numeric " << numeric[i];
  }
}

// max |a - b| / max |b|: the relative error of a vector.
template <class A>
double rel_err(const std::vector<A>& a, const Vec& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return den == 0 ? num : num / den;
}

struct ThreadCount {  // restores the thread count when a test ends
  int saved = omp_get_max_threads();
  ~ThreadCount() { omp_set_num_threads(saved); }
};

}  // namespace

// ---------------------------------------------------------------------------------------
// Embedding

TEST(Embedding, GradientMatchesFiniteDifferences) {
  const int64_t vocab = 7, dim = 5;
  const std::vector<int32_t> tokens = {3, 0, 3, 6, 1, 3};  // repeats; ids 2, 4, 5 unused
  const int64_t n = static_cast<int64_t>(tokens.size());
  Vec table = randn(vocab * dim, 1), R = randn(n * dim, 2), out(n * dim);
  auto L = [&] {
    embedding_forward(tokens.data(), n, table.data(), vocab, dim, out.data());
    return dot(out, R);
  };
  Vec dtable(vocab * dim, 0.0);
  embedding_backward(tokens.data(), n, R.data(), vocab, dim, dtable.data());
  expect_grad_close(dtable, numeric_grad(table, L), "dtable");
}

TEST(Embedding, ForwardGathersRows) {
  const int64_t vocab = 4, dim = 3;
  Vec table = {0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32};
  const std::vector<int32_t> tokens = {2, 0, 3, 2};
  Vec out(4 * dim);
  embedding_forward(tokens.data(), 4, table.data(), vocab, dim, out.data());
  EXPECT_EQ(out, (Vec{20, 21, 22, 0, 1, 2, 30, 31, 32, 20, 21, 22}));
}

TEST(Embedding, BadTokenIdThrowsNamingItAndWritesNothing) {
  const int64_t vocab = 7, dim = 3;
  Vec table = randn(vocab * dim, 3);
  std::vector<int32_t> tokens = {1, 2, 7, 0};
  Vec out(4 * dim, -1.0);
  try {
    embedding_forward(tokens.data(), 4, table.data(), vocab, dim, out.data());
    FAIL() << "no exception";
  } catch (const std::out_of_range& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("token id 7"), std::string::npos) << msg;
    EXPECT_NE(msg.find("position 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[0, 7)"), std::string::npos) << msg;
  }
  for (double v : out) EXPECT_EQ(v, -1.0);  // checked before writing
  tokens[2] = -1;
  EXPECT_THROW(embedding_forward(tokens.data(), 4, table.data(), vocab, dim, out.data()),
               std::out_of_range);
  Vec dtable(vocab * dim, 0.0);
  EXPECT_THROW(embedding_backward(tokens.data(), 4, out.data(), vocab, dim, dtable.data()),
               std::out_of_range);
}

TEST(Embedding, BackwardAddsInTokenOrder) {
  const int64_t vocab = 50, dim = 300, n = 200;  // large enough to run in parallel
  std::vector<int32_t> tokens(n);
  for (int64_t i = 0; i < n; ++i) tokens[i] = static_cast<int32_t>((i * 7) % 13);
  const std::vector<float> dout = to_float(randn(n * dim, 4));
  const std::vector<float> base = to_float(randn(vocab * dim, 5));
  // Adds onto what is there, row by row in token order: exactly this loop's result.
  std::vector<float> got = base, want = base;
  embedding_backward(tokens.data(), n, dout.data(), vocab, dim, got.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < dim; ++c) want[tokens[i] * dim + c] += dout[i * dim + c];
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << i;
  // Distinct tokens: calling it twice doubles the gradient.
  std::vector<int32_t> distinct = {4, 9, 0, 49};
  std::vector<float> once(vocab * dim, 0.f), twice(vocab * dim, 0.f);
  embedding_backward(distinct.data(), 4, dout.data(), vocab, dim, once.data());
  embedding_backward(distinct.data(), 4, dout.data(), vocab, dim, twice.data());
  embedding_backward(distinct.data(), 4, dout.data(), vocab, dim, twice.data());
  for (size_t i = 0; i < once.size(); ++i) ASSERT_EQ(twice[i], 2 * once[i]) << i;
}

TEST(Embedding, BackwardIsDeterministicAcrossThreadCounts) {
  ThreadCount tc;
  const int64_t vocab = 30, dim = 512, n = 400;
  std::vector<int32_t> tokens(n);
  for (int64_t i = 0; i < n; ++i) tokens[i] = static_cast<int32_t>((i * i) % vocab);
  const std::vector<float> dout = to_float(randn(n * dim, 5));
  std::vector<std::vector<float>> res;
  for (int t : {1, 2, 3}) {
    omp_set_num_threads(t);
    std::vector<float> d(vocab * dim, 0.f);
    embedding_backward(tokens.data(), n, dout.data(), vocab, dim, d.data());
    res.push_back(d);
  }
  EXPECT_EQ(0, std::memcmp(res[0].data(), res[1].data(), res[0].size() * 4));
  EXPECT_EQ(0, std::memcmp(res[0].data(), res[2].data(), res[0].size() * 4));
}

// ---------------------------------------------------------------------------------------
// RMSNorm

TEST(RmsNorm, GradientMatchesFiniteDifferences) {
  const int64_t rows = 5, dim = 37;  // 37: full lanes plus a ragged tail in the reductions
  Vec x = randn(rows * dim, 10), w = randn(dim, 11), R = randn(rows * dim, 12);
  Vec y(rows * dim), rstd(rows);
  auto L = [&] {
    rmsnorm_forward(x.data(), w.data(), rows, dim, 1e-5, y.data(), rstd.data());
    return dot(y, R);
  };
  L();
  Vec dx(rows * dim, 0.0), dw(dim, 0.0);
  rmsnorm_backward(R.data(), x.data(), w.data(), rstd.data(), rows, dim, dx.data(), dw.data());
  expect_grad_close(dx, numeric_grad(x, L), "dx");
  expect_grad_close(dw, numeric_grad(w, L), "dw");
}

TEST(RmsNorm, ValuesOnAFixedRow) {
  const Vec x = {1, 2, 3, 4}, w = {1, 1, 2, 0.5};
  const double eps = 1e-5;
  const double r = 1.0 / std::sqrt((1.0 + 4 + 9 + 16) / 4 + eps);  // mean(x²) = 7.5
  const Vec want = {1 * r * 1, 2 * r * 1, 3 * r * 2, 4 * r * 0.5};
  Vec y(4), rstd(1);
  rmsnorm_forward(x.data(), w.data(), 1, 4, eps, y.data(), rstd.data());
  EXPECT_NEAR(rstd[0], r, 1e-15);
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(y[j], want[j], 1e-15) << j;
  std::vector<float> xf = to_float(x), wf = to_float(w), yf(4), rf(1);
  rmsnorm_forward(xf.data(), wf.data(), 1, 4, eps, yf.data(), rf.data());
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(yf[j], want[j], 1e-6 * std::abs(want[j])) << j;
}

TEST(RmsNorm, BackwardAdds) {
  const int64_t rows = 64, dim = 96;
  const std::vector<float> x = to_float(randn(rows * dim, 13)), w = to_float(randn(dim, 14)),
                           dy = to_float(randn(rows * dim, 15));
  std::vector<float> y(rows * dim), rstd(rows);
  rmsnorm_forward(x.data(), w.data(), rows, dim, 1e-5, y.data(), rstd.data());
  std::vector<float> dx1(rows * dim, 0.f), dw1(dim, 0.f), dx2(rows * dim, 0.f), dw2(dim, 0.f);
  rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), rows, dim, dx1.data(), dw1.data());
  for (int k = 0; k < 2; ++k)
    rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), rows, dim, dx2.data(), dw2.data());
  for (size_t i = 0; i < dx1.size(); ++i) ASSERT_EQ(dx2[i], 2 * dx1[i]) << i;
  for (size_t i = 0; i < dw1.size(); ++i) ASSERT_EQ(dw2[i], 2 * dw1[i]) << i;
}

TEST(RmsNorm, BackwardIsDeterministicAcrossThreadCounts) {
  ThreadCount tc;
  const int64_t rows = 1000, dim = 200;  // parallel, many chunks
  const std::vector<float> x = to_float(randn(rows * dim, 16)), w = to_float(randn(dim, 17)),
                           dy = to_float(randn(rows * dim, 18));
  std::vector<std::vector<float>> dws, dxs;
  for (int t : {1, 2, 3}) {
    omp_set_num_threads(t);
    std::vector<float> y(rows * dim), rstd(rows), dx(rows * dim, 0.f), dw(dim, 0.f);
    rmsnorm_forward(x.data(), w.data(), rows, dim, 1e-5, y.data(), rstd.data());
    rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), rows, dim, dx.data(), dw.data());
    dws.push_back(dw);
    dxs.push_back(dx);
  }
  for (int k = 1; k < 3; ++k) {
    EXPECT_EQ(0, std::memcmp(dws[0].data(), dws[k].data(), dim * 4)) << "dw, threads " << k + 1;
    EXPECT_EQ(0, std::memcmp(dxs[0].data(), dxs[k].data(), rows * dim * 4))
        << "dx, threads " << k + 1;
  }
}

TEST(RmsNorm, ForwardDoesNotDependOnAlignment) {
  // The same row at another address (e.g. recomputed in a different buffer) must give
  // bitwise the same result: the reductions use fixed lanes, not the vectoriser's.
  const int64_t dim = 203;
  const std::vector<float> x = to_float(randn(dim, 19)), w = to_float(randn(dim, 20));
  std::vector<float> buf(dim + 16), y0(dim), y1(dim);
  float r0, r1;
  rmsnorm_forward(x.data(), w.data(), 1, dim, 1e-5, y0.data(), &r0);
  for (int off = 1; off < 16; ++off) {
    std::memcpy(buf.data() + off, x.data(), dim * 4);
    rmsnorm_forward(buf.data() + off, w.data(), 1, dim, 1e-5, y1.data(), &r1);
    ASSERT_EQ(r0, r1) << off;
    ASSERT_EQ(0, std::memcmp(y0.data(), y1.data(), dim * 4)) << off;
  }
}

// ---------------------------------------------------------------------------------------
// RoPE

TEST(Rope, GradientMatchesFiniteDifferences) {
  const int64_t batch = 2, seq = 3, heads = 2, D = 6, ld = heads * D + 5, pos0 = 4;
  const double theta = 100.0;
  Vec x = randn(batch * seq * ld, 21), R = randn(batch * seq * ld, 22);
  for (int64_t r = 0; r < batch * seq; ++r)  // padding carries no gradient
    for (int64_t c = heads * D; c < ld; ++c) R[r * ld + c] = 0;
  auto L = [&] {
    Vec y = x;
    rope_forward(y.data(), ld, batch, seq, heads, D, pos0, theta);
    return dot(y, R);
  };
  Vec dx = R;
  rope_backward(dx.data(), ld, batch, seq, heads, D, pos0, theta);
  expect_grad_close(dx, numeric_grad(x, L), "dx");
  Vec y = x;  // the padding between rows is left alone
  rope_forward(y.data(), ld, batch, seq, heads, D, pos0, theta);
  for (int64_t r = 0; r < batch * seq; ++r)
    for (int64_t c = heads * D; c < ld; ++c) EXPECT_EQ(y[r * ld + c], x[r * ld + c]);
}

TEST(Rope, ValuesForAHeadOfFourAtPositions013) {
  // D = 4, theta = 10000: inv_freq = [1, 10000^(-1/2)] = [1, 0.01].
  const Vec x = {0.5, -1.25, 2.0, 0.75};
  auto want = [&](double p) {
    const double a0 = p * 1.0, a1 = p * 0.01;
    return Vec{x[0] * std::cos(a0) - x[2] * std::sin(a0), x[1] * std::cos(a1) - x[3] * std::sin(a1),
               x[2] * std::cos(a0) + x[0] * std::sin(a0),
               x[3] * std::cos(a1) + x[1] * std::sin(a1)};
  };
  // One sequence of 4 tokens (positions 0..3), then single tokens at offsets 0, 1, 3.
  Vec seq4;
  for (int t = 0; t < 4; ++t) seq4.insert(seq4.end(), x.begin(), x.end());
  rope_forward(seq4.data(), 4, 1, 4, 1, 4, 0, 10000.0);
  for (int p : {0, 1, 3}) {
    const Vec w = want(p);
    for (int i = 0; i < 4; ++i)
      EXPECT_NEAR(seq4[p * 4 + i], w[i], 1e-15) << "pos " << p << " i " << i;
    Vec one = x;
    rope_forward(one.data(), 4, 1, 1, 1, 4, p, 10000.0);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(one[i], w[i], 1e-15) << "offset " << p << " i " << i;
    std::vector<float> f = to_float(x);
    rope_forward(f.data(), 4, 1, 1, 1, 4, p, 10000.0);
    for (int i = 0; i < 4; ++i)
      EXPECT_NEAR(f[i], w[i], 1e-6) << "float, offset " << p << " i " << i;
  }
}

TEST(Rope, BackwardUndoesForward) {
  const int64_t batch = 2, seq = 5, heads = 3, D = 8, ld = 3 * D + 2 * D;  // as in a fused QKV row
  const Vec x = randn(batch * seq * ld, 23);
  Vec y = x;
  rope_forward(y.data(), ld, batch, seq, heads, D, 7, 10000.0);
  rope_backward(y.data(), ld, batch, seq, heads, D, 7, 10000.0);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-14) << i;
}

TEST(Rope, AccurateAtLargePositions) {
  // The table is built in double: position 100000 must still match to float rounding.
  const double theta = 500000.0;
  const int64_t D = 64, pos = 100000;
  const Vec x = randn(D, 24);
  std::vector<float> f = to_float(x);
  rope_forward(f.data(), D, 1, 1, 1, D, pos, theta);
  for (int64_t i = 0; i < D / 2; ++i) {
    const double a = pos / std::pow(theta, 2.0 * i / D);
    const double want =
        static_cast<float>(x[i]) * std::cos(a) - static_cast<float>(x[i + D / 2]) * std::sin(a);
    EXPECT_NEAR(f[i], want, 1e-6 * (1 + std::abs(want))) << i;
  }
}

// ---------------------------------------------------------------------------------------
// SwiGLU

TEST(SwiGlu, GradientMatchesFiniteDifferences) {
  const int64_t rows = 3, F = 10, ld = 2 * F;  // fused [gate | up] rows
  Vec buf = randn(rows * ld, 30, 2.0), R = randn(rows * F, 31), out(rows * F);
  auto L = [&] {
    swiglu_forward(buf.data(), buf.data() + F, ld, out.data(), rows, F);
    return dot(out, R);
  };
  Vec dbuf(rows * ld, 0.0);
  swiglu_backward(R.data(), buf.data(), buf.data() + F, ld, dbuf.data(), dbuf.data() + F, rows, F);
  expect_grad_close(dbuf, numeric_grad(buf, L), "d[gate|up]");
}

TEST(SwiGlu, ValuesAndExtremeGates) {
  const Vec g = {0.0, 1.0, -2.0, 100.0, -100.0, -1000.0}, u = {3.0, 2.0, 1.5, 0.5, 7.0, 1.0};
  Vec out(6);
  swiglu_forward(g.data(), u.data(), 6, out.data(), 1, 6);
  std::vector<float> gf = to_float(g), uf = to_float(u), of(6);
  swiglu_forward(gf.data(), uf.data(), 6, of.data(), 1, 6);
  for (int j = 0; j < 6; ++j) {
    const double want = g[j] / (1 + std::exp(-g[j])) * u[j];
    EXPECT_NEAR(out[j], want, 1e-15 * (1 + std::abs(want))) << j;
    EXPECT_NEAR(of[j], want, 1e-6 * (1 + std::abs(want))) << j;
    EXPECT_FALSE(std::isnan(of[j])) << j;
  }
  Vec dg(6, 0.0), du(6, 0.0), d(6, 1.0);
  swiglu_backward(d.data(), g.data(), u.data(), 6, dg.data(), du.data(), 1, 6);
  for (int j = 0; j < 6; ++j) EXPECT_TRUE(std::isfinite(dg[j]) && std::isfinite(du[j])) << j;
}

TEST(SwiGlu, BackwardAdds) {
  const int64_t rows = 40, F = 600, ld = 2 * F;
  const std::vector<float> buf = to_float(randn(rows * ld, 32)), d = to_float(randn(rows * F, 33));
  std::vector<float> once(rows * ld, 0.f), twice(rows * ld, 0.f);
  swiglu_backward(d.data(), buf.data(), buf.data() + F, ld, once.data(), once.data() + F, rows, F);
  for (int k = 0; k < 2; ++k)
    swiglu_backward(d.data(), buf.data(), buf.data() + F, ld, twice.data(), twice.data() + F, rows,
                    F);
  for (size_t i = 0; i < once.size(); ++i) ASSERT_EQ(twice[i], 2 * once[i]) << i;
}

// ---------------------------------------------------------------------------------------
// Cross-entropy

TEST(CrossEntropy, GradientMatchesFiniteDifferencesWithIgnoredRow) {
  const int64_t rows = 4, V = 11;
  const std::vector<int32_t> targets = {3, -1, 0, 10};
  Vec logits = randn(rows * V, 40, 2.0), dloss = randn(rows, 41), loss(rows), lse(rows);
  auto L = [&] {
    cross_entropy_forward(logits.data(), targets.data(), rows, V, loss.data(), lse.data());
    return dot(loss, dloss);
  };
  L();
  EXPECT_EQ(loss[1], 0.0);
  Vec dlogits(rows * V, 123.0);  // overwritten, not added to
  cross_entropy_backward(logits.data(), lse.data(), targets.data(), dloss.data(), rows, V,
                         dlogits.data());
  for (int64_t j = 0; j < V; ++j) EXPECT_EQ(dlogits[1 * V + j], 0.0);
  // In place (dlogits == logits) gives the same result.
  Vec inplace = logits;
  cross_entropy_backward(inplace.data(), lse.data(), targets.data(), dloss.data(), rows, V,
                         inplace.data());
  for (size_t i = 0; i < inplace.size(); ++i) EXPECT_EQ(inplace[i], dlogits[i]) << i;
  expect_grad_close(dlogits, numeric_grad(logits, L), "dlogits");
}

TEST(CrossEntropy, ValuesAgainstNaiveFormula) {
  const int64_t rows = 3, V = 70;  // 70: full lanes plus a tail
  const Vec logits = randn(rows * V, 42, 3.0);
  const std::vector<int32_t> targets = {5, 69, 0};
  Vec loss(rows), lse(rows);
  cross_entropy_forward(logits.data(), targets.data(), rows, V, loss.data(), lse.data());
  const std::vector<float> lf = to_float(logits);
  std::vector<float> lossf(rows), lsef(rows), df(rows * V);
  cross_entropy_forward(lf.data(), targets.data(), rows, V, lossf.data(), lsef.data());
  const std::vector<float> ones(rows, 1.f);
  cross_entropy_backward(lf.data(), lsef.data(), targets.data(), ones.data(), rows, V, df.data());
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(logits[r * V + j]);
    const double want = std::log(s) - logits[r * V + targets[r]];
    EXPECT_NEAR(loss[r], want, 1e-13) << r;
    EXPECT_NEAR(lse[r], std::log(s), 1e-13) << r;
    EXPECT_NEAR(lossf[r], want, 2e-6 * (1 + std::abs(want))) << r;
    for (int64_t j = 0; j < V; ++j) {
      const double p = std::exp(logits[r * V + j]) / s - (j == targets[r] ? 1 : 0);
      EXPECT_NEAR(df[r * V + j], p, 1e-6) << r << "," << j;
    }
  }
}

TEST(CrossEntropy, StableForLargeLogits) {
  const int64_t V = 100;
  const Vec base = randn(V, 43, 2.0);
  const int32_t target = 17;
  for (double shift : {1000.0, 1e4, -1e4}) {
    Vec shifted = base;
    for (auto& v : shifted) v += shift;
    double l0, l1, s0, s1;
    cross_entropy_forward(base.data(), &target, 1, V, &l0, &s0);
    cross_entropy_forward(shifted.data(), &target, 1, V, &l1, &s1);
    EXPECT_TRUE(std::isfinite(l1));
    EXPECT_NEAR(l1, l0, 1e-9) << shift;
  }
  std::vector<float> f = to_float(base);
  for (auto& v : f) v += 80.f;  // exp(80+) overflows float without the max subtraction
  float lf, sf;
  double l0, s0;
  cross_entropy_forward(base.data(), &target, 1, V, &l0, &s0);
  cross_entropy_forward(f.data(), &target, 1, V, &lf, &sf);
  EXPECT_NEAR(lf, l0, 1e-4);
}

TEST(CrossEntropy, TargetOutOfRangeThrows) {
  const int64_t V = 5;
  const Vec logits = randn(2 * V, 44);
  Vec loss(2, -7.0), lse(2, -7.0), d(2 * V), dl(2, 1.0);
  for (int32_t bad : {5, 6, -2}) {
    const std::vector<int32_t> targets = {0, bad};
    try {
      cross_entropy_forward(logits.data(), targets.data(), 2, V, loss.data(), lse.data());
      FAIL() << "no exception for " << bad;
    } catch (const std::out_of_range& e) {
      EXPECT_NE(std::string(e.what()).find("target " + std::to_string(bad)), std::string::npos)
          << e.what();
    }
    EXPECT_EQ(loss[0], -7.0);  // nothing written
    EXPECT_THROW(cross_entropy_backward(logits.data(), lse.data(), targets.data(), dl.data(), 2, V,
                                        d.data()),
                 std::out_of_range);
  }
}

TEST(CrossEntropy, NanLogitGivesNanLoss) {
  std::vector<float> logits = {0.f, 1.f, NAN, 2.f};
  const int32_t t = 1;
  float loss, lse;
  cross_entropy_forward(logits.data(), &t, 1, 4, &loss, &lse);
  EXPECT_TRUE(std::isnan(loss));
}

TEST(CrossEntropy, DeterministicAcrossThreadCounts) {
  ThreadCount tc;
  const int64_t rows = 64, V = 1000;
  const std::vector<float> logits = to_float(randn(rows * V, 45, 3.0));
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>((r * 37) % V);
  std::vector<std::vector<float>> res;
  for (int t : {1, 2}) {
    omp_set_num_threads(t);
    std::vector<float> loss(rows), lse(rows), d(rows * V), dl(rows, 1.f / rows);
    cross_entropy_forward(logits.data(), targets.data(), rows, V, loss.data(), lse.data());
    cross_entropy_backward(logits.data(), lse.data(), targets.data(), dl.data(), rows, V, d.data());
    d.insert(d.end(), loss.begin(), loss.end());
    res.push_back(d);
  }
  EXPECT_EQ(0, std::memcmp(res[0].data(), res[1].data(), res[0].size() * 4));
}

// ---------------------------------------------------------------------------------------
// GEMM (core/cpu/gemm.h): the gradients layers derive from it, in all transpose cases.

// Vocab-parallel pieces: a table (or logits) split into column/row ranges on
// "ranks" computes what the whole one does once the parts are combined the way
// the tensor-parallel layers combine them (max / sum over the parts).
TEST(Embedding, VocabSplitPartsSumToTheWholeLookup) {
  const int64_t V = 10, dim = 5, n = 7;
  const std::vector<int32_t> tokens = {0, 3, 9, 4, 3, 7, 5};
  const Vec table = randn(V * dim, 31), dout = randn(n * dim, 32);
  Vec whole(n * dim), whole_grad(V * dim, 0.0);
  embedding_forward<double>(tokens.data(), n, table.data(), V, dim, whole.data());
  embedding_backward<double>(tokens.data(), n, dout.data(), V, dim, whole_grad.data());
  Vec sum(n * dim, 0.0);
  for (const auto& [begin, rows] : {std::pair<int64_t, int64_t>{0, 4}, {4, 6}}) {
    Vec part(n * dim), grad(rows * dim, 0.0);
    embedding_forward<double>(tokens.data(), n, table.data() + begin * dim, rows, dim, part.data(), begin, V);
    for (int64_t i = 0; i < n * dim; ++i) sum[i] += part[i];
    embedding_backward<double>(tokens.data(), n, dout.data(), rows, dim, grad.data(), begin, V);
    for (int64_t i = 0; i < rows * dim; ++i) EXPECT_EQ(grad[i], whole_grad[begin * dim + i]) << begin << " " << i;
  }
  for (int64_t i = 0; i < n * dim; ++i) EXPECT_EQ(sum[i], whole[i]) << i;
  // Ids are checked against the whole vocabulary, not the part.
  Vec part(n * dim);
  const std::vector<int32_t> bad = {0, 10};
  EXPECT_THROW(embedding_forward<double>(bad.data(), 2, table.data(), 4, dim, part.data(), 0, V), std::out_of_range);
}

TEST(CrossEntropy, VocabSplitPartsGiveTheWholeLossAndGradient) {
  const int64_t rows = 4, V = 12;
  const std::vector<int32_t> targets = {2, 11, -1, 6};
  Vec logits = randn(rows * V, 33, 3.0);
  Vec loss(rows), lse(rows), grad(rows * V);
  const Vec dloss = {0.5, 1.0, 1.0, 2.0};
  cross_entropy_forward<double>(logits.data(), targets.data(), rows, V, loss.data(), lse.data());
  cross_entropy_backward<double>(logits.data(), lse.data(), targets.data(), dloss.data(), rows, V, grad.data());
  const std::vector<std::pair<int64_t, int64_t>> parts = {{0, 5}, {5, 3}, {8, 4}};  // uneven on purpose
  auto part_logits = [&](int64_t begin, int64_t cols) {
    Vec p(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) p[r * cols + c] = logits[r * V + begin + c];
    return p;
  };
  Vec row_max(rows, -INFINITY), sum_exp(rows, 0.0), target_logit(rows, 0.0);
  for (const auto& [begin, cols] : parts) {  // max over the parts (the all-reduce Max)
    Vec m(rows);
    cross_entropy_row_max<double>(part_logits(begin, cols).data(), rows, cols, m.data());
    for (int64_t r = 0; r < rows; ++r) row_max[r] = std::max(row_max[r], m[r]);
  }
  for (const auto& [begin, cols] : parts) {  // sums over the parts (the all-reduce Sum)
    Vec s(rows), t(rows);
    cross_entropy_partial_sums<double>(part_logits(begin, cols).data(), targets.data(), rows, cols, begin, V,
                                       row_max.data(), s.data(), t.data());
    for (int64_t r = 0; r < rows; ++r) {
      sum_exp[r] += s[r];
      target_logit[r] += t[r];
    }
  }
  Vec split_lse(rows);
  for (int64_t r = 0; r < rows; ++r) {
    split_lse[r] = row_max[r] + std::log(sum_exp[r]);
    EXPECT_NEAR(split_lse[r], lse[r], 1e-12);
    if (targets[r] >= 0) EXPECT_NEAR(split_lse[r] - target_logit[r], loss[r], 1e-12) << r;
    else EXPECT_EQ(target_logit[r], 0.0);
  }
  for (const auto& [begin, cols] : parts) {
    Vec p = part_logits(begin, cols);
    cross_entropy_backward<double>(p.data(), split_lse.data(), targets.data(), dloss.data(), rows, cols, p.data(),
                                   begin, V);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) EXPECT_NEAR(p[r * cols + c], grad[r * V + begin + c], 1e-12) << r << " " << c;
  }
}

TEST(Gemm, GradientsInAllFourTransposeCasesMatchFiniteDifferences) {
  const int64_t M = 3, N = 4, K = 5;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(std::string("trans_a=") + (ta ? "1" : "0") + " trans_b=" + (tb ? "1" : "0"));
      // Stored shapes, with padded leading dimensions.
      const int64_t ar = ta ? K : M, ac = ta ? M : K, lda = ac + 2;
      const int64_t br = tb ? N : K, bc = tb ? K : N, ldb = bc + 1;
      Vec A = randn(ar * lda, 50), B = randn(br * ldb, 51), R = randn(M * N, 52), C(M * N);
      auto opA = [&](int64_t i, int64_t k) { return ta ? A[k * lda + i] : A[i * lda + k]; };
      auto opB = [&](int64_t k, int64_t j) { return tb ? B[j * ldb + k] : B[k * ldb + j]; };
      auto L = [&] {
        gemm<double>(ta, tb, M, N, K, 1.0, A.data(), lda, B.data(), ldb, 0.0, C.data(), N);
        return dot(C, R);
      };
      L();
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k) s += opA(i, k) * opB(k, j);
          EXPECT_NEAR(C[i * N + j], s, 1e-13);
        }
      // d op(A) = R · op(B)ᵀ  [M,K];   d op(B) = op(A)ᵀ · R  [K,N]
      Vec dopA(M * K), dopB(K * N);
      gemm<double>(false, !tb, M, K, N, 1.0, R.data(), N, B.data(), ldb, 0.0, dopA.data(), K);
      gemm<double>(!ta, false, K, N, M, 1.0, A.data(), lda, R.data(), N, 0.0, dopB.data(), N);
      Vec dA(ar * lda, 0.0), dB(br * ldb, 0.0);  // in storage layout; padding has no gradient
      for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < K; ++k) (ta ? dA[k * lda + i] : dA[i * lda + k]) = dopA[i * K + k];
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < N; ++j) (tb ? dB[j * ldb + k] : dB[k * ldb + j]) = dopB[k * N + j];
      expect_grad_close(dA, numeric_grad(A, L), "dA");
      expect_grad_close(dB, numeric_grad(B, L), "dB");
    }
  }
}

// ---------------------------------------------------------------------------------------
// AdamW

namespace {
// PyTorch's torch.optim.AdamW (single-tensor path), one element, written out.
struct RefAdamW {
  double p, m = 0, v = 0;
  void step(double grad, double lr, double b1, double b2, double eps, double wd, int t) {
    p = p * (1 - lr * wd);                // param.mul_(1 - lr * weight_decay)
    m = m + (1 - b1) * (grad - m);        // exp_avg.lerp_(grad, 1 - beta1)
    v = v * b2 + (1 - b2) * grad * grad;  // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    const double step_size = lr / bc1;
    const double denom =
        std::sqrt(v) / std::sqrt(bc2) + eps;  // (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
    p = p + (-step_size) * m / denom;         // param.addcdiv_(exp_avg, denom, value=-step_size)
  }
};
}  // namespace

TEST(AdamW, TwoStepsMatchPyTorchReference) {
  const int64_t n = 1037;  // > one block, and a ragged simd tail
  const double lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, gscale = 0.5;
  const Vec p0 = randn(n, 60), g1 = randn(n, 61, 0.1), g2 = randn(n, 62, 0.1);
  Vec p = p0, m(n, 0.0), v(n, 0.0);
  std::vector<float> pf = to_float(p0), mf(n, 0.f), vf(n, 0.f);
  const std::vector<float> g1f = to_float(g1), g2f = to_float(g2);
  adamw_step(p.data(), g1.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, 1, gscale);
  adamw_step(p.data(), g2.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, 2, gscale);
  adamw_step(pf.data(), g1f.data(), mf.data(), vf.data(), n, lr, b1, b2, eps, wd, 1, gscale);
  adamw_step(pf.data(), g2f.data(), mf.data(), vf.data(), n, lr, b1, b2, eps, wd, 2, gscale);
  for (int64_t i = 0; i < n; ++i) {
    RefAdamW ref{p0[i]};
    ref.step(g1[i] * gscale, lr, b1, b2, eps, wd, 1);
    ref.step(g2[i] * gscale, lr, b1, b2, eps, wd, 2);
    ASSERT_NEAR(p[i], ref.p, 1e-15 * (1 + std::abs(ref.p))) << i;
    ASSERT_NEAR(m[i], ref.m, 1e-16 + 1e-14 * std::abs(ref.m)) << i;
    ASSERT_NEAR(v[i], ref.v, 1e-18 + 1e-14 * std::abs(ref.v)) << i;
    // float against the same reference started from the float-rounded inputs
    RefAdamW reff{static_cast<float>(p0[i])};
    reff.step(static_cast<double>(g1f[i]) * gscale, lr, b1, b2, eps, wd, 1);
    reff.step(static_cast<double>(g2f[i]) * gscale, lr, b1, b2, eps, wd, 2);
    ASSERT_NEAR(pf[i], reff.p, 2e-7 * std::abs(reff.p) + 1e-9) << i;
    // m = m + 0.1·(g − m) can cancel: measure its error against the gradients' size
    ASSERT_NEAR(mf[i], reff.m, 2e-7 * (std::abs(g1f[i]) + std::abs(g2f[i]))) << i;
    ASSERT_NEAR(vf[i], reff.v, 1e-6 * std::abs(reff.v) + 1e-14) << i;
  }
}

TEST(AdamW, FirstStepMovesEachWeightByAboutLr) {
  // Textbook check: after bias correction the first step is lr·sign(g) (|g| >> eps).
  Vec p = {1.0, -2.0, 0.5}, g = {0.3, -0.01, 2.0}, m(3, 0.0), v(3, 0.0);
  adamw_step(p.data(), g.data(), m.data(), v.data(), 3, 0.01, 0.9, 0.999, 1e-8, 0.0, 1, 1.0);
  EXPECT_NEAR(p[0], 1.0 - 0.01, 1e-9);
  EXPECT_NEAR(p[1], -2.0 + 0.01, 1e-8);
  EXPECT_NEAR(p[2], 0.5 - 0.01, 1e-9);
  EXPECT_NEAR(m[0], 0.1 * 0.3, 1e-16);
  EXPECT_NEAR(v[2], 0.001 * 4.0, 1e-16);
}

// ---------------------------------------------------------------------------------------
// Gradient norm helpers

TEST(GradNorm, SumOfSquaresIsExactOnIntegers) {
  const int64_t n = 100000;  // sum of i² = n(n+1)(2n+1)/6 < 2^53: exact in double
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(i + 1);
  EXPECT_EQ(sum_of_squares(x.data(), n), static_cast<double>(n * (n + 1) * (2 * n + 1) / 6));
  EXPECT_EQ(sum_of_squares(x.data(), 0), 0.0);
  const Vec r = randn(777, 70);
  double naive = 0;
  for (double v : r) naive += v * v;
  EXPECT_NEAR(sum_of_squares(r.data(), 777), naive, 1e-12 * naive);
}

TEST(GradNorm, SumOfSquaresIsDeterministicAcrossThreadCounts) {
  ThreadCount tc;
  const int64_t n = 1000003;
  const std::vector<float> x = to_float(randn(n, 71));
  omp_set_num_threads(1);
  const double s1 = sum_of_squares(x.data(), n);
  omp_set_num_threads(2);
  const double s2 = sum_of_squares(x.data(), n);
  omp_set_num_threads(3);
  const double s3 = sum_of_squares(x.data(), n);
  EXPECT_EQ(std::memcmp(&s1, &s2, 8), 0) << s1 << " vs " << s2;
  EXPECT_EQ(std::memcmp(&s1, &s3, 8), 0) << s1 << " vs " << s3;
}

TEST(GradNorm, ScaleAndAllFinite) {
  for (int64_t n : {int64_t(1000), int64_t(1) << 17}) {
    std::vector<float> x(n, 2.f);
    scale_inplace(x.data(), n, 0.25);
    for (float v : x) ASSERT_EQ(v, 0.5f);
    EXPECT_TRUE(all_finite(x.data(), n));
    for (int64_t pos : {int64_t(0), n / 2, n - 1}) {
      for (float bad : {NAN, INFINITY, -INFINITY}) {
        std::vector<float> y = x;
        y[pos] = bad;
        EXPECT_FALSE(all_finite(y.data(), n)) << "n " << n << " pos " << pos << " " << bad;
      }
    }
    Vec d(n, std::numeric_limits<double>::max());
    EXPECT_TRUE(all_finite(d.data(), n));
    d[n - 1] = NAN;
    EXPECT_FALSE(all_finite(d.data(), n));
  }
}

// ---------------------------------------------------------------------------------------
// float agrees with double

TEST(FloatVsDouble, AllKernelsAgree) {
  const int64_t rows = 16, dim = 96, V = 500, F = 80;
  const double tol = 1e-5;
  {  // rmsnorm
    const Vec x = randn(rows * dim, 80), w = randn(dim, 81), dy = randn(rows * dim, 82);
    Vec y(rows * dim), rs(rows), dx(rows * dim, 0.0), dw(dim, 0.0);
    rmsnorm_forward(x.data(), w.data(), rows, dim, 1e-5, y.data(), rs.data());
    rmsnorm_backward(dy.data(), x.data(), w.data(), rs.data(), rows, dim, dx.data(), dw.data());
    std::vector<float> xf = to_float(x), wf = to_float(w), dyf = to_float(dy), yf(rows * dim),
                       rsf(rows), dxf(rows * dim, 0.f), dwf(dim, 0.f);
    rmsnorm_forward(xf.data(), wf.data(), rows, dim, 1e-5, yf.data(), rsf.data());
    rmsnorm_backward(dyf.data(), xf.data(), wf.data(), rsf.data(), rows, dim, dxf.data(),
                     dwf.data());
    EXPECT_LT(rel_err(yf, y), tol);
    EXPECT_LT(rel_err(dxf, dx), tol);
    EXPECT_LT(rel_err(dwf, dw), tol);
  }
  {  // rope
    const Vec x = randn(rows * dim, 83);
    Vec y = x;
    std::vector<float> yf = to_float(x);
    rope_forward(y.data(), dim, 2, rows / 2, 3, 32, 100, 10000.0);
    rope_forward(yf.data(), dim, 2, rows / 2, 3, 32, 100, 10000.0);
    EXPECT_LT(rel_err(yf, y), tol);
    rope_backward(y.data(), dim, 2, rows / 2, 3, 32, 100, 10000.0);
    rope_backward(yf.data(), dim, 2, rows / 2, 3, 32, 100, 10000.0);
    EXPECT_LT(rel_err(yf, y), tol);
  }
  {  // swiglu
    const Vec buf = randn(rows * 2 * F, 84, 3.0), d = randn(rows * F, 85);
    Vec out(rows * F), db(rows * 2 * F, 0.0);
    swiglu_forward(buf.data(), buf.data() + F, 2 * F, out.data(), rows, F);
    swiglu_backward(d.data(), buf.data(), buf.data() + F, 2 * F, db.data(), db.data() + F, rows, F);
    std::vector<float> bf = to_float(buf), df = to_float(d), of(rows * F), dbf(rows * 2 * F, 0.f);
    swiglu_forward(bf.data(), bf.data() + F, 2 * F, of.data(), rows, F);
    swiglu_backward(df.data(), bf.data(), bf.data() + F, 2 * F, dbf.data(), dbf.data() + F, rows,
                    F);
    EXPECT_LT(rel_err(of, out), tol);
    EXPECT_LT(rel_err(dbf, db), tol);
  }
  {  // cross-entropy
    const Vec logits = randn(rows * V, 86, 4.0), dl = randn(rows, 87);
    std::vector<int32_t> t(rows);
    for (int64_t r = 0; r < rows; ++r) t[r] = r == 3 ? -1 : static_cast<int32_t>((r * 31) % V);
    Vec loss(rows), lse(rows), d(rows * V);
    cross_entropy_forward(logits.data(), t.data(), rows, V, loss.data(), lse.data());
    cross_entropy_backward(logits.data(), lse.data(), t.data(), dl.data(), rows, V, d.data());
    std::vector<float> lf = to_float(logits), dlf = to_float(dl), lossf(rows), lsef(rows),
                       dfl(rows * V);
    cross_entropy_forward(lf.data(), t.data(), rows, V, lossf.data(), lsef.data());
    cross_entropy_backward(lf.data(), lsef.data(), t.data(), dlf.data(), rows, V, dfl.data());
    EXPECT_LT(rel_err(lossf, loss), tol);
    EXPECT_LT(rel_err(lsef, lse), tol);
    EXPECT_LT(rel_err(dfl, d), tol);
  }
  {  // embedding: a copy, so exact
    const Vec table = randn(V * 8, 88);
    const std::vector<int32_t> tok = {4, 499, 0, 4};
    Vec out(4 * 8);
    std::vector<float> tf = to_float(table), of(4 * 8);
    embedding_forward(tok.data(), 4, table.data(), V, 8, out.data());
    embedding_forward(tok.data(), 4, tf.data(), V, 8, of.data());
    EXPECT_LT(rel_err(of, out), 1e-7);
  }
  {  // sum of squares
    const Vec x = randn(5000, 89);
    const std::vector<float> xf = to_float(x);
    EXPECT_NEAR(sum_of_squares(xf.data(), 5000), sum_of_squares(x.data(), 5000),
                tol * sum_of_squares(x.data(), 5000));
  }
}

// ---------------------------------------------------------------------------------------
// vec::exp, the float exp behind softmax and SiLU

TEST(VecExp, WithinTwoUlpOverTheWholeRange) {
  auto ulp_diff = [](float a, float b) {
    int32_t ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    // Map the sign-magnitude bit patterns onto a monotonic integer line.
    const int64_t la = ia < 0 ? int64_t(INT32_MIN) - ia : ia,
                  lb = ib < 0 ? int64_t(INT32_MIN) - ib : ib;
    return std::abs(la - lb);
  };
  int64_t worst = 0;
  float worst_x = 0;
  auto check = [&](float x) {
    const float got = llm::cpu::vec::exp(x);
    const float want = static_cast<float>(std::exp(static_cast<double>(x)));
    const int64_t u = ulp_diff(got, want);
    if (u > worst) worst = u, worst_x = x;
  };
  for (uint32_t bits = 0; bits < 0xff800000u; bits += 997) {  // every 997th float of either sign
    float x;
    std::memcpy(&x, &bits, 4);
    if (x <= 89.f) check(x);
    const uint32_t nb = bits | 0x80000000u;
    std::memcpy(&x, &nb, 4);
    if (x >= -104.f) check(x);
  }
  for (float x = -104.f; x <= 89.f; x += 0.001f) check(x);  // dense in the interesting range
  EXPECT_LE(worst, 2) << "at x = " << worst_x;
  EXPECT_EQ(llm::cpu::vec::exp(0.f), 1.f);
  EXPECT_EQ(llm::cpu::vec::exp(-INFINITY), 0.f);
  EXPECT_EQ(llm::cpu::vec::exp(-200.f), 0.f);
  EXPECT_EQ(llm::cpu::vec::exp(INFINITY), INFINITY);
  EXPECT_EQ(llm::cpu::vec::exp(89.f), INFINITY);
  EXPECT_TRUE(std::isnan(llm::cpu::vec::exp(NAN)));
}
