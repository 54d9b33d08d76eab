// The NCCL communicator on one GPU (a group of one made by create_single, and
// one made by create over a one-rank bootstrap): results equal the input for
// every collective, byte counters stay at zero, CPU tensors and bad sizes are
// refused naming the op, group and fix, the compute stream is ordered around
// an operation without host waits, and a stalled operation ends the job with
// the watchdog's report and exit code. With two or more GPUs, one thread per
// GPU forms a real group and checks the reductions and a ring exchange.
#include <gtest/gtest.h>

#include "tests/gpu/gpu_test_support.h"

#ifndef LLM_WITH_NCCL
TEST(Nccl, NotBuilt) { GTEST_SKIP() << "built without LLM_WITH_NCCL: NCCL tests skipped"; }
#else
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "core/cuda/runtime.h"
#include "parallel/nccl_communicator.h"
#include "parallel/watchdog.h"

namespace llm {
namespace {

constexpr auto kCat = MemoryCategory::Communication;

// Host <-> device through the compute stream (the stream every op orders against).
template <typename T>
Tensor upload(const std::vector<T>& v, DType dtype, int device = 0) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, dtype, kCat, Device::cuda(device));
  LLM_CUDA_CHECK(
      cudaMemcpyAsync(t.raw(), v.data(), t.nbytes(), cudaMemcpyHostToDevice, cuda::current_stream()));
  return t;
}
template <typename T>
std::vector<T> download(const Tensor& t) {
  std::vector<T> v(t.numel());
  LLM_CUDA_CHECK(cudaMemcpyAsync(v.data(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, cuda::current_stream()));
  LLM_CUDA_CHECK(cudaStreamSynchronize(cuda::current_stream()));
  return v;
}
std::vector<uint16_t> bf16_bits(const std::vector<float>& v) {
  std::vector<uint16_t> out;
  for (float f : v) out.push_back(bf16(f).bits);
  return out;
}

std::unique_ptr<NcclCommunicator> single() { return NcclCommunicator::create_single("single", 0); }

void expect_counters_zero(const Communicator& c) {
  for (CommOp op : {CommOp::AllReduce, CommOp::ReduceScatter, CommOp::AllGather, CommOp::Broadcast})
    EXPECT_EQ(c.bytes_sent(op), 0u) << comm_op_name(op);
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no std::invalid_argument thrown)";
}

const std::vector<float> kValues = {1.5f, -2.0f, 3.25f, 0.0f, 1e3f, -7.5f, 0.125f, 42.0f};

TEST(Nccl, AllReduceOfOneRankKeepsTheInput) {
  LLM_REQUIRE_GPU();
  auto c = single();
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  EXPECT_EQ(c->members(), std::vector<int>{0});
  EXPECT_EQ(c->name(), "single");
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
    Tensor f = upload(kValues, DType::F32);
    c->all_reduce(f, op);
    EXPECT_EQ(download<float>(f), kValues);
    const std::vector<int32_t> ints = {3, -1, 0, 7, 2147483647, -2147483647 - 1};
    Tensor i = upload(ints, DType::I32);
    c->all_reduce(i, op);
    EXPECT_EQ(download<int32_t>(i), ints);
    Tensor b = upload(bf16_bits(kValues), DType::BF16);
    c->all_reduce(b, op);
    EXPECT_EQ(download<uint16_t>(b), bf16_bits(kValues));
  }
  Tensor empty = Tensor::empty({0}, DType::F32, kCat, Device::cuda(0));
  c->all_reduce(empty);  // nothing to move, still a valid (skipped) operation
  expect_counters_zero(*c);
}

TEST(Nccl, ReduceScatterAndAllGatherOfOneRankCopyTheInput) {
  LLM_REQUIRE_GPU();
  auto c = single();
  Tensor in = upload(kValues, DType::F32);
  Tensor out = Tensor::empty({8}, DType::F32, kCat, Device::cuda(0));
  c->reduce_scatter(in, out, ReduceOp::Sum);
  EXPECT_EQ(download<float>(out), kValues);
  Tensor out2 = Tensor::empty({8}, DType::F32, kCat, Device::cuda(0));
  c->all_gather(in, out2);
  EXPECT_EQ(download<float>(out2), kValues);

  // In place: the output is the input's chunk 0, i.e. all of it.
  Tensor whole = in.flat_view(0, {8});
  c->reduce_scatter(in, whole, ReduceOp::Max);
  c->all_gather(whole, in);
  EXPECT_EQ(download<float>(in), kValues);

  Tensor bin = upload(bf16_bits(kValues), DType::BF16);
  Tensor bout = Tensor::empty({8}, DType::BF16, kCat, Device::cuda(0));
  c->all_gather(bin, bout);
  EXPECT_EQ(download<uint16_t>(bout), bf16_bits(kValues));
  Tensor iin = upload(std::vector<int32_t>{5, -6, 7}, DType::I32);
  Tensor iout = Tensor::empty({3}, DType::I32, kCat, Device::cuda(0));
  c->reduce_scatter(iin, iout, ReduceOp::Min);
  EXPECT_EQ(download<int32_t>(iout), (std::vector<int32_t>{5, -6, 7}));
  expect_counters_zero(*c);
}

