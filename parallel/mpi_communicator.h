// The MPI backend of the Communicator (CPU tensors). Each MpiCommunicator owns
// its own MPI communicator (a duplicate or a split), so traffic of different
// groups can never match each other's messages.
//
// Asynchronous operations are MPI nonblocking collectives (MPI_Iallreduce,
// MPI_Ireduce_scatter_block, MPI_Iallgather, MPI_Ibcast) and MPI_Isend/Irecv;
// the blocking forms are async + wait(), so both take the same algorithm.
//
// Rules for callers:
// - Every rank of a group must start the group's collectives in the same order.
// - Progress: OpenMPI has no progress thread, so a nonblocking collective only
//   advances inside MPI calls (wait(), done(), or other MPI operations). To
//   overlap communication with compute, call done() between chunks of work
//   (e.g. after each layer's backward), then wait().
// - Buffers belong to MPI until wait() (or done() == true). The handle keeps
//   the tensors' storage alive; dropping an unfinished handle waits for it.
//
// Determinism: with OpenMPI's default algorithm selection, the algorithm and
// hence the order of floating-point operations depends only on the
// communicator size, message size and op, so the same layout gives bitwise
// identical reductions, identical on every rank (all-reduce runs in place,
// which libnbc serves with a reduce to a root followed by a broadcast).
// Reductions need F32, F64 or I32; BF16/F16 move as bytes in all-gather,
// broadcast and send/recv, and are refused by reductions (for now).
//
// Hangs: every wait (the barrier too, an MPI_Ibarrier) is watched by the hang
// watchdog (parallel/watchdog.h): past comm_timeout() seconds the waiting rank
// names the operation, group, peers and iteration and aborts the job.
#pragma once
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/watchdog.h"

namespace llm {

class MpiCommunicator : public Communicator {
 public:
  // Duplicates `comm` (collective over it) and owns the duplicate.
  MpiCommunicator(MPI_Comm comm, std::string name);
  // MPI_Comm_split of `parent` (collective over it): ranks with the same color
  // form one group, ordered by key. color must be >= 0.
  static std::unique_ptr<MpiCommunicator> split(MPI_Comm parent, int color, int key, std::string name);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::vector<int>& members() const override { return members_; }
  const std::string& name() const override { return name_; }
  MPI_Comm comm() const { return comm_; }

  CommHandlePtr all_reduce_async(Tensor& t, ReduceOp op) override;
  // `out` may be chunk rank() of `in` (in place); in's other chunks are then undefined.
  CommHandlePtr reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override;
  // `in` may be chunk rank() of `out` (in place).
  CommHandlePtr all_gather_async(const Tensor& in, Tensor& out) override;
  CommHandlePtr broadcast_async(Tensor& t, int root) override;
  CommHandlePtr send_async(const Tensor& t, int peer, int tag) override;
  CommHandlePtr recv_async(Tensor& t, int peer, int tag) override;
  void barrier() override;

 private:
  struct Adopt {};
  MpiCommunicator(Adopt, MPI_Comm owned, std::string name);
  void init();
  void check_tensor(const char* op, const Tensor& t, const char* what) const;
  void check_peer(const char* op, int peer, int tag) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<int> members_;
  std::string name_;
};

}  // namespace llm
