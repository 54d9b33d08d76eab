#include "core/cpu/attention.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

using llm::cpu::attention_backward;
using llm::cpu::attention_forward;

namespace {

struct Shape {
  int64_t B, T, H, G, D;
};

// q, k, v (and dq, dk, dv) live in one fused row per token, as the QKV
// projection writes them: [q: H*D | k: G*D | v: G*D | pad], so ldq = ldk = ldv
// > H*D. The output rows are padded too.
template <class F>
struct Problem {
  int64_t B, Tq, Tk, H, G, D, pad;
  double scale;
  std::vector<F> qkv;  // [B*Tk rows][ld]; rows of q use only the first B*Tq rows
  std::vector<F> dout;

  int64_t ld() const { return H * D + 2 * G * D + pad; }
  int64_t ldo() const { return H * D + 3; }
  F* q() { return qkv.data(); }
  F* k() { return qkv.data() + H * D; }
  F* v() { return qkv.data() + H * D + G * D; }
  const F* q() const { return qkv.data(); }
  const F* k() const { return qkv.data() + H * D; }
  const F* v() const { return qkv.data() + H * D + G * D; }
  size_t out_size() const { return static_cast<size_t>(B * Tq * ldo()); }
  size_t lse_size() const { return static_cast<size_t>(B * H * Tq); }
};

template <class F>
Problem<F> make_problem(Shape s, uint32_t seed, int64_t Tq = -1, double amp = 1.0) {
  Problem<F> p{s.B, Tq < 0 ? s.T : Tq, s.T, s.H, s.G, s.D, 5, 1.0 / std::sqrt(double(s.D)), {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, amp);
  p.qkv.resize(static_cast<size_t>(s.B * s.T * p.ld()));
  for (auto& x : p.qkv) x = static_cast<F>(nd(rng));
  std::normal_distribution<double> nd1(0.0, 1.0);
  p.dout.resize(p.out_size());
  for (auto& x : p.dout) x = static_cast<F>(nd1(rng));
  return p;
}

template <class F, class G>
Problem<F> convert(const Problem<G>& p) {
  Problem<F> r{p.B, p.Tq, p.Tk, p.H, p.G, p.D, p.pad, p.scale, {}, {}};
  r.qkv.assign(p.qkv.begin(), p.qkv.end());
  r.dout.assign(p.dout.begin(), p.dout.end());
  return r;
}

template <class F>
void forward(const Problem<F>& p, std::vector<F>& out, std::vector<F>& lse) {
  out.assign(p.out_size(), F(0));
  lse.assign(p.lse_size(), F(0));
  attention_forward<F>(p.q(), p.ld(), p.k(), p.ld(), p.v(), p.ld(), out.data(), p.ldo(),
                       lse.data(), p.B, p.Tq, p.Tk, p.H, p.G, p.D, p.scale);
}

// Gradients land in a buffer shaped like qkv (same strides), zero first.
template <class F>
std::vector<F> backward(const Problem<F>& p, const std::vector<F>& out, const std::vector<F>& lse) {
  std::vector<F> g(p.qkv.size(), F(0));
  attention_backward<F>(p.dout.data(), p.ldo(), p.q(), p.ld(), p.k(), p.ld(), p.v(), p.ld(),
                        out.data(), lse.data(), g.data(), g.data() + p.H * p.D,
                        g.data() + p.H * p.D + p.G * p.D, p.B, p.Tk, p.H, p.G, p.D, p.scale);
  return g;
}

// Naive reference: full softmax(q k^T * scale + causal mask) v in double.
void reference(const Problem<double>& p, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(p.out_size(), 0.0);
  lse.assign(p.lse_size(), 0.0);
  const int64_t ld = p.ld(), rep = p.H / p.G;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t t = 0; t < p.Tq; ++t) {
        const int64_t pos = p.Tk - p.Tq + t, g = h / rep;
        const double* qr = p.q() + (b * p.Tq + t) * ld + h * p.D;
        std::vector<double> sc(p.Tk, -INFINITY);
        double mx = -INFINITY;
        for (int64_t s = 0; s <= pos; ++s) {
          const double* kr = p.k() + (b * p.Tk + s) * ld + g * p.D;
          double dot = 0;
          for (int64_t d = 0; d < p.D; ++d) dot += qr[d] * kr[d];
          sc[s] = dot * p.scale;
          mx = std::max(mx, sc[s]);
        }
        double sum = 0;
        for (int64_t s = 0; s <= pos; ++s) sum += std::exp(sc[s] - mx);
        double* orow = out.data() + (b * p.Tq + t) * p.ldo() + h * p.D;
        for (int64_t s = 0; s <= pos; ++s) {
          const double w = std::exp(sc[s] - mx) / sum;
          const double* vr = p.v() + (b * p.Tk + s) * ld + g * p.D;
          for (int64_t d = 0; d < p.D; ++d) orow[d] += w * vr[d];
        }
        lse[(b * p.H + h) * p.Tq + t] = mx + std::log(sum);
      }
}

double objective(const Problem<double>& p, const std::vector<double>& out) {
  double f = 0;
  for (size_t i = 0; i < out.size(); ++i) f += out[i] * p.dout[i];
  return f;
}

double max_abs(const std::vector<double>& a) {
  double m = 0;
  for (double x : a) m = std::max(m, std::abs(x));
  return m;
}

// Indices (into qkv) of the real q, k, v elements, i.e. not the row padding.
std::vector<size_t> data_indices(const Problem<double>& p) {
  std::vector<size_t> idx;
  const int64_t used = p.H * p.D + 2 * p.G * p.D;
  for (int64_t r = 0; r < p.B * p.Tk; ++r)
    for (int64_t c = 0; c < used; ++c) idx.push_back(static_cast<size_t>(r * p.ld() + c));
  return idx;
}

const Shape kShapes[] = {
    {1, 1, 1, 1, 8},   {2, 7, 4, 2, 8},   {2, 65, 4, 1, 16}, {1, 130, 4, 4, 8},
    {2, 130, 4, 2, 16}, {1, 64, 2, 1, 16}, {1, 200, 2, 2, 32}, {1, 33, 3, 3, 20},
    {1, 70, 2, 1, 80},  {1, 65, 2, 2, 128},
};

}  // namespace