TEST(Nccl, BroadcastOfOneRankKeepsTheInput) {
  LLM_REQUIRE_GPU();
  auto c = single();
  Tensor t = upload(kValues, DType::F32);
  c->broadcast(t, 0);
  EXPECT_EQ(download<float>(t), kValues);
  EXPECT_NE(error_of([&] { c->broadcast(t, 1); }).find("broadcast on group 'single' (size 1): root 1 is not a rank"),
            std::string::npos);
  expect_counters_zero(*c);
}

TEST(Nccl, SendRecvToItselfCopiesAndCountsBothSides) {
  LLM_REQUIRE_GPU();
  auto c = single();
  Tensor a = upload(kValues, DType::F32);
  Tensor b = Tensor::empty({8}, DType::F32, kCat, Device::cuda(0));
  c->send_recv_async(a, 0, b, 0, 3)->wait();
  EXPECT_EQ(download<float>(b), kValues);
  EXPECT_EQ(c->bytes_sent(CommOp::Send), 32u);
  EXPECT_EQ(c->bytes_sent(CommOp::Recv), 32u);
  EXPECT_EQ(c->bytes_sent_total(), 32u);  // recv bytes are not "sent"
  c->reset_counters();
  EXPECT_EQ(c->bytes_sent_total(), 0u);
}

TEST(Nccl, RejectsWrongDevicesAndShapesNamingOpGroupAndFix) {
  LLM_REQUIRE_GPU();
  auto c = single();
  Tensor cpu = Tensor::zeros({4}, DType::F32, kCat);
  std::string e = error_of([&] { c->all_reduce(cpu); });
  EXPECT_NE(e.find("all_reduce on group 'single' (size 1): the tensor F32[4] cpu is not on cuda:0"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("copy the tensor to cuda:0 first, or use the MPI communicator"), std::string::npos) << e;

  Tensor gpu4 = Tensor::zeros({4}, DType::F32, kCat, Device::cuda(0));
  e = error_of([&] { c->all_gather(gpu4, cpu); });
  EXPECT_NE(e.find("all_gather on group 'single' (size 1): output tensor F32[4] cpu is not on cuda:0"),
            std::string::npos)
      << e;
  Tensor gpu3 = Tensor::zeros({3}, DType::F32, kCat, Device::cuda(0));
  e = error_of([&] { c->reduce_scatter(gpu4, gpu3); });
  EXPECT_NE(e.find("reduce_scatter on group 'single' (size 1): input F32[4] cuda:0 must have size() = 1 times"),
            std::string::npos)
      << e;
  Tensor ints = Tensor::zeros({4}, DType::I32, kCat, Device::cuda(0));
  e = error_of([&] { c->all_gather(gpu4, ints); });
  EXPECT_NE(e.find("same dtype"), std::string::npos) << e;
  e = error_of([&] { c->send(gpu4, 0); });
  EXPECT_NE(e.find("send on group 'single' (size 1): peer 0 is this rank"), std::string::npos) << e;
  EXPECT_NE(e.find("use send_recv_async"), std::string::npos) << e;
  e = error_of([&] { c->recv(gpu4, 1); });
  EXPECT_NE(e.find("peer 1 is not a rank of the group"), std::string::npos) << e;
  e = error_of([&] { c->send_recv_async(gpu4, 0, gpu3, 0, -1); });
  EXPECT_NE(e.find("tag -1 is negative"), std::string::npos) << e;
  e = error_of([&] { NcclCommunicator::create_single("bad", 4096); });
  EXPECT_NE(e.find("group 'bad': CUDA device 4096 is not visible"), std::string::npos) << e;
  // Nothing was issued by the refused calls.
  expect_counters_zero(*c);
}

TEST(Nccl, WaitAndDoneOnACompletedHandleReturn) {
  LLM_REQUIRE_GPU();
  auto c = single();
  Tensor t = upload(kValues, DType::F32);
  auto h = c->all_reduce_async(t, ReduceOp::Sum);
  c->synchronize();
  EXPECT_TRUE(h->done());
  h->wait();
  h->wait();
  EXPECT_TRUE(h->done());
  c->synchronize();  // nothing in flight: returns at once
  set_comm_timeout(5);
  c->barrier();
  set_comm_timeout(0);
}

// 64 MiB so that an unordered read would see the zeros: the input is written
// and the output cleared on the compute stream without host waits, the
// gather runs on the communicator's stream, and the read and a later
// overwrite of the input go back on the compute stream after wait().
TEST(Nccl, ComputeStreamIsOrderedAroundAnOperationWithoutHostWaits) {
  LLM_REQUIRE_GPU();
  auto c = single();
  const int64_t n = int64_t{16} << 20;
  std::vector<float> host(n);
  for (int64_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 1000) + 0.5f;
  Tensor in = upload(host, DType::F32);
  Tensor out = Tensor::empty({n}, DType::F32, kCat, Device::cuda(0));
  LLM_CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), cuda::current_stream()));
  auto h = c->all_gather_async(in, out);
  h->wait();
  LLM_CUDA_CHECK(cudaMemsetAsync(in.raw(), 0, in.nbytes(), cuda::current_stream()));
  EXPECT_TRUE(download<float>(out) == host);

  // The blocking form is stream-ordered too; a host read through the legacy
  // stream needs synchronize() first.
  Tensor again = upload(host, DType::F32);
  Tensor out2 = Tensor::empty({n}, DType::F32, kCat, Device::cuda(0));
  c->reduce_scatter(again, out2, ReduceOp::Sum);
  c->synchronize();
  std::vector<float> got(n);
  LLM_CUDA_CHECK(cudaMemcpy(got.data(), out2.raw(), out2.nbytes(), cudaMemcpyDeviceToHost));
  EXPECT_TRUE(got == host);
}

