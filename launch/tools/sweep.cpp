// llm-sweep: a scaling-law sweep over model size N and token count D, end to
// end: plans the runs from a spec file, trains each with llm-train (through
// mpirun when a run has several ranks), resumably, writes OUT/results.csv and
// fits the scaling laws with llm-fit. See sweep/spec.h and the README.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "data/token_file.h"
#include "data/tokenizer.h"
#include "launch/cli.h"
#include "sweep/runner.h"
#include "sweep/spec.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

std::string self_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

bool on_path(const std::string& program) {
  if (program.find('/') != std::string::npos) return ::access(program.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  std::string d;
  while (std::getline(dirs, d, ':'))
    if (!d.empty() && ::access((fs::path(d) / program).c_str(), X_OK) == 0) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  return llm::cli::run("llm-sweep", [&] {
    std::string spec_path, out, llm_train, mpirun = "mpirun", llm_fit;
    int max_concurrent = 1, max_retries = 2, cores = 0, stop_after = 0;
    double progress_interval = 30;
    po::options_description opts(
        "llm-sweep: a scaling-law sweep over model size N and tokens D, trained with llm-train and fitted with llm-fit\n\n"
        "Usage: llm-sweep --spec FILE --out DIR [options]\n\n"
        "The spec (INI: [sweep] [model] [budget] [train] [data] [layout] sections of 'key = value' lines; see\n"
        "examples/sweeps/tiny.cfg and the README) gives the N axis (target parameter counts or explicit shapes),\n"
        "the D axis (token budgets, or IsoFLOP budgets with D = C / 6N), the learning-rate rule, batch, data and\n"
        "layout. Rerunning the same command resumes: finished runs are kept, interrupted ones continue from their\n"
        "checkpoints, failed ones are retried up to --max-retries. Ctrl-C (SIGINT) or SIGTERM: the running runs\n"
        "save a checkpoint and stop (SIGUSR1), llm-sweep exits with code 3; again: SIGTERM; a third time: SIGKILL.\n"
        "Exit codes: 0 every run done (and fitted), 1 a run or the fit failed, 2 a bad spec or flag, 3 interrupted.\n\n"
        "Options");
    opts.add_options()("help,h", "print this help")
        ("spec", po::value(&spec_path), "the sweep spec file")
        ("out", po::value(&out), "output folder: runs/<run>/ (config, logs, metrics, checkpoints), results.csv, the fit")
        ("max-concurrent", po::value(&max_concurrent)->default_value(max_concurrent), "runs at once (also limited by --cores: each run takes ranks × threads-per-rank cores)")
        ("max-retries", po::value(&max_retries)->default_value(max_retries), "times a failed run is retried (over all invocations)")
        ("dry-run", "print the plan (shapes, tokens, iterations, FLOPs, learning rates) and exit")
        ("llm-train", po::value(&llm_train), "llm-train binary (default: next to llm-sweep)")
        ("mpirun", po::value(&mpirun)->default_value(mpirun), "mpirun used for runs with several ranks")
        ("llm-fit", po::value(&llm_fit), "llm-fit binary (default: next to llm-sweep)")
        ("cores", po::value(&cores)->default_value(0), "cores the runs may use (0: the CPUs this process may run on)")
        ("progress-interval", po::value(&progress_interval)->default_value(progress_interval), "seconds between progress lines")
        ("stop-after", po::value(&stop_after)->default_value(0), "testing: start no new run once this many have finished in this invocation; exit 3 (0: off)");
    po::variables_map vm;
    if (!llm::cli::parse(argc, argv, opts, vm, {"spec"})) return 0;
    const bool dry_run = vm.count("dry-run") > 0;
    if (!dry_run && out.empty()) throw llm::UsageError("--out is required (the folder for the runs and results)");
    if (max_concurrent < 1) throw llm::UsageError("--max-concurrent must be at least 1");
    if (max_retries < 0) throw llm::UsageError("--max-retries must be non-negative (0: a failed run is not retried)");
    if (cores < 0) throw llm::UsageError("--cores must be non-negative (0: all available)");
    if (stop_after < 0) throw llm::UsageError("--stop-after must be non-negative");
    if (!(progress_interval > 0)) throw llm::UsageError("--progress-interval must be positive");

    llm::sweep::SweepSpec spec;
    std::string spec_text;
    try {
      spec = llm::sweep::load_spec(spec_path);
      std::ifstream in(spec_path);
      std::stringstream ss;
      ss << in.rdbuf();
      spec_text = ss.str();
    } catch (const std::invalid_argument& e) {
      throw llm::UsageError(e.what());
    }
    auto need_file = [&](const std::string& file, const std::string& key, const std::string& fix) {
      if (!fs::exists(file))
        throw llm::UsageError(spec_path + ": [data] " + key + ": " + file + " does not exist (" + fix + ")");
    };
    need_file(spec.data_path + ".bin", "data-path", "write it with llm-prepare-data --output-prefix " + spec.data_path);
    if (!spec.valid_data_path.empty())
      need_file(spec.valid_data_path + ".bin", "valid-data-path",
                "write it with llm-prepare-data --output-prefix " + spec.valid_data_path);
    need_file(spec.tokenizer_model, "tokenizer-model", "llm-prepare-data --vocab-size N trains one");
    int64_t vocab = spec.vocab_size;
    if (vocab == 0) vocab = llm::data::Tokenizer(spec.tokenizer_model).vocab_size();
    std::vector<llm::sweep::RunPlan> plan;
    try {
      plan = llm::sweep::plan_runs(spec, vocab);
    } catch (const std::invalid_argument& e) {
      throw llm::UsageError(e.what());
    }
    int64_t data_tokens = 0;
    try {
      data_tokens = llm::data::TokenDataset(spec.data_path).size();
    } catch (const std::exception&) {
      // llm-train will name the problem with the file
    }
    std::cout << llm::sweep::plan_table(spec, plan, data_tokens);
    for (const auto& r : plan)
      if (data_tokens > 0 && r.tokens > data_tokens) {
        std::cout << "note: some runs train more than one epoch of " << spec.data_path << " (" << data_tokens
                  << " tokens): repeated data bends scaling laws; see the epochs column\n";
        break;
      }
    std::cout.flush();
    if (dry_run) return 0;

    llm::sweep::RunnerOptions o;
    o.spec_path = spec_path;
    o.spec_text = spec_text;
    o.out_dir = out;
    o.llm_train = llm_train.empty() ? (fs::path(self_dir()) / "llm-train").string() : llm_train;
    o.llm_fit = llm_fit.empty() ? (fs::path(self_dir()) / "llm-fit").string() : llm_fit;
    o.mpirun = mpirun;
    o.max_concurrent = max_concurrent;
    o.max_retries = max_retries;
    o.cores = cores;
    o.stop_after = stop_after;
    o.progress_interval = progress_interval;
    if (::access(o.llm_train.c_str(), X_OK) != 0)
      throw llm::UsageError("--llm-train " + o.llm_train + ": not an executable; build it (cmake --build build --target "
                            "llm-train) or name it with --llm-train PATH");
    if (spec.ranks > 1 && !on_path(mpirun))
      throw llm::UsageError("--mpirun " + mpirun + ": not found, and [layout] ranks = " + std::to_string(spec.ranks) +
                            " needs it; install Open MPI (openmpi-bin) or name it with --mpirun PATH");
    try {
      return llm::sweep::run_sweep(spec, plan, o, std::cout);
    } catch (const std::invalid_argument& e) {
      throw llm::UsageError(e.what());
    }
  });
}