TEST(Attention, ForwardMatchesNaiveReference) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(testing::Message() << "B=" << s.B << " T=" << s.T << " H=" << s.H << " G=" << s.G
                                    << " D=" << s.D);
    auto p = make_problem<double>(s, 1, -1, 1.5);
    std::vector<double> out, lse, ro, rl;
    forward(p, out, lse);
    reference(p, ro, rl);
    for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ro[i], 1e-12) << i;
    for (size_t i = 0; i < lse.size(); ++i) ASSERT_NEAR(lse[i], rl[i], 1e-12) << i;
  }
}

TEST(Attention, HandCheckedTwoTokens) {
  // T=2, H=G=1, D=1, scale 1. Query 0 sees key 0 only. Query 1 scores
  // q1*k0 = 0 and q1*k1 = ln 3: weights 1/4, 3/4.
  const double ln3 = std::log(3.0);
  const double q[2] = {0.5, 1.0}, k[2] = {0.0, ln3}, v[2] = {2.0, 6.0};
  double out[2], lse[2];
  attention_forward<double>(q, 1, k, 1, v, 1, out, 1, lse, 1, 2, 2, 1, 1, 1, 1.0);
  EXPECT_NEAR(out[0], 2.0, 1e-15);
  EXPECT_NEAR(out[1], 0.25 * 2.0 + 0.75 * 6.0, 1e-14);  // 5
  EXPECT_NEAR(lse[0], 0.0, 1e-15);                      // q0*k0 = 0
  EXPECT_NEAR(lse[1], std::log(4.0), 1e-14);            // log(e^0 + e^ln3)

  // dout = 1 everywhere. Row 1: D = out1 = 5; dS = w*(v - D) = (-3/4, 3/4).
  // Row 0: dS00 = 1*(2 - 2) = 0.
  const double dout[2] = {1.0, 1.0};
  double dq[2] = {0, 0}, dk[2] = {0, 0}, dv[2] = {0, 0};
  attention_backward<double>(dout, 1, q, 1, k, 1, v, 1, out, lse, dq, dk, dv, 1, 2, 1, 1, 1, 1.0);
  EXPECT_NEAR(dv[0], 1.0 + 0.25, 1e-14);
  EXPECT_NEAR(dv[1], 0.75, 1e-14);
  EXPECT_NEAR(dq[0], 0.0, 1e-14);
  EXPECT_NEAR(dq[1], -0.75 * 0.0 + 0.75 * ln3, 1e-14);
  EXPECT_NEAR(dk[0], 0.0 * 0.5 + -0.75 * 1.0, 1e-14);
  EXPECT_NEAR(dk[1], 0.75 * 1.0, 1e-14);
}

