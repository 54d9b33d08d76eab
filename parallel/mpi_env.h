// The MPI process environment of a job: init/finalize, world rank and size,
// and a job-wide abort so that a fatal error on one rank never leaves the
// others hanging. Layers never see this; the process grid and communicators
// (tensor/pipeline/data groups) are built on it.
#pragma once
#include <string>

namespace llm {

class MpiEnv {
 public:
  MpiEnv(int* argc, char*** argv);
  ~MpiEnv();
  MpiEnv(const MpiEnv&) = delete;
  MpiEnv& operator=(const MpiEnv&) = delete;
  int rank() const { return rank_; }
  // False for a process started without a launcher (no mpirun/srun in its
  // environment): it is a world of one and MPI is never initialised, so it
  // runs where no MPI runtime is installed (a lone GPU machine).
  bool uses_mpi() const { return mpi_; }
  int world_size() const { return world_; }
  // Prints "[rank r] prog: error: msg" and ends the whole job with `code`.
  [[noreturn]] void fail(const std::string& prog, const std::string& msg, int code) const;

 private:
  int rank_ = 0, world_ = 1;
  bool mpi_ = false;
};

}  // namespace llm
