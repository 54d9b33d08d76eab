#include "sweep/fit.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <nlopt.hpp>
#include <ostream>
#include <sstream>
#include <stdexcept>

#include "sweep/csv.h"
#include "sweep/plots.h"

namespace llm::sweep {

namespace fs = std::filesystem;
using nlohmann::json;

double ChinchillaLaw::G() const { return std::pow(alpha * A / (beta * B), 1.0 / (alpha + beta)); }

bool ChinchillaLaw::has_optimum() const {
  return alpha > 0 && beta > 0 && A > 0 && B > 0 && std::isfinite(alpha) && std::isfinite(beta) &&
         std::isfinite(A) && std::isfinite(B);
}

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Pre-computed logs of the observations: what the objective reads.
struct LogData {
  std::vector<double> ln_n, ln_d, ln_l;
  double delta = 1e-3;
};

LogData log_data(const std::vector<Observation>& obs, double delta) {
  LogData d;
  d.delta = delta;
  for (const auto& o : obs) {
    d.ln_n.push_back(std::log(o.n));
    d.ln_d.push_back(std::log(o.d));
    d.ln_l.push_back(std::log(o.loss));
  }
  return d;
}

// Summed Huber loss of r_i = LSE(a - alpha ln N_i, b - beta ln D_i, e) - ln L_i, and its gradient.
double objective(const LogData& data, const double* x, double* grad) {
  const double a = x[0], b = x[1], e = x[2], al = x[3], be = x[4];
  const double delta = data.delta;
  double f = 0, g[5] = {0, 0, 0, 0, 0};
  const std::size_t m = data.ln_n.size();
  for (std::size_t i = 0; i < m; ++i) {
    const double t1 = a - al * data.ln_n[i], t2 = b - be * data.ln_d[i], t3 = e;
    const double mx = std::max(t1, std::max(t2, t3));
    const double e1 = std::exp(t1 - mx), e2 = std::exp(t2 - mx), e3 = std::exp(t3 - mx);
    const double s = e1 + e2 + e3;
    const double r = mx + std::log(s) - data.ln_l[i];
    double dh;
    if (std::abs(r) <= delta) {
      f += 0.5 * r * r;
      dh = r;
    } else {
      f += delta * (std::abs(r) - 0.5 * delta);
      dh = r > 0 ? delta : -delta;
    }
    if (grad) {
      const double w1 = dh * e1 / s, w2 = dh * e2 / s, w3 = dh * e3 / s;
      g[0] += w1;
      g[1] += w2;
      g[2] += w3;
      g[3] -= w1 * data.ln_n[i];
      g[4] -= w2 * data.ln_d[i];
    }
  }
  if (grad)
    for (int k = 0; k < 5; ++k) grad[k] = g[k];
  return f;
}

double nlopt_objective(const std::vector<double>& x, std::vector<double>& grad, void* p) {
  return objective(*static_cast<const LogData*>(p), x.data(), grad.empty() ? nullptr : grad.data());
}

double residual_rms(const LogData& data, const std::array<double, 5>& x) {
  const std::size_t m = data.ln_n.size();
  double ss = 0;
  for (std::size_t i = 0; i < m; ++i) {
    const double t1 = x[0] - x[3] * data.ln_n[i], t2 = x[1] - x[4] * data.ln_d[i], t3 = x[2];
    const double mx = std::max(t1, std::max(t2, t3));
    const double r = mx + std::log(std::exp(t1 - mx) + std::exp(t2 - mx) + std::exp(t3 - mx)) - data.ln_l[i];
    ss += r * r;
  }
  return m ? std::sqrt(ss / static_cast<double>(m)) : kNaN;
}

// One L-BFGS run from x (overwritten with the result). Returns the objective there, or NaN.
double lbfgs(const LogData& data, std::array<double, 5>& x) {
  nlopt::opt opt(nlopt::LD_LBFGS, 5);
  opt.set_min_objective(nlopt_objective, const_cast<LogData*>(&data));
  opt.set_ftol_rel(1e-12);
  opt.set_xtol_rel(1e-10);
  opt.set_maxeval(4000);
  std::vector<double> v(x.begin(), x.end());
  double f = kNaN;
  try {
    opt.optimize(v, f);
  } catch (const nlopt::roundoff_limited&) {
    // v holds the best point found before round-off stopped progress: keep it.
  } catch (const std::exception&) {
    // NLOPT_FAILURE or an invalid step: v is still the best point NLopt evaluated.
  }
  for (double xi : v)
    if (!std::isfinite(xi)) return kNaN;
  std::copy(v.begin(), v.end(), x.begin());
  f = objective(data, x.data(), nullptr);
  return std::isfinite(f) ? f : kNaN;
}

ChinchillaLaw law_of(const std::array<double, 5>& x) {
  ChinchillaLaw l;
  l.A = std::exp(x[0]);
  l.B = std::exp(x[1]);
  l.E = std::exp(x[2]);
  l.alpha = x[3];
  l.beta = x[4];
  return l;
}

Approach3Fit finish(const LogData& data, const std::array<double, 5>& x, double f) {
  Approach3Fit r;
  r.x = x;
  r.objective = f;
  r.law = law_of(x);
  r.residual_rms = residual_rms(data, x);
  return r;
}

void check_observations(const std::vector<Observation>& obs) {
  if (obs.size() < 5)
    throw std::runtime_error("approach 3 fits 5 parameters (E, A, B, alpha, beta) and needs at least 5 finished runs; "
                             "got " + std::to_string(obs.size()) + ": let more runs finish or add runs to the sweep");
  for (const auto& o : obs)
    if (!(o.n > 0 && o.d > 0 && o.loss > 0) || !std::isfinite(o.n) || !std::isfinite(o.d) || !std::isfinite(o.loss))
      throw std::runtime_error("run '" + o.run + "': N, D and the loss must be positive finite numbers");
}

// Least squares y = p + q x; returns false when x has no spread.
bool line_fit(const std::vector<double>& x, const std::vector<double>& y, double& p, double& q) {
  const double n = static_cast<double>(x.size());
  if (x.size() < 2) return false;
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < x.size(); ++i) mx += x[i], my += y[i];
  mx /= n;
  my /= n;
  double sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) sxx += (x[i] - mx) * (x[i] - mx), sxy += (x[i] - mx) * (y[i] - my);
  if (!(sxx > 1e-12 * std::max(1.0, mx * mx))) return false;
  q = sxy / sxx;
  p = my - q * mx;
  return true;
}