TEST(Attention, GradientsMatchFiniteDifferences) {
  const Shape shapes[] = {{2, 7, 4, 2, 8}, {1, 65, 4, 1, 8}, {1, 130, 2, 2, 8}, {1, 9, 4, 4, 16}};
  for (const Shape& s : shapes) {
    SCOPED_TRACE(testing::Message() << "B=" << s.B << " T=" << s.T << " H=" << s.H << " G=" << s.G
                                    << " D=" << s.D);
    auto p = make_problem<double>(s, 7, -1, 1.0);
    std::vector<double> out, lse;
    forward(p, out, lse);
    const std::vector<double> grad = backward(p, out, lse);

    std::vector<size_t> idx = data_indices(p);
    if (idx.size() > 400) {  // sample the larger shapes
      std::mt19937 rng(3);
      std::shuffle(idx.begin(), idx.end(), rng);
      idx.resize(400);
    }
    const double eps = 1e-5;
    std::vector<double> fd(idx.size()), an(idx.size());
    for (size_t n = 0; n < idx.size(); ++n) {
      const size_t i = idx[n];
      const double x0 = p.qkv[i];
      std::vector<double> o2, l2;
      p.qkv[i] = x0 + eps;
      forward(p, o2, l2);
      const double fp = objective(p, o2);
      p.qkv[i] = x0 - eps;
      forward(p, o2, l2);
      const double fm = objective(p, o2);
      p.qkv[i] = x0;
      fd[n] = (fp - fm) / (2 * eps);
      an[n] = grad[i];
    }
    double err = 0;
    for (size_t n = 0; n < idx.size(); ++n) err = std::max(err, std::abs(fd[n] - an[n]));
    EXPECT_LT(err / max_abs(fd), 1e-6);
    // Padding columns of the fused buffer are never written.
    const int64_t used = p.H * p.D + 2 * p.G * p.D;
    for (int64_t r = 0; r < p.B * p.Tk; ++r)
      for (int64_t c = used; c < p.ld(); ++c) ASSERT_EQ(grad[r * p.ld() + c], 0.0);
  }
}

TEST(Attention, DecodeMatchesLastRowsOfFullForward) {
  const Shape shapes[] = {{2, 1, 4, 2, 8}, {2, 65, 4, 2, 8}, {1, 130, 4, 1, 16}, {2, 200, 2, 2, 32}};
  for (const Shape& s : shapes) {
    for (int64_t tq : {int64_t(1), int64_t(3), int64_t(70)}) {
      if (tq > s.T) continue;
      SCOPED_TRACE(testing::Message() << "T=" << s.T << " Tq=" << tq << " H=" << s.H
                                      << " G=" << s.G);
      auto full = make_problem<double>(s, 11);
      std::vector<double> fo, fl;
      forward(full, fo, fl);
      // Decode problem: same k/v cache, queries are the last tq rows of each batch.
      Problem<double> dec = full;
      dec.Tq = tq;
      std::vector<double> qkv(full.qkv.size(), 0.0);
      const int64_t ld = full.ld();
      for (int64_t b = 0; b < s.B; ++b)
        for (int64_t t = 0; t < s.T; ++t) {
          // k and v rows keep their place; q rows move to (b*tq + t').
          std::memcpy(&qkv[(b * s.T + t) * ld + s.H * s.D], &full.qkv[(b * s.T + t) * ld + s.H * s.D],
                      sizeof(double) * 2 * s.G * s.D);
        }
      for (int64_t b = 0; b < s.B; ++b)
        for (int64_t t = 0; t < tq; ++t)
          std::memcpy(&qkv[(b * tq + t) * ld], &full.qkv[(b * s.T + s.T - tq + t) * ld],
                      sizeof(double) * s.H * s.D);
      dec.qkv = qkv;
      std::vector<double> dout, dl;
      forward(dec, dout, dl);
      for (int64_t b = 0; b < s.B; ++b)
        for (int64_t t = 0; t < tq; ++t) {
          const int64_t tf = s.T - tq + t;
          for (int64_t c = 0; c < s.H * s.D; ++c)
            ASSERT_NEAR(dout[(b * tq + t) * dec.ldo() + c], fo[(b * s.T + tf) * full.ldo() + c],
                        1e-13);
          for (int64_t h = 0; h < s.H; ++h)
            ASSERT_NEAR(dl[(b * s.H + h) * tq + t], fl[(b * s.H + h) * s.T + tf], 1e-13);
        }
    }
  }
}

