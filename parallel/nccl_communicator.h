// The NCCL backend of the Communicator (CUDA tensors on this communicator's
// device). Built only with LLM_WITH_NCCL; code that names NcclCommunicator
// must sit under #ifdef LLM_WITH_NCCL too.
//
// Streams. Every operation runs on the communicator's own stream, after the
// work queued so far on the compute stream (cuda::current_stream()): an event
// recorded there is waited on by the communication stream, so compute that is
// queued later overlaps the communication. The handle holds an event recorded
// after the operation on the communication stream:
// - wait() makes the compute stream wait for it; it does NOT block the host.
//   GPU consumers on the compute stream are then ordered after the
//   operation, which is all a layer or the optimizer needs. The blocking
//   forms (all_reduce(), ...) are async + wait(), so they return at once too.
// - done() tells whether the operation has finished on the GPU.
// - Dropping a handle without wait() orders the compute stream as wait() does.
// - To read results on the host (a loss, a gradient norm, a checkpoint),
//   call synchronize() first: it blocks until every operation issued so far
//   has finished, under the hang watchdog. (Tensor::copy_from's plain
//   cudaMemcpy runs on the legacy stream, which is NOT ordered after our
//   non-blocking streams.) barrier() is an all-reduce of one element plus
//   synchronize().
// Every tensor passed is marked with cuda::record_stream for the
// communication stream, so the caching allocator does not hand its memory to
// anyone else before the operation has used it; handles need not outlive
// their tensors, but must not outlive the communicator.
//
// Rules for callers (as for MpiCommunicator): every rank of a group starts the
// group's collectives in the same order, with the same sizes.
// Point-to-point: NCCL matches sends and recvs between two ranks purely by
// their order; tags are checked (>= 0) and named in reports but do not take
// part in matching, so a rank must post its sends to a peer in the order the
// peer posts the matching recvs, with exactly the same byte count (a
// mismatch is not detected: it hangs or corrupts). A send blocks the
// communication stream until the peer has posted its recv, so two ranks
// that both send first deadlock: post the pair in opposite orders, or use
// send_recv_async(), which runs both in one NCCL group.
//
// Reductions work on F32, F64, BF16, F16 and I32 (16-bit types reduce in
// their own precision, as NCCL does); data movement works on any dtype, as
// bytes. Determinism: for a fixed group size, message size, op and NCCL
// version/topology the algorithm is fixed; results are identical on all ranks.
//
// Hangs and failures: host waits (synchronize(), barrier()) poll the stream's
// progress and ncclCommGetAsyncError. Past comm_timeout() seconds (0: no
// deadline) the rank prints the watchdog's report ("[rank r] prog: error:
// hang: <op> on group 'g' (ranks ...) of N bytes has waited ... at iteration
// I; a peer may have died or stalled", naming the oldest unfinished
// operation), aborts the NCCL communicator and ends the job with
// kCommHangExitCode (MPI_Abort when MPI is up, else _exit). An asynchronous
// NCCL error (e.g. a peer died) found by any wait(), done() or host wait is
// reported and handled the same way. set_comm_hang_handler() is not
// consulted (the watchdog's handler is private to parallel/watchdog.cpp).
#pragma once
#ifdef LLM_WITH_NCCL
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/cuda/runtime.h"
#include "parallel/communicator.h"

struct ncclComm;  // nccl.h's ncclComm_t is ncclComm*; kept out of this header

namespace llm {

class NcclCommunicator : public Communicator {
 public:
  // Collective over `bootstrap`, a CPU communicator over the same ranks (an
  // MpiCommunicator of the group): its rank 0 makes the NCCL id and
  // broadcasts it; every rank then joins the NCCL communicator on `device`
  // (each rank needs its own GPU). Members and rank order are bootstrap's.
  static std::unique_ptr<NcclCommunicator> create(Communicator& bootstrap, std::string name, int device);
  // A group of one on `device`, without any bootstrap (no MPI needed).
  static std::unique_ptr<NcclCommunicator> create_single(std::string name, int device);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::vector<int>& members() const override { return members_; }
  const std::string& name() const override { return name_; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_->get(); }

  CommHandlePtr all_reduce_async(Tensor& t, ReduceOp op) override;
  // `out` may be chunk rank() of `in` (in place); in's other chunks are then undefined.
  CommHandlePtr reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override;
  // `in` may be chunk rank() of `out` (in place).
  CommHandlePtr all_gather_async(const Tensor& in, Tensor& out) override;
  CommHandlePtr broadcast_async(Tensor& t, int root) override;
  CommHandlePtr send_async(const Tensor& t, int peer, int tag) override;
  CommHandlePtr recv_async(Tensor& t, int peer, int tag) override;
  // One send and one recv started together (an NCCL group), so that two
  // ranks exchanging tensors cannot deadlock; peers may differ, and may be
  // this rank itself (a copy). Counted as one Send and one Recv.
  CommHandlePtr send_recv_async(const Tensor& send, int send_peer, Tensor& recv, int recv_peer, int tag = 0);
  void barrier() override;

  // Host wait for every operation issued so far (see the top of this file).
  void synchronize();

  using Communicator::describe;  // "all_reduce on group 'dp' (ranks 0,2) of 4096 bytes"

 private:
  friend class NcclHandle;
  // An operation issued on the communication stream, for the reports.
  struct Pending {
    std::shared_ptr<cuda::Event> done{};  // recorded after it
    const char* op = "";
    size_t bytes = 0;
    int peer = -1, tag = -1;
    uint64_t seq = 0;        // send/recv: how many this rank posted to/from that peer before it
    int recv_peer = -1;      // send_recv: the peer received from (peer: sent to)
    size_t recv_bytes = 0;
  };

  NcclCommunicator(int rank, int size, std::vector<int> members, std::string name, int device);
  // ncclCommInitRank on the constructed object (the NCCL communicator keeps
  // a pointer to name_ as its commName). `id` is an ncclUniqueId.
  void join(const void* id);
  std::string describe(const Pending& p) const;
  void check_tensor(const char* op, const Tensor& t, const char* what) const;
  void check_peer(const char* op, int peer, int tag, bool self_ok) const;
  void check_nccl(int result, const char* op) const;
  // Orders the communication stream after the compute stream and marks the
  // tensors as used by it.
  void begin(std::initializer_list<const Tensor*> tensors);
  // Records an event after the operation on the communication stream and
  // remembers the operation until it has finished.
  Pending record(Pending p);
  CommHandlePtr handle(Pending p);
  // Host wait for `event` under the watchdog's deadline.
  void host_wait(const cuda::Event& event);
  // The oldest operation not yet finished on the GPU, or `fallback`.
  std::string oldest_unfinished(const Pending& fallback);
  // Ends the job if NCCL reports an asynchronous error.
  void check_async_error(const Pending& waiting_on);
  // Prints "[rank r] prog: error: <report>", aborts the NCCL communicator
  // and ends the job with kCommHangExitCode.
  [[noreturn]] void fail_job(const std::string& report);

  ncclComm* comm_ = nullptr;
  int rank_ = 0, size_ = 1, device_ = 0;
  std::vector<int> members_;
  const std::string name_;
  std::unique_ptr<cuda::Stream> stream_;
  std::unique_ptr<cuda::Event> ready_;      // compute stream -> communication stream
  Tensor barrier_buf_;                      // one I32 on the device
  std::deque<Pending> pending_;             // issued, maybe unfinished, oldest first
  std::vector<uint64_t> sends_, recvs_;     // per peer: sends and recvs posted so far
};

}  // namespace llm
#endif  // LLM_WITH_NCCL