// L(N, C/(6N)) - E as a function of u = ln N, scaled (compute_optimal's numeric check).
struct IsoFlopLine {
  double A, Bc, alpha, beta, scale;
};

double isoflop_line(const std::vector<double>& u, std::vector<double>& grad, void* p) {
  const IsoFlopLine& q = *static_cast<const IsoFlopLine*>(p);
  const double t1 = q.A * std::exp(-q.alpha * u[0]), t2 = q.Bc * std::exp(q.beta * u[0]);
  if (!grad.empty()) grad[0] = (-q.alpha * t1 + q.beta * t2) / q.scale;
  return (t1 + t2) / q.scale;
}

}  // namespace

double approach3_objective(const std::vector<Observation>& obs, const std::array<double, 5>& x, double huber_delta,
                           std::array<double, 5>* grad) {
  const LogData data = log_data(obs, huber_delta);
  return objective(data, x.data(), grad ? grad->data() : nullptr);
}

Approach3Fit fit_approach3(const std::vector<Observation>& obs, StartGrid grid, double huber_delta) {
  check_observations(obs);
  const LogData data = log_data(obs, huber_delta);
  std::vector<double> exps, es, abs_;
  const double step = grid == StartGrid::paper ? 1 : 2;  // thin: every other grid value
  for (double v = 0; v <= 2 + 1e-9; v += 0.5 * step) exps.push_back(v);
  for (double v = -1; v <= 1 + 1e-9; v += 0.5 * step) es.push_back(v);
  for (double v = 0; v <= 25 + 1e-9; v += 5 * step) abs_.push_back(v);
  Approach3Fit best;
  best.objective = kNaN;
  int starts = 0, failed = 0;
  for (double al : exps)
    for (double be : exps)
      for (double e : es)
        for (double a : abs_)
          for (double b : abs_) {
            std::array<double, 5> x{a, b, e, al, be};
            ++starts;
            const double f = lbfgs(data, x);
            if (!std::isfinite(f)) {
              ++failed;
              continue;
            }
            if (!std::isfinite(best.objective) || f < best.objective) best = finish(data, x, f);
          }
  if (!std::isfinite(best.objective))
    throw std::runtime_error("approach 3: L-BFGS failed from every one of the " + std::to_string(starts) +
                             " starting points; check the losses (are they in nats and positive?)");
  best.starts = starts;
  best.starts_failed = failed;
  return best;
}

Approach3Fit refit_approach3(const std::vector<Observation>& obs, const std::array<double, 5>& x0, double huber_delta) {
  check_observations(obs);
  const LogData data = log_data(obs, huber_delta);
  std::array<double, 5> x = x0;
  const double f = lbfgs(data, x);
  Approach3Fit r = finish(data, x, f);
  r.starts = 1;
  r.starts_failed = std::isfinite(f) ? 0 : 1;
  return r;
}

