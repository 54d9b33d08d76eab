#include "sweep/plots.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace llm::sweep {

namespace fs = std::filesystem;

namespace {

// 2e8, 1.5e17: compact labels without gnuplot-enhanced special characters.
std::string sci(double v) {
  if (!(v > 0) || !std::isfinite(v)) return "?";
  int e = static_cast<int>(std::floor(std::log10(v)));
  double m = v / std::pow(10.0, e);
  if (m >= 9.995) m /= 10, ++e;
  char b[48];
  if (std::abs(m - std::round(m)) < 0.005)
    std::snprintf(b, sizeof b, "%.0fe%d", m, e);
  else
    std::snprintf(b, sizeof b, "%.2ge%d", m, e);
  return b;
}

std::string f3(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}

std::vector<double> logspace(double lo, double hi, int n) {
  std::vector<double> v;
  const double a = std::log(lo), b = std::log(hi);
  for (int i = 0; i < n; ++i) v.push_back(std::exp(a + (b - a) * i / (n - 1)));
  return v;
}

class DataFile {
 public:
  DataFile(const fs::path& dir, const std::string& name) : name_(name), out_(dir / name) {
    if (!out_) throw std::runtime_error((dir / name).string() + ": cannot write plot data (is --out writable?)");
    out_.precision(10);
  }
  template <typename... T>
  void row(T... v) {
    ((out_ << v << ' '), ...);
    out_ << '\n';
  }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::ofstream out_;
};

bool is_executable(const std::string& p) { return !p.empty() && ::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p); }

std::string search_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return is_executable(name) ? name : "";
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    const std::string cand = (dir.empty() ? std::string(".") : dir) + "/" + name;
    if (is_executable(cand)) return cand;
  }
  return "";
}