template <class F>
void check_deterministic() {
  const Shape s{3, 150, 8, 2, 16};
  auto p = make_problem<F>(s, 5);
  const int saved = omp_get_max_threads();
  std::vector<F> ref_out, ref_lse, ref_g;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::vector<F> out, lse;
    forward(p, out, lse);
    std::vector<F> g = backward(p, out, lse);
    if (threads == 1) {
      ref_out = out, ref_lse = lse, ref_g = g;
      continue;
    }
    EXPECT_EQ(0, std::memcmp(out.data(), ref_out.data(), out.size() * sizeof(F))) << threads;
    EXPECT_EQ(0, std::memcmp(lse.data(), ref_lse.data(), lse.size() * sizeof(F))) << threads;
    EXPECT_EQ(0, std::memcmp(g.data(), ref_g.data(), g.size() * sizeof(F))) << threads;
  }
  omp_set_num_threads(saved);
}

TEST(Attention, BitwiseDeterministicAcrossThreadCounts) {
  check_deterministic<float>();
  check_deterministic<double>();
}

TEST(Attention, BackwardAccumulates) {
  const Shape s{2, 70, 4, 2, 8};
  auto p = make_problem<double>(s, 9);
  std::vector<double> out, lse;
  forward(p, out, lse);
  const std::vector<double> g = backward(p, out, lse);
  std::vector<double> acc(p.qkv.size());
  std::mt19937 rng(4);
  std::normal_distribution<double> nd;
  for (auto& x : acc) x = nd(rng);
  const std::vector<double> start = acc;
  for (int rep = 0; rep < 2; ++rep)
    attention_backward<double>(p.dout.data(), p.ldo(), p.q(), p.ld(), p.k(), p.ld(), p.v(), p.ld(),
                               out.data(), lse.data(), acc.data(), acc.data() + p.H * p.D,
                               acc.data() + p.H * p.D + p.G * p.D, p.B, p.Tk, p.H, p.G, p.D,
                               p.scale);
  for (size_t i = 0; i < acc.size(); ++i) ASSERT_NEAR(acc[i], start[i] + 2 * g[i], 1e-13) << i;
}