Allocation compute_optimal(const ChinchillaLaw& law, double flops) {
  if (!law.has_optimum())
    throw std::runtime_error("the fitted law has alpha = " + std::to_string(law.alpha) + ", beta = " +
                             std::to_string(law.beta) + ": with a non-positive exponent there is no compute-optimal "
                             "allocation; the sweep needs a wider range of N and D");
  if (!(flops > 0) || !std::isfinite(flops))
    throw std::runtime_error("compute budget " + std::to_string(flops) + " FLOPs: budgets must be positive");
  Allocation r;
  r.flops = flops;
  const double c6 = flops / 6.0;
  const double g = law.G();
  r.n_opt = g * std::pow(c6, law.a());
  r.d_opt = std::pow(c6, law.b()) / g;
  r.tokens_per_param = r.d_opt / r.n_opt;
  r.loss = law.loss(r.n_opt, r.d_opt);
  // Numerically: minimise f(u) = A e^{-alpha u} + B (C/6)^{-beta} e^{beta u} over u = ln N (L minus E;
  // convex in u), divided by its value at the start u0 = ln sqrt(C/6) so the tolerances are relative.
  IsoFlopLine line{law.A, law.B * std::pow(c6, -law.beta), law.alpha, law.beta, 1.0};
  const double u0 = 0.5 * std::log(c6);
  {
    std::vector<double> no_grad;
    line.scale = isoflop_line({u0}, no_grad, &line);
  }
  nlopt::opt opt(nlopt::LD_LBFGS, 1);
  opt.set_min_objective(isoflop_line, &line);
  opt.set_xtol_abs(1e-12);
  opt.set_ftol_rel(1e-15);
  opt.set_maxeval(1000);
  std::vector<double> u{u0};
  double f = 0;
  try {
    opt.optimize(u, f);
  } catch (const nlopt::roundoff_limited&) {
    // u is the best point found: at this precision that is the minimum.
  } catch (const std::exception&) {
    // NLOPT_FAILURE: u is still the best point evaluated.
  }
  r.n_opt_numeric = std::exp(u[0]);
  r.d_opt_numeric = c6 / r.n_opt_numeric;
  return r;
}

Approach2Fit fit_approach2(const std::vector<Observation>& obs) {
  Approach2Fit r;
  std::vector<IsoFlopCurve> groups;
  for (const auto& o : obs) {
    if (!(o.budget > 0)) continue;
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const IsoFlopCurve& g) { return std::abs(g.flops - o.budget) <= 1e-6 * g.flops; });
    if (it == groups.end()) {
      groups.push_back(IsoFlopCurve{});
      groups.back().flops = o.budget;
      it = groups.end() - 1;
    }
    it->obs.push_back(o);
  }
  std::sort(groups.begin(), groups.end(), [](const auto& x, const auto& y) { return x.flops < y.flops; });
  if (groups.empty()) r.notes.push_back("approach 2 skipped: no run has an IsoFLOP budget (the sweep's D axis is tokens)");
  std::vector<double> lc, ln, ld;
  for (auto& g : groups) {
    g.points = static_cast<int>(g.obs.size());
    std::vector<double> xs;
    for (const auto& o : g.obs) xs.push_back(std::log(o.n));
    g.n_min = std::exp(*std::min_element(xs.begin(), xs.end()));
    g.n_max = std::exp(*std::max_element(xs.begin(), xs.end()));
    std::vector<double> distinct = xs;
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end(), [](double p, double q) { return std::abs(p - q) < 1e-9; }),
                   distinct.end());
    char cbuf[32];
    std::snprintf(cbuf, sizeof cbuf, "%.3g", g.flops);
    if (distinct.size() < 3) {
      g.note = "skipped: " + std::to_string(distinct.size()) + " distinct model size(s) at C = " + cbuf +
               " FLOPs; a parabola needs at least 3";
      r.notes.push_back("approach 2, C = " + std::string(cbuf) + ": " + g.note);
      continue;
    }
    // Least squares on centred x = ln N - mean for conditioning: y = p0 + p1 t + p2 t^2.
    double mean = 0;
    for (double x : xs) mean += x;
    mean /= static_cast<double>(xs.size());
    double M[3][4] = {};
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double t = xs[i] - mean, y = g.obs[i].loss;
      const double phi[3] = {1, t, t * t};
      for (int a = 0; a < 3; ++a) {
        for (int b = 0; b < 3; ++b) M[a][b] += phi[a] * phi[b];
        M[a][3] += phi[a] * y;
      }
    }
    // Gaussian elimination with partial pivoting on the 3x3 normal equations.
    bool singular = false;
    for (int c = 0; c < 3 && !singular; ++c) {
      int piv = c;
      for (int rr = c + 1; rr < 3; ++rr)
        if (std::abs(M[rr][c]) > std::abs(M[piv][c])) piv = rr;
      if (std::abs(M[piv][c]) < 1e-300) singular = true;
      for (int k = 0; k < 4; ++k) std::swap(M[c][k], M[piv][k]);
      for (int rr = 0; rr < 3 && !singular; ++rr) {
        if (rr == c) continue;
        const double f = M[rr][c] / M[c][c];
        for (int k = 0; k < 4; ++k) M[rr][k] -= f * M[c][k];
      }
    }
    if (singular) {
      g.note = "skipped: the parabola's normal equations are singular";
      r.notes.push_back("approach 2, C = " + std::string(cbuf) + ": " + g.note);
      continue;
    }
    const double p0 = M[0][3] / M[0][0], p1 = M[1][3] / M[1][1], p2 = M[2][3] / M[2][2];
    // Back to x = ln N: y = p0 + p1 (x - m) + p2 (x - m)^2.
    g.coeff = {p0 - p1 * mean + p2 * mean * mean, p1 - 2 * p2 * mean, p2};
    if (!(p2 > 0)) {
      g.note = "skipped: the loss is not convex in log N at this budget (no minimum); widen the range of N";
      r.notes.push_back("approach 2, C = " + std::string(cbuf) + ": " + g.note);
      continue;
    }
    const double tv = -p1 / (2 * p2);
    g.ok = true;
    g.n_opt = std::exp(mean + tv);
    g.d_opt = g.flops / (6 * g.n_opt);
    g.loss_min = p0 + p1 * tv + p2 * tv * tv;
    g.extrapolated = g.n_opt < g.n_min * (1 - 1e-9) || g.n_opt > g.n_max * (1 + 1e-9);
    if (g.extrapolated) {
      // Chinchilla's approach 2 needs each budget's minimum bracketed by the sampled sizes:
      // an extrapolated vertex says more about the parabola than about the loss.
      g.note = "the parabola's minimum lies outside the sampled N range: an extrapolation, left out of the power "
               "laws (sample sizes around it to use this budget)";
      r.notes.push_back("approach 2, C = " + std::string(cbuf) + ": " + g.note);
      continue;
    }
    lc.push_back(std::log(g.flops));
    ln.push_back(std::log(g.n_opt));
    ld.push_back(std::log(g.d_opt));
  }
  r.curves = std::move(groups);
  double p = 0, q = 0;
  if (line_fit(lc, ln, p, q)) {
    r.n_opt = {true, q, std::exp(p), static_cast<int>(lc.size())};
    line_fit(lc, ld, p, q);
    r.d_opt = {true, q, std::exp(p), static_cast<int>(lc.size())};
  } else if (!r.curves.empty()) {
    r.notes.push_back("approach 2: power laws need minima at 2 or more budgets; got " + std::to_string(lc.size()));
  }
  return r;
}

