// The Communicator: the only way layers, the optimizer and the trainer talk
// to other ranks. Backends: MPI (CPU, here) and NCCL (with the CUDA backend).
//
// Every operation has a blocking form and an asynchronous form returning a
// handle to wait on; the blocking form is the asynchronous one plus wait().
// Counters record the bytes this rank sent per operation kind, so a run can
// print and tests can check the communication volume of each group.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace llm {

enum class ReduceOp : uint8_t { Sum, Max, Min };

enum class CommOp : uint8_t { AllReduce, ReduceScatter, AllGather, Broadcast, Send, Recv, kCount };
const char* comm_op_name(CommOp op);

// An operation in flight. wait() returns when its buffers may be reused.
class CommHandle {
 public:
  virtual ~CommHandle() = default;
  virtual void wait() = 0;
  virtual bool done() = 0;  // non-blocking test
};
using CommHandlePtr = std::unique_ptr<CommHandle>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Global ranks of this group's members, in group-rank order.
  virtual const std::vector<int>& members() const = 0;
  virtual const std::string& name() const = 0;  // "tp", "pp", "dp", "world", ...

  // In place: every rank ends with op over all ranks' `t`.
  virtual CommHandlePtr all_reduce_async(Tensor& t, ReduceOp op) = 0;
  // in: size()·n elements on every rank; out: n elements, chunk rank() of the reduction.
  virtual CommHandlePtr reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) = 0;
  // in: n elements; out: size()·n elements, rank r's input at chunk r.
  virtual CommHandlePtr all_gather_async(const Tensor& in, Tensor& out) = 0;
  virtual CommHandlePtr broadcast_async(Tensor& t, int root) = 0;
  virtual CommHandlePtr send_async(const Tensor& t, int peer, int tag) = 0;
  virtual CommHandlePtr recv_async(Tensor& t, int peer, int tag) = 0;
  virtual void barrier() = 0;

  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) { all_reduce_async(t, op)->wait(); }
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum) {
    reduce_scatter_async(in, out, op)->wait();
  }
  void all_gather(const Tensor& in, Tensor& out) { all_gather_async(in, out)->wait(); }
  void broadcast(Tensor& t, int root) { broadcast_async(t, root)->wait(); }
  void send(const Tensor& t, int peer, int tag = 0) { send_async(t, peer, tag)->wait(); }
  void recv(Tensor& t, int peer, int tag = 0) { recv_async(t, peer, tag)->wait(); }

  // Bytes this rank has sent, per operation kind, counted in ring-algorithm
  // terms for collectives (all-reduce of B bytes over p ranks: 2·B·(p−1)/p;
  // reduce-scatter and all-gather of a B-byte whole: B·(p−1)/p; broadcast: B
  // from the root; send: B), so they compare with the ZeRO paper's figures.
  // Fractions round down. Recv counts the bytes received and is left out of
  // bytes_sent_total(), so each point-to-point byte is counted once.
  uint64_t bytes_sent(CommOp op) const { return bytes_[static_cast<size_t>(op)]; }
  uint64_t bytes_sent_total() const;
  void reset_counters();

  // What an operation waits on, for error and hang reports (every backend
  // words them alike): "all_reduce on group 'dp' (ranks 0,2) of 4096 bytes",
  // "recv from rank 3 (tag 1) on group 'pp' (ranks 1,3) of 512 bytes"
  // (world ranks; peer < 0: none).
  std::string describe(const char* op, size_t bytes, int peer = -1, int tag = -1) const;
  std::string where(const char* op) const;  // "all_reduce on group 'tp' (size 2)"

 protected:
  void count(CommOp op, uint64_t bytes) { bytes_[static_cast<size_t>(op)] += bytes; }

 private:
  uint64_t bytes_[static_cast<size_t>(CommOp::kCount)] = {};
};

}  // namespace llm