// A CPU bootstrap of one rank (what an MpiCommunicator of one would do).
class Done : public CommHandle {
 public:
  void wait() override {}
  bool done() override { return true; }
};
class LocalBootstrap : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::vector<int>& members() const override { return members_; }
  const std::string& name() const override { return name_; }
  CommHandlePtr all_reduce_async(Tensor&, ReduceOp) override { throw std::logic_error("unused"); }
  CommHandlePtr reduce_scatter_async(const Tensor&, Tensor&, ReduceOp) override { throw std::logic_error("unused"); }
  CommHandlePtr all_gather_async(const Tensor&, Tensor&) override { throw std::logic_error("unused"); }
  CommHandlePtr broadcast_async(Tensor& t, int) override {
    ++broadcasts;
    EXPECT_TRUE(t.device().is_cpu());
    return std::make_unique<Done>();
  }
  CommHandlePtr send_async(const Tensor&, int, int) override { throw std::logic_error("unused"); }
  CommHandlePtr recv_async(Tensor&, int, int) override { throw std::logic_error("unused"); }
  void barrier() override {}
  int broadcasts = 0;

 private:
  std::vector<int> members_{5};
  std::string name_ = "boot";
};

TEST(Nccl, CreateOverAOneRankBootstrap) {
  LLM_REQUIRE_GPU();
  LocalBootstrap boot;
  auto c = NcclCommunicator::create(boot, "tp", 0);
  EXPECT_EQ(boot.broadcasts, 1);
  EXPECT_EQ(c->members(), std::vector<int>{5});
  EXPECT_EQ(c->name(), "tp");
  Tensor t = upload(kValues, DType::F32);
  c->all_reduce(t, ReduceOp::Sum);
  EXPECT_EQ(download<float>(t), kValues);
  EXPECT_EQ(c->describe("all_reduce", 32), "all_reduce on group 'tp' (ranks 5) of 32 bytes");
}

// A stalled operation (here: the compute stream it waits for is held by a
// host function for 5 s) ends the job after --comm-timeout with the report.
TEST(NcclDeathTest, StalledOperationEndsTheJobWithTheWatchdogReport) {
  LLM_REQUIRE_GPU();
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process: CUDA does not survive fork()
  EXPECT_EXIT(
      {
        alarm(60);  // never hang the suite, whatever happens
        auto c = single();
        set_comm_timeout(0.5);
        set_comm_context_iteration(4);
        LLM_CUDA_CHECK(cudaLaunchHostFunc(
            cuda::current_stream(), [](void*) { sleep(5); }, nullptr));
        Tensor t = Tensor::empty({4}, DType::F32, kCat, Device::cuda(0));
        c->all_reduce(t, ReduceOp::Sum);  // returns at once: stream-ordered
        c->synchronize();                 // the host wait times out
      },
      ::testing::ExitedWithCode(kCommHangExitCode),
      "\\[rank 0\\] nccl_test: error: hang: all_reduce on group 'single' \\(ranks 0\\) of 16 bytes has waited "
      "[0-9.]+ s \\(--comm-timeout 0.5\\) at iteration 4; a peer may have died or stalled");
}

// ---- several GPUs: one thread per GPU, bootstrapped through shared memory ----

struct SharedId {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<char> bytes;
  bool ready = false;
};

