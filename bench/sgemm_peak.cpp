// Measures the fp32 GEMM rate of this machine with OpenBLAS (the practical peak
// that llm-train's GFLOP/s is compared against in bench/train_throughput.sh).
//
//   g++ -O3 -march=native bench/sgemm_peak.cpp $(pkg-config --cflags --libs openblas) -o sgemm_peak
//   OPENBLAS_NUM_THREADS=2 ./sgemm_peak [n=2048] [reps=5]
//
// Prints one line: "sgemm n=N threads=T parallel=P core=C best_gflops=G median_gflops=M", C being the
// kernel set OpenBLAS picked (a DYNAMIC_ARCH build falls back to e.g. "Prescott" on a CPU
// it does not recognise; OPENBLAS_CORETYPE=SkylakeX overrides that).
// Threads: OpenBLAS reads OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS) itself.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

extern "C" int openblas_get_num_threads(void);
extern "C" char* openblas_get_corename(void);
extern "C" int openblas_get_parallel(void);  // 0 sequential, 1 pthreads, 2 OpenMP

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 2048;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  if (n <= 0 || reps <= 0) {
    std::fprintf(stderr, "usage: %s [n>0] [reps>0]\n", argv[0]);
    return 2;
  }
  std::vector<float> a(static_cast<size_t>(n) * n), b(a.size()), c(a.size(), 0.0f);
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& x : a) x = u(rng);
  for (auto& x : b) x = u(rng);

  auto run = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(),
                n);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  run();  // warm-up: thread pool start, page faults
  std::vector<double> g;
  for (int r = 0; r < reps; ++r) g.push_back(2.0 * n * static_cast<double>(n) * n / run() / 1e9);
  std::sort(g.begin(), g.end());
  volatile float sink = c[static_cast<size_t>(n) * n / 2];
  (void)sink;
  const int par = openblas_get_parallel();
  std::printf("sgemm n=%d threads=%d parallel=%s core=%s best_gflops=%.2f median_gflops=%.2f\n", n,
              openblas_get_num_threads(), par == 2 ? "openmp" : par == 1 ? "pthreads" : "sequential",
              openblas_get_corename(), g.back(), g[g.size() / 2]);
  return 0;
}
