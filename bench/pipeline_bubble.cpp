// Pipeline bubble of llm::run_pipeline (parallel/pipeline_schedule.h) against
// the textbook (p − 1)/m, with synthetic stage work: every stage's forward of
// a micro-batch sleeps t_f, its backward sleeps t_b (default 2·t_f), and a
// small activation travels between stages through the real MpiCommunicator.
// Sleeping, not spinning, so that more ranks than cores (mpiexec
// --oversubscribe) do not distort the timing. This isolates the schedule:
// real kernels add imbalance between stages and communication time.
//
//   mpiexec -n P build/bin/llm-bench-pipeline-bubble [--tf-ms 20] [--tb-ratio 2]
//       [--micro-batches 4,8,16] [--schedules 1f1b,afab] [--steps 5] [--warmup 1]
//       [--activation-elements 1024]
//
// Each step: barrier, run_pipeline over m micro-batches, each rank's wall time;
// T is the slowest rank's, median over --steps steps (after --warmup). Rank 0
// prints one line per (schedule, m):
//   RESULT p=P m=M schedule=S tf_ms=.. tb_ms=.. T_ms=.. ideal_ms=.. work_ms=.. bubble=.. theory=.. ratio=..
// with ideal = m·(t_f + t_b) (no bubble), bubble = (T − ideal)/ideal, theory =
// (p − 1)/m, ratio = bubble/theory; work_ms is the time stage 0 measured
// inside its forward/backward calls (the sleeps as the OS delivered them).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "parallel/pipeline_schedule.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  double tf_ms = 20.0, tb_ratio = 2.0;
  std::vector<int64_t> micro = {4, 8, 16};
  std::vector<std::string> schedules = {"1f1b", "afab"};
  int steps = 5, warmup = 1;
  int64_t activation_elements = 1024;
};