Bootstrap bootstrap_approach3(const std::vector<Observation>& obs, const Approach3Fit& best, int samples,
                              uint64_t seed, double huber_delta) {
  Bootstrap bs;
  bs.requested = samples;
  uint64_t state = seed;
  auto next = [&state] {  // SplitMix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  const std::size_t n = obs.size();
  std::vector<Observation> sample(n);
  for (int k = 0; k < samples; ++k) {
    for (std::size_t i = 0; i < n; ++i)
      sample[i] = obs[static_cast<std::size_t>((static_cast<unsigned __int128>(next()) * n) >> 64)];
    const LogData data = log_data(sample, huber_delta);
    std::array<double, 5> x = best.x;
    const double f = lbfgs(data, x);
    if (!std::isfinite(f)) {
      ++bs.failed;
      continue;
    }
    bs.fits.push_back(finish(data, x, f));
  }
  return bs;
}

double percentile(std::vector<double> v, double q) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

Results load_results(const std::string& results_csv, const std::string& n_column) {
  if (n_column != "n_params" && n_column != "n_non_embedding")
    throw std::runtime_error("N column '" + n_column + "': use n_params or n_non_embedding");
  const CsvTable t = read_csv_table(results_csv);
  const int c_run = t.require_column("run"), c_status = t.require_column("status");
  const int c_n = t.require_column(n_column), c_d = t.require_column("tokens");
  const int c_budget = t.require_column("flops_budget");
  const int c_train = t.require_column("final_train_loss"), c_val = t.require_column("final_val_loss");
  Results r;
  r.n_column = n_column;
  r.rows = static_cast<int>(t.rows.size());
  std::vector<std::size_t> done;
  for (std::size_t i = 0; i < t.rows.size(); ++i) {
    std::string s = t.rows[i][static_cast<std::size_t>(c_status)];
    s.erase(0, s.find_first_not_of(" \t"));
    s.erase(s.find_last_not_of(" \t") + 1);
    if (s == "done") done.push_back(i);
  }
  bool all_val = true;
  for (std::size_t i : done) all_val = all_val && t.number(i, c_val, false).has_value();
  r.loss_column = all_val ? "final_val_loss" : "final_train_loss";
  if (!all_val && !done.empty()) {
    int missing = 0;
    for (std::size_t i : done) missing += t.number(i, c_val, false).has_value() ? 0 : 1;
    r.notes.push_back(std::to_string(missing) + " of " + std::to_string(done.size()) +
                      " done runs have no final_val_loss: every run is fitted on final_train_loss instead");
  }
  const int c_loss = all_val ? c_val : c_train;
  for (std::size_t i : done) {
    Observation o;
    o.run = t.rows[i][static_cast<std::size_t>(c_run)];
    auto positive = [&](int c) {
      const double v = *t.number(i, c, true);
      if (!(v > 0))
        throw std::runtime_error(t.where(i) + ", column '" + t.header[static_cast<std::size_t>(c)] + "': " +
                                 std::to_string(v) + " must be positive for a done run");
      return v;
    };
    o.n = positive(c_n);
    o.d = positive(c_d);
    o.loss = positive(c_loss);
    const auto b = t.number(i, c_budget, false);
    if (b && !(*b > 0))
      throw std::runtime_error(t.where(i) + ", column 'flops_budget': a budget must be positive (or empty)");
    o.budget = b ? *b : 0;
    r.flops_6nd.push_back(6 * o.n * o.d);
    r.obs.push_back(o);
  }
  if (r.obs.size() < 5)
    throw std::runtime_error(results_csv + ": " + std::to_string(r.obs.size()) + " run(s) with status 'done' (of " +
                             std::to_string(r.rows) + " rows); the approach-3 fit has 5 parameters and needs at "
                             "least 5 finished runs: let the sweep finish (llm-sweep resumes) or add runs");
  return r;
}

namespace {

std::string fmt(double v, const char* f = "%.4g") {
  if (!std::isfinite(v)) return "n/a";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

void write_file(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(tmp.string() + ": cannot write (is the --out directory writable?)");
    out << text;
    out.flush();
    if (!out) throw std::runtime_error(tmp.string() + ": write failed (disk full?)");
  }
  fs::rename(tmp, p);
}

struct Ci {
  double lo = kNaN, hi = kNaN;
};

Ci ci_of(const Bootstrap& bs, double (*get)(const ChinchillaLaw&)) {
  std::vector<double> v;
  for (const auto& f : bs.fits) v.push_back(get(f.law));
  return {percentile(v, 2.5), percentile(v, 97.5)};
}

}  // namespace

FitReport run_fit(const std::string& results_csv, const std::string& out_dir, const std::vector<double>& budgets_in,
                  const FitOptions& opt, std::ostream& log) {
  if (opt.bootstrap < 0) throw std::runtime_error("--bootstrap must be 0 or more");
  FitReport rep;
  rep.results = load_results(results_csv, opt.n_column);
  const auto& obs = rep.results.obs;
  log << "llm-fit: " << obs.size() << " done runs of " << rep.results.rows << " in " << results_csv
      << "; loss = " << rep.results.loss_column << ", N = " << rep.results.n_column << ", D = tokens\n";
  for (const auto& n : rep.results.notes) log << "llm-fit: note: " << n << "\n";
  std::vector<std::string> notes = rep.results.notes;
  {
    std::vector<double> ns, ds;
    for (const auto& o : obs) ns.push_back(o.n), ds.push_back(o.d);
    std::sort(ns.begin(), ns.end());
    std::sort(ds.begin(), ds.end());
    if (ns.front() == ns.back() || ds.front() == ds.back())
      notes.push_back("every run has the same " + std::string(ns.front() == ns.back() ? "N" : "D") +
                      ": approach 3 cannot separate the two terms; sweep both axes");
  }

  // Budgets: given, else the sweep's IsoFLOP budgets, else the largest 6ND.
  std::vector<double> budgets = budgets_in;
  std::string budget_source = "given (--budgets)";
  if (budgets.empty()) {
    for (const auto& o : obs)
      if (o.budget > 0 && std::none_of(budgets.begin(), budgets.end(),
                                       [&](double b) { return std::abs(b - o.budget) <= 1e-6 * b; }))
        budgets.push_back(o.budget);
    budget_source = "the sweep's IsoFLOP budgets";
    if (budgets.empty()) {
      budgets.push_back(*std::max_element(rep.results.flops_6nd.begin(), rep.results.flops_6nd.end()));
      budget_source = "the largest 6ND among the runs";
    }
  }
  for (double b : budgets)
    if (!(b > 0) || !std::isfinite(b)) throw std::runtime_error("--budgets: " + fmt(b) + " is not a positive FLOP count");
  std::sort(budgets.begin(), budgets.end());

  // Approach 3.
  rep.fit = fit_approach3(obs, opt.grid, opt.huber_delta);
  const ChinchillaLaw& law = rep.fit.law;
  log << "llm-fit: approach 3 (" << rep.fit.starts << " starts): E " << fmt(law.E) << ", A " << fmt(law.A) << ", B "
      << fmt(law.B) << ", alpha " << fmt(law.alpha) << ", beta " << fmt(law.beta) << "\n";
  if (opt.bootstrap > 0) {
    rep.boot = bootstrap_approach3(obs, rep.fit, opt.bootstrap, opt.seed, opt.huber_delta);
    log << "llm-fit: bootstrap: " << rep.boot.fits.size() << " of " << opt.bootstrap << " refits succeeded\n";
  }
  const bool optimum = law.has_optimum();
  if (optimum) {
    for (double c : budgets) rep.allocations.push_back(compute_optimal(law, c));
  } else {
    notes.push_back("the fitted exponents are not both positive: no compute-optimal allocation (widen the sweep)");
  }
  rep.approach2 = fit_approach2(obs);
  for (const auto& n : rep.approach2.notes) notes.push_back(n);

  // Bootstrap CIs.
  std::map<std::string, Ci> ci;
  if (!rep.boot.fits.empty()) {
    ci["E"] = ci_of(rep.boot, [](const ChinchillaLaw& l) { return l.E; });
    ci["A"] = ci_of(rep.boot, [](const ChinchillaLaw& l) { return l.A; });
    ci["B"] = ci_of(rep.boot, [](const ChinchillaLaw& l) { return l.B; });
    ci["alpha"] = ci_of(rep.boot, [](const ChinchillaLaw& l) { return l.alpha; });
    ci["beta"] = ci_of(rep.boot, [](const ChinchillaLaw& l) { return l.beta; });
    ci["a"] = ci_of(rep.boot, [](const ChinchillaLaw& l) { return l.a(); });
    ci["b"] = ci_of(rep.boot, [](const ChinchillaLaw& l) { return l.b(); });
    ci["G"] = ci_of(rep.boot, [](const ChinchillaLaw& l) { return l.G(); });
  }
  std::vector<Ci> ci_n(rep.allocations.size()), ci_d(rep.allocations.size()), ci_tpp(rep.allocations.size());
  for (std::size_t k = 0; k < rep.allocations.size(); ++k) {
    std::vector<double> vn, vd, vt;
    for (const auto& f : rep.boot.fits) {
      if (!f.law.has_optimum()) continue;
      const double c6 = rep.allocations[k].flops / 6, g = f.law.G();
      const double n = g * std::pow(c6, f.law.a()), d = std::pow(c6, f.law.b()) / g;
      vn.push_back(n), vd.push_back(d), vt.push_back(d / n);
    }
    ci_n[k] = {percentile(vn, 2.5), percentile(vn, 97.5)};
    ci_d[k] = {percentile(vd, 2.5), percentile(vd, 97.5)};
    ci_tpp[k] = {percentile(vt, 2.5), percentile(vt, 97.5)};
  }

  fs::create_directories(out_dir);

  // Plots.
  PlotInput pin;
  pin.obs = obs;
  pin.law = law;
  pin.law_has_optimum = optimum;
  pin.allocations = rep.allocations;
  for (const auto& f : rep.boot.fits) pin.bootstrap_laws.push_back(f.law);
  pin.approach2 = rep.approach2;
  pin.loss_label = rep.results.loss_column == "final_val_loss" ? "final validation loss" : "final training loss";
  pin.n_label = rep.results.n_column == "n_params" ? "parameters N" : "non-embedding parameters N";
  const PlotResult pr = make_plots(pin, (fs::path(out_dir) / "plots").string(), find_gnuplot(opt.gnuplot));
  rep.plots = pr.files;
  rep.plot_warning = pr.warning;
  if (!pr.warning.empty()) {
    log << "llm-fit: warning: " << pr.warning << "\n";
    notes.push_back(pr.warning);
  }

  // fits.json
  json j;
  j["input"] = {{"results", results_csv},
                {"rows", rep.results.rows},
                {"runs_fitted", obs.size()},
                {"loss_column", rep.results.loss_column},
                {"n_column", rep.results.n_column},
                {"d_column", "tokens"},
                {"compute_convention", "C = 6 N D"}};
  json runs = json::array();
  for (const auto& o : obs)
    runs.push_back({{"run", o.run}, {"n", o.n}, {"d", o.d}, {"loss", o.loss}, {"flops_budget", o.budget > 0 ? json(o.budget) : json(nullptr)},
                    {"fitted_loss", law.loss(o.n, o.d)}});
  j["input"]["runs"] = runs;
  auto param = [&](const std::string& name, double v) {
    json p = {{"value", num(v)}};
    if (ci.count(name)) p["ci95"] = {num(ci[name].lo), num(ci[name].hi)};
    return p;
  };
  j["approach3"] = {
      {"model", "L(N, D) = E + A / N^alpha + B / D^beta"},
      {"method", {{"objective", "sum of Huber(delta) of LSE(a - alpha ln N, b - beta ln D, e) - ln L"},
                  {"huber_delta", opt.huber_delta},
                  {"optimizer", "NLopt LD_LBFGS (analytic gradient)"},
                  {"start_grid", opt.grid == StartGrid::paper ? "paper" : "thin"},
                  {"starts", rep.fit.starts},
                  {"starts_failed", rep.fit.starts_failed}}},
      {"objective", rep.fit.objective},
      {"residual_rms", rep.fit.residual_rms},
      {"E", param("E", law.E)},
      {"A", param("A", law.A)},
      {"B", param("B", law.B)},
      {"alpha", param("alpha", law.alpha)},
      {"beta", param("beta", law.beta)},
      {"a", param("a", law.a())},
      {"b", param("b", law.b())},
      {"G", param("G", optimum ? law.G() : kNaN)},
      {"log_params", {{"a", rep.fit.x[0]}, {"b", rep.fit.x[1]}, {"e", rep.fit.x[2]}}},
      {"bootstrap", {{"samples", opt.bootstrap}, {"succeeded", rep.boot.fits.size()}, {"seed", opt.seed},
                     {"percentiles", {2.5, 97.5}}, {"refit_from", "the best start's optimum"}}}};
  json allocs = json::array();
  for (std::size_t k = 0; k < rep.allocations.size(); ++k) {
    const auto& a = rep.allocations[k];
    json x = {{"flops", a.flops},
              {"n_opt", a.n_opt},
              {"d_opt", a.d_opt},
              {"tokens_per_param", a.tokens_per_param},
              {"n_opt_numeric", a.n_opt_numeric},
              {"d_opt_numeric", a.d_opt_numeric},
              {"loss_at_optimum", a.loss}};
    if (!rep.boot.fits.empty()) {
      x["n_opt_ci95"] = {num(ci_n[k].lo), num(ci_n[k].hi)};
      x["d_opt_ci95"] = {num(ci_d[k].lo), num(ci_d[k].hi)};
      x["tokens_per_param_ci95"] = {num(ci_tpp[k].lo), num(ci_tpp[k].hi)};
    }
    allocs.push_back(x);
  }
  j["allocations"] = {{"budgets_from", budget_source}, {"approach3", allocs}};
  json curves = json::array();
  for (const auto& c : rep.approach2.curves) {
    json x = {{"flops", c.flops}, {"runs", c.points}, {"ok", c.ok}, {"n_min", c.n_min}, {"n_max", c.n_max}};
    if (c.ok) {
      x["parabola_ln_n"] = {c.coeff[0], c.coeff[1], c.coeff[2]};
      x["n_opt"] = c.n_opt;
      x["d_opt"] = c.d_opt;
      x["tokens_per_param"] = c.d_opt / c.n_opt;
      x["loss_min"] = c.loss_min;
      x["extrapolated"] = c.extrapolated;
    }
    if (!c.note.empty()) x["note"] = c.note;
    curves.push_back(x);
  }
  auto pl = [](const PowerLaw& p) {
    return p.ok ? json{{"exponent", p.exponent}, {"coefficient", p.coefficient}, {"budgets", p.points}} : json(nullptr);
  };
  j["approach2"] = {{"method", "least-squares parabola of loss against ln N per IsoFLOP budget; N_opt = k C^a and "
                               "D_opt = k C^b by least squares in log-log"},
                    {"curves", curves},
                    {"n_opt_power_law", pl(rep.approach2.n_opt)},
                    {"d_opt_power_law", pl(rep.approach2.d_opt)}};
  j["plots"] = rep.plots;
  j["notes"] = notes;
  write_file(fs::path(out_dir) / "fits.json", j.dump(2) + "\n");

  // fit_report.md
  std::ostringstream md;
  md << "# Scaling-law fit\n\n";
  md << "Input: `" << results_csv << "`: " << obs.size() << " done runs of " << rep.results.rows << " rows. Loss: `"
     << rep.results.loss_column << "` (nats/token). N: `" << rep.results.n_column << "`. D: `tokens`. C = 6·N·D.\n\n";
  md << "## Approach 3: L(N, D) = E + A/N^α + B/D^β\n\n";
  md << "Fitted by minimising the summed Huber loss (δ = " << fmt(opt.huber_delta) << ") of log-loss residuals with "
     << "NLopt's L-BFGS from " << rep.fit.starts << " starting points"
     << (opt.grid == StartGrid::paper ? " (the paper's grid)" : " (every other point of the paper's grid)")
     << "; residual RMS " << fmt(rep.fit.residual_rms, "%.3g") << " in log loss.";
  if (!rep.boot.fits.empty())
    md << " 95% intervals: bootstrap over runs, " << rep.boot.fits.size() << " of " << opt.bootstrap
       << " resamples refitted (seed " << opt.seed << ").";
  md << "\n\n| parameter | value | 95% CI |\n| --- | ---: | --- |\n";
  auto row = [&](const char* name, const std::string& key, double v) {
    md << "| " << name << " | " << fmt(v) << " | ";
    if (ci.count(key)) md << fmt(ci[key].lo) << " – " << fmt(ci[key].hi);
    md << " |\n";
  };
  row("E", "E", law.E);
  row("A", "A", law.A);
  row("B", "B", law.B);
  row("α", "alpha", law.alpha);
  row("β", "beta", law.beta);
  row("a = β/(α+β)", "a", law.a());
  row("b = α/(α+β)", "b", law.b());
  if (optimum) row("G", "G", law.G());
  if (!rep.allocations.empty()) {
    md << "\n### Compute-optimal allocation (approach 3; budgets: " << budget_source << ")\n\n";
    md << "N_opt = G·(C/6)^a, D_opt = G⁻¹·(C/6)^b; \"numeric\" minimises L(N, C/(6N)) directly.\n\n";
    md << "| C (FLOPs) | N_opt | D_opt (tokens) | tokens/param | N_opt numeric | loss at optimum | N_opt 95% CI | "
          "tokens/param 95% CI |\n| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n";
    for (std::size_t k = 0; k < rep.allocations.size(); ++k) {
      const auto& a = rep.allocations[k];
      md << "| " << fmt(a.flops, "%.3g") << " | " << fmt(a.n_opt, "%.4g") << " | " << fmt(a.d_opt, "%.4g") << " | "
         << fmt(a.tokens_per_param, "%.3g") << " | " << fmt(a.n_opt_numeric, "%.4g") << " | " << fmt(a.loss) << " | ";
      if (!rep.boot.fits.empty())
        md << fmt(ci_n[k].lo, "%.3g") << " – " << fmt(ci_n[k].hi, "%.3g") << " | " << fmt(ci_tpp[k].lo, "%.3g")
           << " – " << fmt(ci_tpp[k].hi, "%.3g");
      else
        md << " | ";
      md << " |\n";
    }
  }
  md << "\n## Approach 2: IsoFLOP parabolas\n\n";
  if (rep.approach2.curves.empty()) {
    md << "Not applicable: the runs have no IsoFLOP budgets (the sweep's D axis is tokens).\n";
  } else {
    md << "| C (FLOPs) | runs | N_opt | D_opt (tokens) | tokens/param | min loss | note |\n"
          "| ---: | ---: | ---: | ---: | ---: | ---: | --- |\n";
    for (const auto& c : rep.approach2.curves) {
      md << "| " << fmt(c.flops, "%.3g") << " | " << c.points << " | ";
      if (c.ok)
        md << fmt(c.n_opt) << " | " << fmt(c.d_opt) << " | " << fmt(c.d_opt / c.n_opt, "%.3g") << " | "
           << fmt(c.loss_min) << " | ";
      else
        md << " | | | | ";
      md << c.note << " |\n";
    }
    if (rep.approach2.n_opt.ok)
      md << "\nPower laws over " << rep.approach2.n_opt.points << " budgets: N_opt = " << fmt(rep.approach2.n_opt.coefficient, "%.3g")
         << "·C^" << fmt(rep.approach2.n_opt.exponent, "%.3f") << ", D_opt = " << fmt(rep.approach2.d_opt.coefficient, "%.3g")
         << "·C^" << fmt(rep.approach2.d_opt.exponent, "%.3f") << " (approach 3: a = " << fmt(law.a(), "%.3f")
         << ", b = " << fmt(law.b(), "%.3f") << ").\n";
  }
  if (!rep.plots.empty()) {
    md << "\n## Plots\n\n";
    for (const auto& p : rep.plots)
      if (fs::path(p).extension() == ".png")
        md << "![" << fs::path(p).stem().string() << "](plots/" << fs::path(p).filename().string() << ")\n\n";
  }
  if (!notes.empty()) {
    md << "\n## Notes\n\n";
    for (const auto& n : notes) md << "- " << n << "\n";
  }
  write_file(fs::path(out_dir) / "fit_report.md", md.str());

  for (const auto& a : rep.allocations)
    log << "llm-fit: C " << fmt(a.flops, "%.3g") << ": N_opt " << fmt(a.n_opt, "%.3g") << ", D_opt "
        << fmt(a.d_opt, "%.3g") << " tokens (" << fmt(a.tokens_per_param, "%.3g") << " tokens/param)\n";
  if (rep.approach2.n_opt.ok)
    log << "llm-fit: approach 2: N_opt ∝ C^" << fmt(rep.approach2.n_opt.exponent, "%.3f") << ", D_opt ∝ C^"
        << fmt(rep.approach2.d_opt.exponent, "%.3f") << " (approach 3: a = " << fmt(law.a(), "%.3f") << ")\n";
  log << "llm-fit: wrote " << (fs::path(out_dir) / "fits.json").string() << ", "
      << (fs::path(out_dir) / "fit_report.md").string();
  if (!rep.plots.empty()) log << " and " << rep.plots.size() << " plot files in " << (fs::path(out_dir) / "plots").string();
  log << "\n";
  return rep;
}

int fit_and_report(const std::string& results_csv, const std::string& out_dir, const std::vector<double>& budgets,
                   const FitOptions& options, std::ostream& log) {
  try {
    run_fit(results_csv, out_dir, budgets, options, log);
    return 0;
  } catch (const std::exception& e) {
    log << "llm-fit: error: " << e.what() << "\n";
    return 1;
  }
}

int fit_and_report(const std::string& results_csv, const std::string& out_dir, const std::vector<double>& budgets,
                   std::ostream& log) {
  return fit_and_report(results_csv, out_dir, budgets, FitOptions{}, log);
}

}  // namespace llm::sweep
