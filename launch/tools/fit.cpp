// llm-fit: scaling-law fits of a sweep's results.csv (Chinchilla approaches 3 and 2),
// with bootstrap intervals, compute-optimal allocations, a report and plots.
#include <charconv>
#include <cmath>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "launch/cli.h"
#include "sweep/fit.h"

namespace po = boost::program_options;

namespace {

std::vector<double> parse_budgets(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos)
      throw llm::UsageError("--budgets '" + s + "': an empty item; give FLOP counts like 1e18,1e19,1e20");
    const std::string t = item.substr(b, e - b + 1);
    double v = 0;
    const auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc() || p != t.data() + t.size() || !(v > 0) || !std::isfinite(v))
      throw llm::UsageError("--budgets: '" + t + "' is not a positive number of FLOPs (e.g. 1e20)");
    out.push_back(v);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  return llm::cli::run("llm-fit", [&] {
    std::string results, out, budgets, n_column;
    int bootstrap = 200;
    uint64_t seed = 1234;
    std::string grid;
    po::options_description opts(
        "llm-fit: Chinchilla scaling-law fits of a sweep's results\n\n"
        "Usage: llm-fit --results DIR/results.csv --out DIR/fit [--budgets 1e18,1e20]\n\n"
        "Fits L(N, D) = E + A/N^alpha + B/D^beta (approach 3: Huber loss of log residuals,\n"
        "L-BFGS from a grid of starts, bootstrap CIs) and IsoFLOP parabolas (approach 2);\n"
        "writes fits.json, fit_report.md and plots/*.png|svg (plots need gnuplot-nox)");
    opts.add_options()("help,h", "print this help")
        ("results", po::value(&results), "results.csv written by llm-sweep (only rows with status 'done' are fitted)")
        ("out", po::value(&out), "output directory (created)")
        ("budgets", po::value(&budgets), "comma-separated compute budgets C in FLOPs for the compute-optimal "
                                         "allocation (default: the sweep's IsoFLOP budgets, else the largest 6ND)")
        ("bootstrap", po::value(&bootstrap)->default_value(200), "bootstrap resamples K for 95% intervals (0: none)")
        ("seed", po::value(&seed)->default_value(1234), "bootstrap seed")
        ("n-column", po::value(&n_column)->default_value("n_params"),
         "which parameter count is N: n_params (all, as Chinchilla) or n_non_embedding (as Kaplan)")
        ("start-grid", po::value(&grid)->default_value("paper"),
         "approach-3 starting points: paper (4500, the paper's grid) or thin (243, every other value)");
    po::variables_map vm;
    if (!llm::cli::parse(argc, argv, opts, vm, {"results", "out"})) return 0;
    llm::sweep::FitOptions o;
    if (bootstrap < 0) throw llm::UsageError("--bootstrap " + std::to_string(bootstrap) + ": must be 0 or more");
    o.bootstrap = bootstrap;
    o.seed = seed;
    if (n_column != "n_params" && n_column != "n_non_embedding")
      throw llm::UsageError("--n-column '" + n_column + "': use n_params or n_non_embedding");
    o.n_column = n_column;
    if (grid == "paper")
      o.grid = llm::sweep::StartGrid::paper;
    else if (grid == "thin")
      o.grid = llm::sweep::StartGrid::thin;
    else
      throw llm::UsageError("--start-grid '" + grid + "': use paper or thin");
    const std::vector<double> b = budgets.empty() ? std::vector<double>{} : parse_budgets(budgets);
    llm::sweep::run_fit(results, out, b, o, std::cout);
    return 0;
  });
}
