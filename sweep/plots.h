// Plots of a scaling-law fit, drawn by gnuplot (Debian package gnuplot-nox) from a
// generated script: loss against N for each D (or each IsoFLOP budget) with the
// approach-3 curves, the IsoFLOP curves with their parabolas and minima, and the
// compute-optimal frontier N_opt(C), D_opt(C) (approach-3 line, approach-2 points).
// Each plot is written as PNG (pngcairo) and SVG; the script (plots.gp) and its data
// (*.dat) stay next to them so a person can restyle and rerun them.
#pragma once
#include <string>
#include <vector>

#include "sweep/fit.h"

namespace llm::sweep {

struct PlotInput {
  std::vector<Observation> obs;
  ChinchillaLaw law;
  bool law_has_optimum = false;
  std::vector<Allocation> allocations;         // approach 3 at the report's budgets
  std::vector<ChinchillaLaw> bootstrap_laws;   // for the frontier's 95% band (may be empty)
  Approach2Fit approach2;
  std::string loss_label;                      // e.g. "final validation loss"
  std::string n_label;                         // e.g. "parameters N"
};

struct PlotResult {
  bool made = false;
  std::vector<std::string> files;  // images written
  std::string warning;             // why plots are missing, non-empty when !made or a plot failed
};

// The gnuplot executable to use: `requested` when non-empty, else $LLM_GNUPLOT, else
// "gnuplot" searched on PATH. Returns an empty string when it does not exist.
std::string find_gnuplot(const std::string& requested);

// Writes dir/plots.gp and dir/*.dat, runs gnuplot (if found) and reports what it made.
// Never throws for a missing or failing gnuplot (the warning says what to install);
// throws only when dir cannot be written.
PlotResult make_plots(const PlotInput& in, const std::string& dir, const std::string& gnuplot);

}  // namespace llm::sweep
