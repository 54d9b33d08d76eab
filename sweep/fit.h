// Scaling-law fits of a sweep's results (Hoffmann et al. 2022, "Chinchilla").
//
// Approach 3: L(N, D) = E + A/N^alpha + B/D^beta, fitted as in the paper: minimise
//   sum_i Huber_delta( LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i ),  delta = 1e-3,
// over (a, b, e, alpha, beta) with A = e^a, B = e^b, E = e^e, by L-BFGS (NLopt's
// LD_LBFGS, analytic gradient) from every point of the paper's grid of starts
// (alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}),
// keeping the lowest objective. The Huber terms are summed, not averaged (averaging
// makes L-BFGS stop early: Besiroglu et al. 2024). Confidence intervals: bootstrap over
// runs (resampled with replacement, refitted from the best start), percentiles 2.5/97.5.
//
// Compute-optimal allocation under C = 6 N D (the paper's eq. 4):
//   N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b, G = (alpha A / (beta B))^(1/(alpha+beta)),
//   a = beta/(alpha+beta), b = alpha/(alpha+beta);
// also found numerically by minimising L(N, C/(6N)) over log N (they must agree).
//
// Approach 2: for each IsoFLOP budget (runs sharing flops_budget) a least-squares
// parabola of the loss against ln N; its vertex is N_opt(C), D_opt = C/(6 N_opt); then
// N_opt = k_N C^a and D_opt = k_D C^b by least squares in log-log.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace llm::sweep {

// One finished run: parameters N, tokens D, final loss (nats/token), its IsoFLOP
// budget C in FLOPs (0 when the sweep's D axis is tokens).
struct Observation {
  std::string run;
  double n = 0;
  double d = 0;
  double loss = 0;
  double budget = 0;
};

struct ChinchillaLaw {
  double E = 0, A = 0, B = 0, alpha = 0, beta = 0;
  double a() const { return beta / (alpha + beta); }   // N_opt ∝ C^a
  double b() const { return alpha / (alpha + beta); }  // D_opt ∝ C^b
  double G() const;                                    // (alpha A / (beta B))^(1/(alpha+beta))
  double loss(double n, double d) const { return E + A * std::pow(n, -alpha) + B * std::pow(d, -beta); }
  // True when the law has a compute-optimal allocation (alpha, beta, A, B > 0).
  bool has_optimum() const;
};

// The paper's grid of starting points, or every other value of each axis (3^5 = 243
// starts instead of 5*5*5*6*6 = 4500) for tests where time matters.
enum class StartGrid { paper, thin };

struct Approach3Fit {
  ChinchillaLaw law;
  std::array<double, 5> x{};  // (a, b, e, alpha, beta): A = e^a, B = e^b, E = e^e
  double objective = 0;       // summed Huber loss at x
  double residual_rms = 0;    // RMS of log-loss residuals at x
  int starts = 0;             // starting points tried
  int starts_failed = 0;      // starts where NLopt failed or the objective was not finite
};

// Fits approach 3 from every start of `grid`. Needs >= 5 observations; throws otherwise.
Approach3Fit fit_approach3(const std::vector<Observation>& obs, StartGrid grid = StartGrid::paper,
                           double huber_delta = 1e-3);
// One L-BFGS run from x0 (the bootstrap's refit).
Approach3Fit refit_approach3(const std::vector<Observation>& obs, const std::array<double, 5>& x0,
                             double huber_delta = 1e-3);
// The objective and its gradient at x (exposed for tests).
double approach3_objective(const std::vector<Observation>& obs, const std::array<double, 5>& x, double huber_delta,
                           std::array<double, 5>* grad);

struct Allocation {
  double flops = 0;             // C
  double n_opt = 0;             // closed form G (C/6)^a
  double d_opt = 0;             // closed form G^-1 (C/6)^b
  double tokens_per_param = 0;  // d_opt / n_opt
  double n_opt_numeric = 0;     // argmin_N L(N, C/(6N)) found by NLopt
  double d_opt_numeric = 0;     // C / (6 n_opt_numeric)
  double loss = 0;              // L(n_opt, d_opt)
};
// Throws when the law has no optimum (alpha or beta <= 0).
Allocation compute_optimal(const ChinchillaLaw& law, double flops);

