// main() for GoogleTest binaries run under mpiexec: MPI init/finalize, output
// from rank 0 only (failures from any rank, prefixed with it), the job aborted
// as soon as a test fails on some rank (the others would wait forever in their
// next collective), and the exit status agreed by all ranks.
// Include it from exactly one file of an mpi test.
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

namespace llm::test {

inline int mpi_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

class MpiFailureListener : public ::testing::EmptyTestEventListener {
 public:
  explicit MpiFailureListener(bool print) : print_(print) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (print_ && r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", mpi_rank(), r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.message());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (!info.result()->Failed()) return;
    std::fprintf(stderr, "[rank %d] %s.%s failed: aborting the job\n", mpi_rank(), info.test_suite_name(),
                 info.name());
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

 private:
  bool print_;
};

}  // namespace llm::test

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  const bool root = llm::test::mpi_rank() == 0;
  if (!root) delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new llm::test::MpiFailureListener(!root));
  int rc = RUN_ALL_TESTS(), all = 0;
  MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return all;
}