const char* kUsage =
    "usage: mpiexec -n P llm-bench-pipeline-bubble [options]\n"
    "Runs llm::run_pipeline with sleeping stages (forward t_f, backward t_b) and prints the measured\n"
    "bubble (T - m(t_f+t_b)) / (m(t_f+t_b)) next to (p-1)/m, one RESULT line per schedule and m.\n"
    "  --tf-ms X                forward time per micro-batch and stage, ms (default 20)\n"
    "  --tb-ratio R             t_b = R * t_f (default 2)\n"
    "  --micro-batches A,B,..   micro-batch counts m (default 4,8,16)\n"
    "  --schedules S,..         1f1b, afab, 1f1b:vN (interleaved, N chunks per rank) (default 1f1b,afab)\n"
    "  --steps N                timed steps per point; the median is reported (default 5)\n"
    "  --warmup N               untimed steps first (default 1)\n"
    "  --activation-elements N  fp32 elements sent between stages (default 1024)\n"
    "  -h, --help               this help\n";

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// Returns 0 to run, 1 for --help, 2 for a usage error (message in err).
int parse(int argc, char** argv, Options& o, std::string& err) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") return 1;
    if (i + 1 >= argc) {
      err = a + " needs a value (or is unknown)";
      return 2;
    }
    const std::string v = argv[++i];
    try {
      size_t used = 0;
      auto whole = [&](size_t n) {
        if (n != v.size()) throw std::invalid_argument(v);
      };
      if (a == "--tf-ms") { o.tf_ms = std::stod(v, &used); whole(used); }
      else if (a == "--tb-ratio") { o.tb_ratio = std::stod(v, &used); whole(used); }
      else if (a == "--steps") { o.steps = std::stoi(v, &used); whole(used); }
      else if (a == "--warmup") { o.warmup = std::stoi(v, &used); whole(used); }
      else if (a == "--activation-elements") { o.activation_elements = std::stoll(v, &used); whole(used); }
      else if (a == "--micro-batches") {
        o.micro.clear();
        for (const auto& s : split_commas(v)) {
          o.micro.push_back(std::stoll(s, &used));
          if (used != s.size() || o.micro.back() < 1) throw std::invalid_argument(s);
        }
        if (o.micro.empty()) throw std::invalid_argument(v);
      } else if (a == "--schedules") {
        o.schedules = split_commas(v);
        if (o.schedules.empty()) throw std::invalid_argument(v);
        for (const auto& s : o.schedules) llm::pipeline_schedule_from_name(s.substr(0, s.find(':')));  // validates
      } else {
        err = "unknown option " + a;
        return 2;
      }
    } catch (const std::exception&) {
      err = "bad value '" + v + "' for " + a;
      return 2;
    }
  }
  if (o.tf_ms <= 0 || o.tb_ratio <= 0 || o.steps < 1 || o.warmup < 0 || o.activation_elements < 1) {
    err = "--tf-ms, --tb-ratio, --steps, --activation-elements must be positive, --warmup >= 0";
    return 2;
  }
  return 0;
}

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  Options o;
  std::string err;
  const int pr = parse(argc, argv, o, err);
  if (pr != 0) {
    if (rank == 0) {
      if (pr == 2) std::fprintf(stderr, "llm-bench-pipeline-bubble: error: %s\n", err.c_str());
      std::fputs(kUsage, pr == 1 ? stdout : stderr);
    }
    MPI_Finalize();
    return pr == 1 ? 0 : 2;
  }

  llm::MpiCommunicator pp(MPI_COMM_WORLD, "pp");  // one pipeline over every rank: stage = rank
  const int p = pp.size();
  const auto tf = std::chrono::duration<double, std::milli>(o.tf_ms);
  const auto tb = std::chrono::duration<double, std::milli>(o.tf_ms * o.tb_ratio);
  double work_ms = 0.0;  // time spent inside forward/backward on this rank, this step

  llm::PipelineStep step;
  step.activation_shape = {o.activation_elements};
  step.dtype = llm::DType::F32;
  auto activation = [&](float v) {
    llm::Tensor t = llm::Tensor::empty(step.activation_shape, llm::DType::F32, llm::MemoryCategory::Activations);
    std::fill(t.data<float>(), t.data<float>() + t.numel(), v);
    return t;
  };
  int chunks = 1;  // interleaved: each of the v chunks does 1/v of a stage's work
  step.forward = [&](int64_t m, int, const llm::Tensor&) {
    const auto t0 = Clock::now();
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(tf / chunks));
    work_ms += ms_since(t0);
    return activation(static_cast<float>(m));
  };
  step.backward = [&](int64_t m, int, const llm::Tensor&) {
    const auto t0 = Clock::now();
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(tb / chunks));
    work_ms += ms_since(t0);
    return activation(static_cast<float>(-m));
  };

  for (const auto& sname : o.schedules) {
    // "1f1b:v2": the interleaved schedule with 2 model chunks per rank.
    const llm::PipelineSchedule schedule = llm::pipeline_schedule_from_name(sname.substr(0, sname.find(':')));
    chunks = sname.find(":v") == std::string::npos ? 1 : std::stoi(sname.substr(sname.find(":v") + 2));
    step.chunks = chunks;
    for (const int64_t m : o.micro) {
      std::vector<double> times, works;
      for (int s = 0; s < o.warmup + o.steps; ++s) {
        pp.barrier();
        work_ms = 0.0;
        const auto t0 = Clock::now();
        llm::run_pipeline(schedule, m, pp, step);
        double mine[2] = {ms_since(t0), work_ms}, slowest[2] = {0, 0};
        // T: the slowest rank's wall time; work: the most any rank spent in its stage calls.
        MPI_Allreduce(mine, slowest, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (s >= o.warmup) {
          times.push_back(slowest[0]);
          works.push_back(slowest[1]);
        }
      }
      std::sort(times.begin(), times.end());
      std::sort(works.begin(), works.end());
      const double T = times[times.size() / 2], work = works[works.size() / 2];
      const double ideal = static_cast<double>(m) * (tf.count() + tb.count());
      const double bubble = (T - ideal) / ideal,
                   theory = static_cast<double>(p - 1) / static_cast<double>(m * chunks);
      if (rank == 0) {
        std::printf("RESULT p=%d m=%lld schedule=%s tf_ms=%.3f tb_ms=%.3f T_ms=%.3f T_min_ms=%.3f T_max_ms=%.3f "
                    "ideal_ms=%.3f work_ms=%.3f bubble=%.5f theory=%.5f ratio=%.4f\n",
                    p, static_cast<long long>(m), sname.c_str(), tf.count(), tb.count(), T, times.front(),
                    times.back(), ideal, work, bubble, theory, p > 1 ? bubble / theory : 0.0);
        std::fflush(stdout);
      }
    }
  }
  MPI_Finalize();
  return 0;
}