class ThreadBootstrap : public LocalBootstrap {
 public:
  ThreadBootstrap(int rank, int size, SharedId& shared) : rank_(rank), size_(size), shared_(shared) {
    members_.resize(size);
    std::iota(members_.begin(), members_.end(), 0);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::vector<int>& members() const override { return members_; }
  CommHandlePtr broadcast_async(Tensor& t, int root) override {
    std::unique_lock<std::mutex> lock(shared_.mu);
    if (rank_ == root) {
      shared_.bytes.assign(static_cast<char*>(t.raw()), static_cast<char*>(t.raw()) + t.nbytes());
      shared_.ready = true;
      shared_.cv.notify_all();
    } else {
      shared_.cv.wait(lock, [&] { return shared_.ready; });
      std::memcpy(t.raw(), shared_.bytes.data(), t.nbytes());
    }
    return std::make_unique<Done>();
  }

 private:
  int rank_, size_;
  SharedId& shared_;
  std::vector<int> members_;
};

TEST(Nccl, SeveralGpusReduceGatherAndExchange) {
  LLM_REQUIRE_GPU();
  int devices = 0;
  LLM_CUDA_CHECK(cudaGetDeviceCount(&devices));
  if (devices < 2) GTEST_SKIP() << "one CUDA device: the multi-GPU group test needs two or more";
  const int n = std::min(devices, 4);
  SharedId shared;
  struct Result {
    std::vector<float> sum, max, gathered, scattered;
    std::vector<int32_t> from_prev;
    uint64_t all_reduce_bytes = 0, send_bytes = 0;
    std::exception_ptr error;
  };
  std::vector<Result> results(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        LLM_CUDA_CHECK(cudaSetDevice(r));
        ThreadBootstrap boot(r, n, shared);
        auto c = NcclCommunicator::create(boot, "world", r);
        Result& res = results[r];
        const float v = static_cast<float>(r + 1);
        Tensor s = upload(std::vector<float>{v, 2 * v}, DType::F32, r);
        c->all_reduce(s, ReduceOp::Sum);
        res.sum = download<float>(s);
        Tensor m = upload(std::vector<float>{v, -v}, DType::F32, r);
        c->all_reduce(m, ReduceOp::Max);
        res.max = download<float>(m);
        res.all_reduce_bytes = c->bytes_sent(CommOp::AllReduce);
        Tensor mine = upload(std::vector<float>{v}, DType::F32, r);
        Tensor all = Tensor::empty({n}, DType::F32, kCat, Device::cuda(r));
        c->all_gather(mine, all);
        res.gathered = download<float>(all);
        std::vector<float> chunks(n);
        for (int j = 0; j < n; ++j) chunks[j] = v * static_cast<float>(j + 1);
        Tensor parts = upload(chunks, DType::F32, r);
        Tensor part = Tensor::empty({1}, DType::F32, kCat, Device::cuda(r));
        c->reduce_scatter(parts, part, ReduceOp::Sum);
        res.scattered = download<float>(part);
        Tensor out = upload(std::vector<int32_t>{r, 10 * r}, DType::I32, r);
        Tensor in = Tensor::empty({2}, DType::I32, kCat, Device::cuda(r));
        c->send_recv_async(out, (r + 1) % n, in, (r + n - 1) % n, 0)->wait();
        res.from_prev = download<int32_t>(in);
        res.send_bytes = c->bytes_sent(CommOp::Send);
        c->barrier();
      } catch (...) {
        results[r].error = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  const float total = n * (n + 1) / 2.0f;
  for (int r = 0; r < n; ++r) {
    if (results[r].error) std::rethrow_exception(results[r].error);
    const Result& res = results[r];
    EXPECT_EQ(res.sum, (std::vector<float>{total, 2 * total})) << "rank " << r;
    EXPECT_EQ(res.max, (std::vector<float>{float(n), -1.0f})) << "rank " << r;
    std::vector<float> ranks(n);
    std::iota(ranks.begin(), ranks.end(), 1.0f);
    EXPECT_EQ(res.gathered, ranks) << "rank " << r;
    EXPECT_EQ(res.scattered, std::vector<float>{total * float(r + 1)}) << "rank " << r;
    const int prev = (r + n - 1) % n;
    EXPECT_EQ(res.from_prev, (std::vector<int32_t>{prev, 10 * prev})) << "rank " << r;
    // Two all-reduces of 8 bytes: 2·8·(n−1)/n each (rounded down).
    EXPECT_EQ(res.all_reduce_bytes, 2 * (2 * (8 * uint64_t(n - 1) / n))) << "rank " << r;
    EXPECT_EQ(res.send_bytes, 8u) << "rank " << r;
  }
}

}  // namespace
}  // namespace llm
#endif  // LLM_WITH_NCCL