TEST(Attention, FloatAgreesWithDouble) {
  const Shape shapes[] = {{2, 130, 4, 2, 16}, {1, 257, 8, 2, 32}, {1, 100, 4, 1, 64},
                          {1, 9, 2, 2, 8},    {1, 77, 2, 1, 80},  {1, 66, 2, 2, 128}};
  for (const Shape& s : shapes) {
    SCOPED_TRACE(testing::Message() << "T=" << s.T << " H=" << s.H << " G=" << s.G << " D=" << s.D);
    auto pd = make_problem<double>(s, 21, -1, 1.5);
    auto pf = convert<float>(pd);
    std::vector<double> od, ld;
    std::vector<float> of, lf;
    forward(pd, od, ld);
    forward(pf, of, lf);
    const std::vector<double> gd = backward(pd, od, ld);
    const std::vector<float> gf = backward(pf, of, lf);
    auto rel = [](const auto& a, const std::vector<double>& b) {
      double e = 0, m = 0;
      for (size_t i = 0; i < b.size(); ++i) {
        e = std::max(e, std::abs(double(a[i]) - b[i]));
        m = std::max(m, std::abs(b[i]));
      }
      return e / m;
    };
    EXPECT_LT(rel(of, od), 1e-5);
    EXPECT_LT(rel(lf, ld), 1e-5);
    // Compare q, k and v gradients separately (their scales differ).
    const int64_t ld_ = pd.ld();
    for (auto [c0, c1] : {std::pair<int64_t, int64_t>{0, s.H * s.D},
                          {s.H * s.D, s.H * s.D + s.G * s.D},
                          {s.H * s.D + s.G * s.D, s.H * s.D + 2 * s.G * s.D}}) {
      std::vector<double> a, b;
      for (int64_t r = 0; r < s.B * s.T; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          a.push_back(gf[r * ld_ + c]);
          b.push_back(gd[r * ld_ + c]);
        }
      EXPECT_LT(rel(a, b), 1e-5) << "columns " << c0 << ".." << c1;
    }
  }
}

TEST(Attention, FloatHandlesLargeScoresAndMaskedTail) {
  // Large logits stress the running max; the output must stay finite and
  // match double.
  const Shape s{1, 97, 2, 1, 16};
  auto pd = make_problem<double>(s, 2, -1, 4.0);
  auto pf = convert<float>(pd);
  std::vector<double> od, ld;
  std::vector<float> of, lf;
  forward(pd, od, ld);
  forward(pf, of, lf);
  double e = 0, m = 0;
  for (size_t i = 0; i < od.size(); ++i) {
    ASSERT_TRUE(std::isfinite(of[i]));
    e = std::max(e, std::abs(double(of[i]) - od[i]));
    m = std::max(m, std::abs(od[i]));
  }
  EXPECT_LT(e / m, 1e-5);
}

TEST(Attention, RejectsBadShapes) {
  std::vector<double> buf(64, 0.0), out(64), lse(64);
  // H not a multiple of G.
  EXPECT_THROW(attention_forward<double>(buf.data(), 8, buf.data(), 8, buf.data(), 8, out.data(), 8,
                                         lse.data(), 1, 2, 2, 3, 2, 1, 1.0),
               std::invalid_argument);
  // More queries than keys.
  EXPECT_THROW(attention_forward<double>(buf.data(), 8, buf.data(), 8, buf.data(), 8, out.data(), 8,
                                         lse.data(), 1, 3, 2, 1, 1, 1, 1.0),
               std::invalid_argument);
  EXPECT_THROW(attention_backward<double>(buf.data(), 8, buf.data(), 8, buf.data(), 8, buf.data(), 8,
                                          out.data(), lse.data(), buf.data(), buf.data(),
                                          buf.data(), 1, 2, 4, 3, 1, 1.0),
               std::invalid_argument);
}

TEST(Attention, NanPropagates) {
  // A NaN in one query must reach that query's output (the loss-spike guard
  // relies on it) and must not disturb other heads.
  for (int prec = 0; prec < 2; ++prec) {
    const Shape s{1, 70, 2, 1, 16};
    auto pd = make_problem<double>(s, 8);
    const int64_t t = 66, h = 1;
    pd.qkv[t * pd.ld() + h * s.D + 3] = NAN;
    auto check = [&](const auto& out, const auto& lse) {
      for (int64_t d = 0; d < s.D; ++d) EXPECT_TRUE(std::isnan(out[t * pd.ldo() + h * s.D + d]));
      EXPECT_TRUE(std::isnan(lse[h * s.T + t]));
      for (int64_t d = 0; d < s.D; ++d) EXPECT_TRUE(std::isfinite(out[t * pd.ldo() + d]));
    };
    if (prec == 0) {
      std::vector<double> out, lse;
      forward(pd, out, lse);
      check(out, lse);
    } else {
      auto pf = convert<float>(pd);
      std::vector<float> out, lse;
      forward(pf, out, lse);
      check(out, lse);
    }
  }
}
