// The MPI Communicator on 2 ranks: results of every operation, in each dtype
// it supports, the asynchronous handles, the byte counters against the ring
// formulas, and the errors for mismatched arguments.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "parallel/mpi_communicator.h"
#include "tests/support/mpi_test_main.h"

namespace llm {
namespace {

constexpr auto kCat = MemoryCategory::Communication;

MpiCommunicator& world() {
  static MpiCommunicator c(MPI_COMM_WORLD, "world");
  return c;
}

template <typename T> Tensor filled(int64_t n, T (*f)(int64_t)) {
  Tensor t = Tensor::empty({n}, dtype_of<T>(), kCat);
  for (int64_t i = 0; i < n; ++i) t.data<T>()[i] = f(i);
  return t;
}

template <typename T> class AllReduceTest : public ::testing::Test {};
using ReduceTypes = ::testing::Types<float, double, int32_t>;
TYPED_TEST_SUITE(AllReduceTest, ReduceTypes);

TYPED_TEST(AllReduceTest, SumMaxMinOfRankDependentValues) {
  using T = TypeParam;
  auto& c = world();
  const int r = c.rank(), p = c.size();
  const int64_t n = 37;
  auto make = [&] {
    Tensor t = Tensor::empty({n}, dtype_of<T>(), kCat);
    for (int64_t i = 0; i < n; ++i) t.data<T>()[i] = static_cast<T>((r + 1) * (i + 1) * (i % 2 ? -1 : 1));
    return t;
  };
  Tensor sum = make(), mx = make(), mn = make();
  c.all_reduce(sum, ReduceOp::Sum);
  c.all_reduce(mx, ReduceOp::Max);
  c.all_reduce(mn, ReduceOp::Min);
  for (int64_t i = 0; i < n; ++i) {
    const T sign = static_cast<T>(i % 2 ? -1 : 1), v = static_cast<T>(i + 1);
    EXPECT_EQ(sum.data<T>()[i], static_cast<T>(sign * v * (p * (p + 1) / 2))) << i;
    EXPECT_EQ(mx.data<T>()[i], sign > 0 ? v * p : -v) << i;
    EXPECT_EQ(mn.data<T>()[i], sign > 0 ? v : -v * p) << i;
  }
}

TEST(Communicator, MembersRankSizeName) {
  auto& c = world();
  int r, p;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  EXPECT_EQ(c.rank(), r);
  EXPECT_EQ(c.size(), p);
  std::vector<int> all(p);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(c.members(), all);
  EXPECT_EQ(c.name(), "world");

  // A split into groups of one: collectives are no-ops that count no bytes.
  auto self = MpiCommunicator::split(MPI_COMM_WORLD, r, 0, "self");
  EXPECT_EQ(self->size(), 1);
  EXPECT_EQ(self->members(), std::vector<int>{r});
  Tensor t = filled<float>(4, [](int64_t i) { return float(i); });
  self->all_reduce(t);
  EXPECT_EQ(t.data<float>()[3], 3.0f);
  EXPECT_EQ(self->bytes_sent_total(), 0u);
}

TEST(Communicator, ReduceScatterGivesChunkRank) {
  auto& c = world();
  const int r = c.rank(), p = c.size();
  const int64_t n = 5;
  Tensor in = Tensor::empty({p * n}, DType::F32, kCat), out = Tensor::empty({n}, DType::F32, kCat);
  for (int64_t j = 0; j < p * n; ++j) in.data<float>()[j] = float(r * 1000 + j);
  c.reduce_scatter(in, out);
  const float rank_sum = float(1000 * p * (p - 1) / 2);
  for (int64_t k = 0; k < n; ++k) EXPECT_EQ(out.data<float>()[k], rank_sum + p * float(r * n + k)) << k;

  // In place: out is chunk rank() of in.
  for (int64_t j = 0; j < p * n; ++j) in.data<float>()[j] = float(r * 1000 + j);
  Tensor mine = in.flat_view(r * n, {n});
  c.reduce_scatter(in, mine, ReduceOp::Max);
  for (int64_t k = 0; k < n; ++k) EXPECT_EQ(mine.data<float>()[k], float((p - 1) * 1000 + r * n + k)) << k;
}

TEST(Communicator, AllGatherPutsRankRAtChunkR) {
  auto& c = world();
  const int r = c.rank(), p = c.size();
  const int64_t n = 3;
  Tensor in = Tensor::empty({n}, DType::I32, kCat), out = Tensor::empty({p * n}, DType::I32, kCat);
  for (int64_t k = 0; k < n; ++k) in.data<int32_t>()[k] = r * 10 + int(k);
  c.all_gather(in, out);
  for (int q = 0; q < p; ++q)
    for (int64_t k = 0; k < n; ++k) EXPECT_EQ(out.data<int32_t>()[q * n + k], q * 10 + k);

  // BF16 moves as bytes; in place (input is chunk rank() of the output).
  Tensor buf = Tensor::zeros({p * n}, DType::BF16, kCat);
  for (int64_t k = 0; k < n; ++k) buf.data<bf16>()[r * n + k] = bf16(float(r) + 0.5f * float(k));
  Tensor mine = buf.flat_view(r * n, {n});
  c.all_gather(mine, buf);
  for (int q = 0; q < p; ++q)
    for (int64_t k = 0; k < n; ++k) EXPECT_EQ(float(buf.data<bf16>()[q * n + k]), float(q) + 0.5f * float(k));
}

TEST(Communicator, BroadcastFromRoot1) {
  auto& c = world();
  const int r = c.rank();
  Tensor t = Tensor::empty({6}, DType::F64, kCat);
  for (int i = 0; i < 6; ++i) t.data<double>()[i] = r * 100.0 + i + 0.25;
  c.broadcast(t, 1);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t.data<double>()[i], 100.0 + i + 0.25);
  Tensor h = Tensor::empty({2}, DType::F16, kCat);
  static_cast<uint16_t*>(h.raw())[0] = static_cast<uint16_t>(0x3c00 + r);  // bits, not arithmetic
  static_cast<uint16_t*>(h.raw())[1] = 0;
  c.broadcast(h, 1);
  EXPECT_EQ(static_cast<uint16_t*>(h.raw())[0], 0x3c01);
}

TEST(Communicator, SendRecvRingMatchesTags) {
  auto& c = world();
  const int r = c.rank(), p = c.size(), next = (r + 1) % p, prev = (r + p - 1) % p;
  Tensor a = filled<float>(4, [](int64_t i) { return float(i); }), b = Tensor::empty({2}, DType::I32, kCat);
  for (int i = 0; i < 4; ++i) a.data<float>()[i] += 10.0f * r;
  b.data<int32_t>()[0] = r;
  b.data<int32_t>()[1] = -r;
  Tensor ga = Tensor::empty({4}, DType::F32, kCat), gb = Tensor::empty({2}, DType::I32, kCat);
  // Receive tag 9 first although tag 7 was sent first: tags select the message.
  auto s7 = c.send_async(a, next, 7);
  auto s9 = c.send_async(b, next, 9);
  c.recv(gb, prev, 9);
  c.recv(ga, prev, 7);
  s9->wait();
  s7->wait();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(ga.data<float>()[i], 10.0f * prev + i);
  EXPECT_EQ(gb.data<int32_t>()[0], prev);
  EXPECT_EQ(gb.data<int32_t>()[1], -prev);
}

TEST(Communicator, AsyncHandlesWaitInReverseOrder) {
  auto& c = world();
  const int p = c.size();
  Tensor x = filled<float>(1000, [](int64_t i) { return float(i); });
  Tensor y = filled<double>(10, [](int64_t i) { return double(-i); });
  auto hx = c.all_reduce_async(x, ReduceOp::Sum);
  auto hy = c.all_reduce_async(y, ReduceOp::Sum);
  hy->wait();
  hx->wait();
  EXPECT_TRUE(hx->done());  // complete handles stay done; wait() again is a no-op
  hx->wait();
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(x.data<float>()[i], float(p * i));
  for (int i = 0; i < 10; ++i) ASSERT_EQ(y.data<double>()[i], -double(p * i));

  // Polling with done() drives progress to completion.
  Tensor z = filled<int32_t>(8, [](int64_t i) { return int32_t(i); });
  auto hz = c.all_reduce_async(z, ReduceOp::Max);
  while (!hz->done()) {
  }
  EXPECT_EQ(z.data<int32_t>()[7], 7);

  // A dropped handle waits: the tensor is complete once the handle is gone.
  Tensor w = filled<int32_t>(3, [](int64_t i) { return int32_t(i + 1); });
  c.all_reduce_async(w, ReduceOp::Sum).reset();
  EXPECT_EQ(w.data<int32_t>()[2], 3 * p);
}

TEST(Communicator, ByteCountersFollowRingFormulas) {
  auto& c = world();
  const int r = c.rank(), p = c.size();
  c.reset_counters();
  EXPECT_EQ(c.bytes_sent_total(), 0u);

  Tensor t = Tensor::zeros({1000}, DType::F32, kCat);  // B = 4000
  c.all_reduce(t);
  EXPECT_EQ(c.bytes_sent(CommOp::AllReduce), 2u * 4000 * (p - 1) / p);
  Tensor big = Tensor::zeros({p * 250}, DType::F64, kCat), part = Tensor::zeros({250}, DType::F64, kCat);
  c.reduce_scatter(big, part);  // whole B = p·2000
  EXPECT_EQ(c.bytes_sent(CommOp::ReduceScatter), uint64_t(p) * 2000 * (p - 1) / p);
  Tensor g = Tensor::zeros({p * 100}, DType::BF16, kCat), mine = Tensor::zeros({100}, DType::BF16, kCat);
  c.all_gather(mine, g);  // whole B = p·200
  EXPECT_EQ(c.bytes_sent(CommOp::AllGather), uint64_t(p) * 200 * (p - 1) / p);
  Tensor b = Tensor::zeros({10}, DType::I32, kCat);
  c.broadcast(b, 1);
  EXPECT_EQ(c.bytes_sent(CommOp::Broadcast), r == 1 ? 40u : 0u);
  Tensor s = Tensor::zeros({7}, DType::F32, kCat), q = Tensor::zeros({7}, DType::F32, kCat);
  auto hs = c.send_async(s, (r + 1) % p, 0);
  c.recv(q, (r + p - 1) % p, 0);
  hs->wait();
  EXPECT_EQ(c.bytes_sent(CommOp::Send), 28u);
  EXPECT_EQ(c.bytes_sent(CommOp::Recv), 28u);  // received; not part of the total
  EXPECT_EQ(c.bytes_sent_total(), c.bytes_sent(CommOp::AllReduce) + c.bytes_sent(CommOp::ReduceScatter) +
                                      c.bytes_sent(CommOp::AllGather) + c.bytes_sent(CommOp::Broadcast) + 28u);
  // Counts accumulate, and the async form counts when started.
  auto h = c.all_reduce_async(t, ReduceOp::Sum);
  EXPECT_EQ(c.bytes_sent(CommOp::AllReduce), 4u * 4000 * (p - 1) / p);
  h->wait();
  c.reset_counters();
  EXPECT_EQ(c.bytes_sent_total(), 0u);
  EXPECT_EQ(c.bytes_sent(CommOp::Recv), 0u);
  EXPECT_STREQ(comm_op_name(CommOp::ReduceScatter), "reduce_scatter");
}

// Checks happen before any MPI call, identically on every rank, so a bad call
// throws everywhere and nobody is left waiting in a collective.
template <typename F> std::string error_of(F f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "no std::invalid_argument";
}

TEST(Communicator, MismatchedArgumentsAreClearErrors) {
  auto& c = world();
  const int p = c.size();
  Tensor in = Tensor::zeros({p * 4 + 1}, DType::F32, kCat), out = Tensor::zeros({4}, DType::F32, kCat);
  std::string e = error_of([&] { c.reduce_scatter(in, out); });
  EXPECT_NE(e.find("reduce_scatter on group 'world'"), std::string::npos) << e;
  EXPECT_NE(e.find("F32[" + std::to_string(p * 4 + 1) + "]"), std::string::npos) << e;

  Tensor g_out = Tensor::zeros({p * 4}, DType::F64, kCat);
  e = error_of([&] { c.all_gather(out, g_out); });  // dtype differs
  EXPECT_NE(e.find("all_gather on group 'world'"), std::string::npos) << e;
  Tensor small = Tensor::zeros({p * 4 - 1}, DType::F32, kCat);
  e = error_of([&] { c.all_gather(out, small); });
  EXPECT_NE(e.find("all_gather"), std::string::npos) << e;

  Tensor h = Tensor::zeros({4}, DType::BF16, kCat);
  e = error_of([&] { c.all_reduce(h); });
  EXPECT_NE(e.find("BF16"), std::string::npos) << e;
  EXPECT_NE(e.find("all_reduce on group 'world'"), std::string::npos) << e;
  Tensor h2 = Tensor::zeros({p * 4}, DType::F16, kCat), h1 = Tensor::zeros({4}, DType::F16, kCat);
  e = error_of([&] { c.reduce_scatter(h2, h1); });
  EXPECT_NE(e.find("F16"), std::string::npos) << e;

  e = error_of([&] { c.broadcast(out, p); });
  EXPECT_NE(e.find("root " + std::to_string(p)), std::string::npos) << e;
  e = error_of([&] { c.send(out, -1, 0); });
  EXPECT_NE(e.find("send on group 'world'"), std::string::npos) << e;
  e = error_of([&] { c.recv(out, p, 0); });
  EXPECT_NE(e.find("peer " + std::to_string(p)), std::string::npos) << e;
  e = error_of([&] { c.send(out, 0, -3); });
  EXPECT_NE(e.find("tag -3"), std::string::npos) << e;
  Tensor undefined;
  e = error_of([&] { c.all_reduce(undefined); });
  EXPECT_NE(e.find("undefined"), std::string::npos) << e;
  // Overlapping buffers that are not the in-place layout.
  Tensor buf = Tensor::zeros({p * 4}, DType::F32, kCat);
  Tensor skew = buf.flat_view(1, {4});
  e = error_of([&] { c.all_gather(skew, buf); });
  EXPECT_NE(e.find("overlaps"), std::string::npos) << e;
  EXPECT_EQ(c.bytes_sent_total(), 0u) << "a refused call must not count";
  c.reset_counters();
}

TEST(Communicator, RecvOfWrongSizeFails) {
  auto& c = world();
  const int r = c.rank(), p = c.size();
  Tensor s = Tensor::zeros({3}, DType::F32, kCat);
  Tensor shorter = Tensor::zeros({4}, DType::F32, kCat), longer = Tensor::zeros({2}, DType::F32, kCat);
  auto h1 = c.send_async(s, (r + 1) % p, 1);
  auto h2 = c.send_async(s, (r + 1) % p, 2);
  try {
    c.recv(shorter, (r + p - 1) % p, 1);
    ADD_FAILURE() << "recv of 12 bytes into 16 did not fail";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("expected 16 bytes"), std::string::npos) << e.what();
  }
  try {
    c.recv(longer, (r + p - 1) % p, 2);
    ADD_FAILURE() << "recv of 12 bytes into 8 did not fail";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("recv on group 'world'"), std::string::npos) << e.what();
  }
  h1->wait();
  h2->wait();
  c.barrier();
}

}  // namespace
}  // namespace llm
