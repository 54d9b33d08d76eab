#include "parallel/mpi_env.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

namespace llm {

MpiEnv::MpiEnv(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) MPI_Init(argc, argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_);
}

MpiEnv::~MpiEnv() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiEnv::fail(const std::string& prog, const std::string& msg, int code) const {
  if (world_ > 1) std::fprintf(stderr, "[rank %d] %s: error: %s\n", rank_, prog.c_str(), msg.c_str());
  else std::fprintf(stderr, "%s: error: %s\n", prog.c_str(), msg.c_str());
  std::fflush(stderr);
  if (world_ > 1) MPI_Abort(MPI_COMM_WORLD, code);  // takes every rank down: nobody hangs
  MPI_Finalize();
  std::exit(code);
}

}  // namespace llm