struct IsoFlopCurve {
  double flops = 0;            // the budget C
  int points = 0;              // runs at this budget
  bool ok = false;             // a convex parabola was fitted
  std::string note;            // why not, or a caveat (minimum outside the sampled N)
  std::array<double, 3> coeff{};  // loss = c0 + c1 x + c2 x^2 with x = ln N
  double n_min = 0, n_max = 0;    // the sampled range of N
  double n_opt = 0, d_opt = 0, loss_min = 0;
  bool extrapolated = false;      // the vertex lies outside [n_min, n_max]
  std::vector<Observation> obs;   // the runs at this budget (for plots)
};

struct PowerLaw {
  bool ok = false;
  double exponent = 0;     // y = coefficient * C^exponent
  double coefficient = 0;
  int points = 0;
};

struct Approach2Fit {
  std::vector<IsoFlopCurve> curves;  // one per budget, ascending
  PowerLaw n_opt, d_opt;             // N_opt(C), D_opt(C) over the curves that are ok
  std::vector<std::string> notes;
};
// Observations with budget > 0 are grouped by budget (relative tolerance 1e-6).
Approach2Fit fit_approach2(const std::vector<Observation>& obs);

// Bootstrap: K resamples of the observations (with replacement, SplitMix64-seeded,
// so the same seed gives the same samples everywhere), each refitted from `best.x`.
struct Bootstrap {
  int requested = 0;
  int failed = 0;                   // refits whose objective was not finite
  std::vector<Approach3Fit> fits;   // the successful refits
};
Bootstrap bootstrap_approach3(const std::vector<Observation>& obs, const Approach3Fit& best, int samples,
                              uint64_t seed, double huber_delta = 1e-3);

// Linear-interpolated percentile (q in [0, 100]) of the finite values; NaN when none.
double percentile(std::vector<double> values, double q);

// Reads results.csv (the header llm-sweep writes) into observations of the runs with
// status "done". n_column: "n_params" or "n_non_embedding". The loss is
// final_val_loss when every done run has one, else final_train_loss for all runs.
// Throws, naming the file, line and column, for a missing column, a non-numeric or
// non-positive cell in a done run, or fewer than 5 done runs.
struct Results {
  std::vector<Observation> obs;
  std::string loss_column;  // "final_val_loss" or "final_train_loss"
  std::string n_column;
  int rows = 0;             // data rows in the file
  std::vector<double> flops_6nd;  // 6 N D of each used run (for default budgets)
  std::vector<std::string> notes;
};
Results load_results(const std::string& results_csv, const std::string& n_column = "n_params");

struct FitOptions {
  int bootstrap = 200;                  // K; 0 skips the bootstrap
  uint64_t seed = 1234;
  std::string n_column = "n_params";    // or "n_non_embedding"
  StartGrid grid = StartGrid::paper;
  double huber_delta = 1e-3;
  // gnuplot executable: empty = $LLM_GNUPLOT if set, else "gnuplot" on PATH. A path
  // that does not exist means "no plotting tool": fits are written, plots skipped.
  std::string gnuplot;
};

// Everything fit_and_report computed (for tests and callers that want the numbers).
struct FitReport {
  Results results;
  Approach3Fit fit;
  Bootstrap boot;
  std::vector<Allocation> allocations;  // one per budget
  Approach2Fit approach2;
  std::vector<std::string> plots;       // files written
  std::string plot_warning;             // non-empty when plots were skipped or failed
};

// Fits, writes out_dir/fits.json, out_dir/fit_report.md and out_dir/plots/*; throws
// std::runtime_error (naming the file, row and column) on bad input. Budgets: when empty,
// the sweep's IsoFLOP budgets, else the largest 6ND among the runs.
FitReport run_fit(const std::string& results_csv, const std::string& out_dir, const std::vector<double>& budgets,
                  const FitOptions& options, std::ostream& log);

// The entry point llm-sweep calls at the end of a sweep: run_fit with default options
// (K = 200 bootstrap samples, seed 1234, N = n_params). Returns 0 on success; on error
// prints "llm-fit: error: ..." to `log` and returns 1.
int fit_and_report(const std::string& results_csv, const std::string& out_dir, const std::vector<double>& budgets,
                   std::ostream& log);
int fit_and_report(const std::string& results_csv, const std::string& out_dir, const std::vector<double>& budgets,
                   const FitOptions& options, std::ostream& log);

}  // namespace llm::sweep