// Runs `exe script` in `dir` with stdout/stderr to dir/log; returns the exit status or -1.
int run_in(const std::string& exe, const std::string& script, const fs::path& dir, const std::string& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const std::string logp = (dir / log).string();
  posix_spawn_file_actions_addopen(&fa, 1, logp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addchdir_np(&fa, dir.c_str());
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> argv{const_cast<char*>(exe.c_str()), const_cast<char*>(script.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct Group {
  double key = 0;  // budget or tokens
  std::vector<const Observation*> obs;
};

std::vector<Group> group_by(const std::vector<Observation>& obs, bool by_budget) {
  std::vector<Group> g;
  for (const auto& o : obs) {
    const double k = by_budget ? o.budget : o.d;
    auto it = std::find_if(g.begin(), g.end(), [&](const Group& x) { return std::abs(x.key - k) <= 1e-6 * x.key; });
    if (it == g.end()) {
      g.push_back(Group{k, {}});
      it = g.end() - 1;
    }
    it->obs.push_back(&o);
  }
  std::sort(g.begin(), g.end(), [](const Group& a, const Group& b) { return a.key < b.key; });
  for (auto& x : g)
    std::sort(x.obs.begin(), x.obs.end(), [](const Observation* a, const Observation* b) { return a->n < b->n; });
  return g;
}

const char* kHeader =
    "set encoding utf8\n"
    "set grid xtics ytics lw 0.8 lc rgb '#c0c0c0' dt 3\n"
    "set key nobox noopaque\n"
    "set border lw 1.2\n";

std::string terminals(const std::string& stem) {
  // Write the PNG, then the same plot as SVG.
  return "set terminal svg size 960,720 enhanced font 'Sans,12' background rgb 'white'\n"
         "set output '" + stem + ".svg'\nreplot\nunset output\nreset\n";
}

}  // namespace

std::string find_gnuplot(const std::string& requested) {
  if (!requested.empty()) return search_path(requested);
  if (const char* env = std::getenv("LLM_GNUPLOT"); env && *env) return search_path(env);
  return search_path("gnuplot");
}

PlotResult make_plots(const PlotInput& in, const std::string& dir_s, const std::string& gnuplot) {
  PlotResult res;
  const fs::path dir = fs::absolute(dir_s);
  fs::create_directories(dir);
  std::ostringstream gp;
  gp << "# Written by llm-fit. Rerun from this directory with: gnuplot plots.gp\n";
  std::vector<std::string> stems;
  const std::string loss_axis = in.loss_label + " (nats/token)";
  const std::string n_axis = in.n_label + " (count, log scale)";

  double n_lo = 1e300, n_hi = 0;
  for (const auto& o : in.obs) n_lo = std::min(n_lo, o.n), n_hi = std::max(n_hi, o.n);
  const std::vector<double> n_grid = logspace(n_lo / 1.5, n_hi * 1.5, 80);

  // 1. Loss against N for each D (or each IsoFLOP budget), with the approach-3 law.
  const bool by_budget =
      !in.obs.empty() && std::all_of(in.obs.begin(), in.obs.end(), [](const Observation& o) { return o.budget > 0; });
  {
    const auto groups = group_by(in.obs, by_budget);
    std::ostringstream plot;
    for (std::size_t k = 0; k < groups.size(); ++k) {
      const auto& g = groups[k];
      DataFile pts(dir, "loss_vs_n_points_" + std::to_string(k) + ".dat");
      for (const auto* o : g.obs) pts.row(o->n, o->loss);
      DataFile cur(dir, "loss_vs_n_fit_" + std::to_string(k) + ".dat");
      // IsoFLOP groups: the law along the group's own range of N (far off it the curve
      // rises steeply and would squash the others); token groups: the whole range.
      const std::vector<double> grid =
          by_budget ? logspace(g.obs.front()->n / 1.5, g.obs.back()->n * 1.5, 60) : n_grid;
      for (double n : grid) {
        const double d = by_budget ? g.key / (6 * n) : g.key;
        cur.row(n, in.law.loss(n, d));
      }
      const std::string label = by_budget ? "C = " + sci(g.key) + " FLOPs" : "D = " + sci(g.key) + " tokens";
      plot << (k ? ", \\\n     " : "plot ") << "'" << pts.name() << "' using 1:2 with points pt " << (5 + 2 * (k % 4))
           << " ps 1.3 lc " << (k % 8) + 1 << " title '" << label << "', '" << cur.name()
           << "' using 1:2 with lines lw 2 lc " << (k % 8) + 1 << " notitle";
    }
    gp << "\n# Loss against N\n" << kHeader << "set terminal pngcairo size 960,720 enhanced font 'Sans,11'\nset output 'loss_vs_n.png'\n"
       << "set title \"Final loss against model size " << (by_budget ? "at each IsoFLOP budget" : "for each token count")
       << "\\n(lines: approach-3 fit L = E + A/N^{α} + B/D^{β})\"\n"
       << "set logscale x\nset format x '10^{%L}'\nset xlabel '" << n_axis << "'\nset ylabel '" << loss_axis << "'\n"
       << "set key outside below center horizontal height 1.5\n"
       << plot.str() << "\n" << terminals("loss_vs_n");
    stems.push_back("loss_vs_n");
  }

  // 2. IsoFLOP curves: runs, approach-2 parabolas and minima, approach-3 optima.
  const auto& curves = in.approach2.curves;
  if (!curves.empty()) {
    std::ostringstream plot;
    DataFile mins(dir, "isoflop_minima.dat");
    DataFile mins3(dir, "isoflop_approach3_optima.dat");
    bool any_min = false, any_min3 = false;
    for (std::size_t k = 0; k < curves.size(); ++k) {
      const auto& c = curves[k];
      DataFile pts(dir, "isoflop_points_" + std::to_string(k) + ".dat");
      for (const auto& o : c.obs) pts.row(o.n, o.loss);
      plot << (k ? ", \\\n     " : "plot ") << "'" << pts.name() << "' using 1:2 with points pt 7 ps 1.3 lc "
           << (k % 8) + 1 << " title 'C = " << sci(c.flops) << " FLOPs'";
      if (c.ok) {
        DataFile par(dir, "isoflop_parabola_" + std::to_string(k) + ".dat");
        const double lo = std::min(c.n_min, c.n_opt) / 1.2, hi = std::max(c.n_max, c.n_opt) * 1.2;
        for (double n : logspace(lo, hi, 80)) {
          const double x = std::log(n);
          par.row(n, c.coeff[0] + c.coeff[1] * x + c.coeff[2] * x * x);
        }
        plot << ", '" << par.name() << "' using 1:2 with lines lw 2 lc " << (k % 8) + 1 << " notitle";
        mins.row(c.n_opt, c.loss_min);
        any_min = true;
      }
      if (in.law_has_optimum) {
        const double g = in.law.G(), c6 = c.flops / 6;
        const double n = g * std::pow(c6, in.law.a());
        mins3.row(n, in.law.loss(n, c.flops / (6 * n)));
        any_min3 = true;
      }
    }
    if (any_min) plot << ", \\\n     '" << mins.name() << "' using 1:2 with points pt 3 ps 2.2 lw 2 lc rgb 'black' title 'parabola minimum (approach 2)'";
    if (any_min3)
      plot << ", \\\n     '" << mins3.name() << "' using 1:2 with points pt 6 ps 2.2 lw 2 lc rgb '#606060' title 'L(N, C/6N) minimum (approach 3)'";
    gp << "\n# IsoFLOP curves\n" << kHeader << "set terminal pngcairo size 960,720 enhanced font 'Sans,11'\nset output 'isoflop.png'\n"
       << "set title \"IsoFLOP curves: loss against model size at fixed compute C = 6ND\\n(lines: least-squares parabolas in log N)\"\n"
       << "set logscale x\nset format x '10^{%L}'\nset xlabel '" << n_axis << "'\nset ylabel '" << loss_axis << "'\n"
       << "set key outside below center horizontal height 1.5\n"
       << plot.str() << "\n" << terminals("isoflop");
    stems.push_back("isoflop");
  }

  // 3. The compute-optimal frontier N_opt(C) and D_opt(C).
  std::vector<const IsoFlopCurve*> ok2;
  for (const auto& c : curves)
    if (c.ok) ok2.push_back(&c);
  if (in.law_has_optimum || !ok2.empty()) {
    double c_lo = 1e300, c_hi = 0;
    for (const auto& o : in.obs) c_lo = std::min(c_lo, 6 * o.n * o.d), c_hi = std::max(c_hi, 6 * o.n * o.d);
    for (const auto& a : in.allocations) c_lo = std::min(c_lo, a.flops), c_hi = std::max(c_hi, a.flops);
    c_lo /= 3, c_hi *= 3;
    std::ostringstream plot;
    const char* sep = "plot ";
    auto next = [&]() -> std::ostringstream& {
      plot << sep;
      sep = ", \\\n     ";
      return plot;
    };
    if (in.law_has_optimum) {
      DataFile line(dir, "frontier_approach3.dat");
      const bool band = in.bootstrap_laws.size() >= 10;
      for (double c : logspace(c_lo, c_hi, 80)) {
        const double c6 = c / 6, g = in.law.G();
        double lo = 0, hi = 0;
        if (band) {
          std::vector<double> v;
          for (const auto& l : in.bootstrap_laws)
            if (l.has_optimum()) v.push_back(l.G() * std::pow(c6, l.a()));
          lo = percentile(v, 2.5), hi = percentile(v, 97.5);
        }
        line.row(c, g * std::pow(c6, in.law.a()), std::pow(c6, in.law.b()) / g, lo, hi);
      }
      if (band)
        next() << "'" << line.name() << "' using 1:4:5 with filledcurves lc rgb '#1f77b4' fs transparent solid 0.18 noborder title 'N_{opt} 95% bootstrap band'";
      next() << "'" << line.name() << "' using 1:2 with lines lw 2.5 lc rgb '#1f77b4' title 'N_{opt} = G (C/6)^{a}, a = "
             << f3(in.law.a()) << " (approach 3)'";
      next() << "'" << line.name() << "' using 1:3 with lines lw 2.5 dt 2 lc rgb '#d62728' title 'D_{opt} = G^{-1} (C/6)^{b}, b = "
             << f3(in.law.b()) << " (approach 3)'";
      if (!in.allocations.empty()) {
        DataFile al(dir, "frontier_budgets.dat");
        for (const auto& a : in.allocations) al.row(a.flops, a.n_opt, a.d_opt);
        next() << "'" << al.name() << "' using 1:2 with points pt 9 ps 1.8 lc rgb '#1f77b4' title 'N_{opt} at the report budgets'";
        next() << "'" << al.name() << "' using 1:3 with points pt 11 ps 1.8 lc rgb '#d62728' title 'D_{opt} at the report budgets'";
      }
    }
    if (!ok2.empty()) {
      DataFile pts(dir, "frontier_approach2.dat");
      for (const auto* c : ok2) pts.row(c->flops, c->n_opt, c->d_opt);
      next() << "'" << pts.name() << "' using 1:2 with points pt 7 ps 1.6 lc rgb '#1f77b4' title 'N_{opt} (approach 2, IsoFLOP minima)'";
      next() << "'" << pts.name() << "' using 1:3 with points pt 5 ps 1.6 lc rgb '#d62728' title 'D_{opt} (approach 2, IsoFLOP minima)'";
      if (in.approach2.n_opt.ok) {
        DataFile fit(dir, "frontier_approach2_fit.dat");
        for (double c : logspace(c_lo, c_hi, 40))
          fit.row(c, in.approach2.n_opt.coefficient * std::pow(c, in.approach2.n_opt.exponent),
                  in.approach2.d_opt.coefficient * std::pow(c, in.approach2.d_opt.exponent));
        next() << "'" << fit.name() << "' using 1:2 with lines lw 1.5 dt 3 lc rgb '#1f77b4' title 'N_{opt} ∝ C^{"
               << f3(in.approach2.n_opt.exponent) << "} (approach 2 fit)'";
        next() << "'" << fit.name() << "' using 1:3 with lines lw 1.5 dt 3 lc rgb '#d62728' title 'D_{opt} ∝ C^{"
               << f3(in.approach2.d_opt.exponent) << "} (approach 2 fit)'";
      }
    }
    gp << "\n# Compute-optimal frontier\n" << kHeader << "set terminal pngcairo size 960,720 enhanced font 'Sans,11'\nset output 'frontier.png'\n"
       << "set title 'Compute-optimal model size and token count against compute'\n"
       << "set logscale xy\nset format x '10^{%L}'\nset format y '10^{%L}'\n"
       << "set xlabel 'training compute C = 6ND (FLOPs, log scale)'\n"
       << "set ylabel 'N_{opt} (parameters) and D_{opt} (tokens), log scale'\n"
       << "set key top left box opaque\n"
       << plot.str() << "\n" << terminals("frontier");
    stems.push_back("frontier");
  }

  {
    std::ofstream out(dir / "plots.gp");
    out << gp.str();
    if (!out) throw std::runtime_error((dir / "plots.gp").string() + ": cannot write the plot script");
  }
  if (gnuplot.empty()) {
    res.warning = "no plotting tool: gnuplot was not found, so no plots were drawn (fits.json and fit_report.md are "
                  "complete). Install it with `apt-get install gnuplot-nox` (scripts/setup.sh does) and rerun llm-fit, "
                  "or run `gnuplot plots.gp` in " + dir.string();
    return res;
  }
  for (const auto& s : stems) {
    fs::remove(dir / (s + ".png"));
    fs::remove(dir / (s + ".svg"));
  }
  const int rc = run_in(gnuplot, "plots.gp", dir, "gnuplot.log");
  for (const auto& s : stems)
    for (const char* ext : {".png", ".svg"}) {
      const fs::path p = dir / (s + ext);
      if (fs::exists(p) && fs::file_size(p) > 0) res.files.push_back(p.string());
    }
  res.made = !res.files.empty();
  if (rc != 0 || res.files.size() != 2 * stems.size())
    res.warning = gnuplot + " " + (rc < 0 ? std::string("could not be run") : "exited with status " + std::to_string(rc)) +
                  " and drew " + std::to_string(res.files.size()) + " of " + std::to_string(2 * stems.size()) +
                  " plot files; see " + (dir / "gnuplot.log").string();
  return res;
}

}  // namespace llm::sweep
