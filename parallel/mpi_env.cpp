#include "parallel/mpi_env.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

namespace llm {

// The variables mpirun (OpenMPI, MPICH, MVAPICH, Intel MPI) and srun set in
// every rank's environment; LLM_USE_MPI=1 forces MPI for other launchers.
static bool started_by_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS",
                        "MV2_COMM_WORLD_SIZE", "LLM_USE_MPI"})
    if (std::getenv(v)) return true;
  const char* ntasks = std::getenv("SLURM_NTASKS");
  return ntasks && std::atoi(ntasks) > 1 && std::getenv("SLURM_PROCID");
}

MpiEnv::MpiEnv(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized && !started_by_launcher()) return;  // a world of one, no MPI
  mpi_ = true;
  if (!initialized) MPI_Init(argc, argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_);
}

MpiEnv::~MpiEnv() {
  if (!mpi_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiEnv::fail(const std::string& prog, const std::string& msg, int code) const {
  if (world_ > 1) std::fprintf(stderr, "[rank %d] %s: error: %s\n", rank_, prog.c_str(), msg.c_str());
  else std::fprintf(stderr, "%s: error: %s\n", prog.c_str(), msg.c_str());
  std::fflush(stderr);
  if (world_ > 1) MPI_Abort(MPI_COMM_WORLD, code);  // takes every rank down: nobody hangs
  if (mpi_) MPI_Finalize();
  std::exit(code);
}

}  // namespace llm
