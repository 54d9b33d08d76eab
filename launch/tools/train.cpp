// llm-train: pretrain a LLaMA-style model. See --help and the README.
#include "core/cpu/blas_runtime.h"
#include <omp.h>
#include <sched.h>

#include <cstdio>
#include <exception>
#include <memory>

#include "data/tokenizer.h"
#include "launch/train_config.h"
#include "launch/trainer.h"
#include "parallel/mpi_env.h"
#include "parallel/process_grid.h"
#include "parallel/watchdog.h"

int main(int argc, char** argv) {
  llm::ensure_native_blas_kernels(argv, /*announce=*/true);
  llm::MpiEnv env(&argc, &argv);
  llm::TrainConfig cfg;
  try {
    auto parsed = llm::parse_train_args(argc, argv);
    if (!parsed) return 0;
    cfg = *parsed;
    if (!cfg.tokenizer_model.empty()) {
      const llm::data::Tokenizer tok(cfg.tokenizer_model);
      if (cfg.model.vocab_size != 0 && cfg.model.vocab_size != tok.vocab_size())
        throw llm::UsageError("--vocab-size " + std::to_string(cfg.model.vocab_size) + " differs from the " +
                              std::to_string(tok.vocab_size()) + " pieces of --tokenizer-model " +
                              cfg.tokenizer_model + ": drop --vocab-size");
      cfg.model.vocab_size = tok.vocab_size();
    }
    llm::validate(cfg, env.world_size());
    llm::set_comm_timeout(cfg.comm_timeout);  // the hang watchdog of every communicator
    llm::set_comm_stall_injection(cfg.inject_comm_stall_at, 1);
  } catch (const llm::UsageError& e) {
    env.fail("llm-train", e.what(), 2);
  } catch (const std::exception& e) {
    env.fail("llm-train", e.what(), 2);
  }
  // mpirun binds each rank to one core by default; OpenMP threads would then share it.
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) < omp_get_max_threads())
    std::fprintf(stderr, "warning: %d OpenMP threads but this process may run on only %d core(s); with mpirun use "
                 "--bind-to none or --map-by slot:PE=<threads per rank>\n", omp_get_max_threads(), CPU_COUNT(&cpus));
  // Only rank 0 logs; errors still reach stderr from the rank that found them.
  if (env.rank() != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) std::perror("llm-train: stdout");
  try {
    const llm::ParallelLayout layout = llm::make_layout(env.world_size(), static_cast<int>(cfg.tensor_parallel),
                                                        static_cast<int>(cfg.pipeline_parallel));
    auto grid_ptr = env.uses_mpi() ? std::make_unique<llm::ProcessGrid>(layout)
                                   : std::make_unique<llm::ProcessGrid>(layout, llm::ProcessGrid::Local{});
    llm::ProcessGrid& grid = *grid_ptr;
    llm::Trainer trainer(cfg, grid);
    const int rc = trainer.run();
    if (grid.world_size() > 1) std::printf("%s: %s\n", grid.describe().c_str(), llm::comm_report(grid).c_str());
    return rc;
  } catch (const std::exception& e) {
    env.fail("llm-train", e.what(), 1);
  }
}
