// NCCL backend of the Communicator: argument checks with messages that name
// the operation and the group, NCCL calls on the communication stream ordered
// against the compute stream with events, ring-formula byte counts, and host
// waits under the hang watchdog's deadline.
#ifdef LLM_WITH_NCCL
#include "parallel/nccl_communicator.h"

#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <thread>
#include <utility>

#include "parallel/watchdog.h"

namespace llm {
namespace {

static_assert(sizeof(ncclUniqueId) == NCCL_UNIQUE_ID_BYTES && NCCL_UNIQUE_ID_BYTES % sizeof(int32_t) == 0);
constexpr int64_t kIdWords = NCCL_UNIQUE_ID_BYTES / sizeof(int32_t);

// Makes `device` current for a scope (ops may be called with another one
// current, e.g. by a process driving several GPUs).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    LLM_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) LLM_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() {
    int now = prev_;
    cudaGetDevice(&now);
    if (now != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  return ncclSum;
}

ncclDataType_t reduce_type(const Tensor& t, const std::string& where) {
  switch (t.dtype()) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::BF16: return ncclBfloat16;
    case DType::F16: return ncclFloat16;
    case DType::I32: return ncclInt32;
  }
  throw std::invalid_argument(where + ": reductions of " + dtype_name(t.dtype()) +
                              " tensors are not supported by the NCCL backend (use F32, F64, BF16, F16 or I32)");
}

uint64_t ring_share(uint64_t bytes, int p) { return p > 1 ? bytes * (p - 1) / p : 0; }

// "llm-train" (glibc's short program name), or "llm" if unknown.
const char* program() {
  const char* p = program_invocation_short_name;
  return p && *p ? p : "llm";
}

std::string iteration_str() {
  const int64_t it = comm_context_iteration();
  return it >= 1 ? " at iteration " + std::to_string(it) : std::string(" before the first training iteration");
}

// Ends the job with `code`: every rank when MPI is up, else this process.
[[noreturn]] void end_job(int code) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace

// Stream-ordered completion: wait() puts the compute stream behind the
// operation's event, never blocks the host.
class NcclHandle : public CommHandle {
 public:
  NcclHandle(NcclCommunicator* comm, NcclCommunicator::Pending pending)
      : comm_(comm), pending_(std::move(pending)) {}
  ~NcclHandle() override {
    if (waited_ || complete_) return;
    try {  // dropped without wait(): order the compute stream anyway, as MPI's handle waits
      wait();
    } catch (const std::exception& e) {  // cannot throw from here: end the job
      std::fprintf(stderr, "[rank %d] %s: error: %s\n", comm_->members_[comm_->rank_], program(), e.what());
      std::fflush(stderr);
      end_job(1);
    }
  }
  void wait() override {
    if (complete_) return;  // finished on the GPU: anything queued from now on comes after it
    comm_->check_async_error(pending_);
    DeviceGuard guard(comm_->device_);
    // Every call orders the stream current now (it may differ between calls).
    pending_.done->wait(cuda::current_stream());
    waited_ = true;
  }
  bool done() override {
    if (complete_) return true;
    if (pending_.done->query()) return complete_ = true;
    comm_->check_async_error(pending_);
    return false;
  }

 private:
  NcclCommunicator* comm_;
  NcclCommunicator::Pending pending_;
  bool waited_ = false, complete_ = false;
};

// ---- creation ---------------------------------------------------------------

NcclCommunicator::NcclCommunicator(int rank, int size, std::vector<int> members, std::string name, int device)
    : rank_(rank), size_(size), device_(device), members_(std::move(members)), name_(std::move(name)),
      sends_(size, 0), recvs_(size, 0) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || device < 0 || device >= count)
    throw std::invalid_argument("group '" + name_ + "': CUDA device " + std::to_string(device) +
                                " is not visible (" +
                                (err == cudaSuccess ? std::to_string(count) + " devices"
                                                    : std::string(cudaGetErrorString(err))) +
                                "): pick a device in [0, count) or check CUDA_VISIBLE_DEVICES");
  DeviceGuard guard(device_);
  stream_ = std::make_unique<cuda::Stream>();
  ready_ = std::make_unique<cuda::Event>();
  barrier_buf_ = Tensor::empty({1}, DType::I32, MemoryCategory::Communication, Device::cuda(device_));
}

void NcclCommunicator::join(const void* id) {
  DeviceGuard guard(device_);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 1;              // calls return once enqueued, never ncclInProgress
  config.commName = name_.c_str();  // NCCL_DEBUG output names the group
  ncclUniqueId uid;
  std::memcpy(&uid, id, sizeof uid);
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, size_, uid, rank_, &config);
  if (r != ncclSuccess) {
    const char* last = ncclGetLastError(nullptr);
    throw std::runtime_error("group '" + name_ + "': ncclCommInitRank (rank " + std::to_string(rank_) + " of " +
                             std::to_string(size_) + " on cuda:" + std::to_string(device_) +
                             ") failed: " + ncclGetErrorString(r) + (last && *last ? std::string(" (") + last + ")" : "") +
                             "; every rank of the group must join, each with its own GPU "
                             "(check the local-rank device selection and CUDA_VISIBLE_DEVICES)");
  }
  comm_ = comm;
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Communicator& bootstrap, std::string name, int device) {
  const int rank = bootstrap.rank(), size = bootstrap.size();
  // Rank 0's id plus a status word, so a failure on rank 0 fails every rank
  // instead of leaving them waiting in ncclCommInitRank.
  Tensor buf = Tensor::zeros({kIdWords + 1}, DType::I32, MemoryCategory::Communication);
  std::string rank0_error;
  if (rank == 0) {
    ncclUniqueId id;
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r == ncclSuccess) {
      std::memcpy(buf.raw(), &id, sizeof id);
    } else {
      rank0_error = ncclGetErrorString(r);
      buf.data<int32_t>()[kIdWords] = 1;
    }
  }
  bootstrap.broadcast(buf, 0);
  if (buf.data<int32_t>()[kIdWords] != 0)
    throw std::runtime_error("group '" + name + "': ncclGetUniqueId failed on the group's rank 0" +
                             (rank0_error.empty() ? std::string() : ": " + rank0_error) +
                             " (NCCL's bootstrap needs a usable network interface: see NCCL_SOCKET_IFNAME)");
  std::unique_ptr<NcclCommunicator> c(
      new NcclCommunicator(rank, size, bootstrap.members(), std::move(name), device));
  c->join(buf.raw());
  return c;
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::create_single(std::string name, int device) {
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(0, 1, {0}, std::move(name), device));
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess)
    throw std::runtime_error("group '" + c->name_ + "': ncclGetUniqueId failed: " + ncclGetErrorString(r) +
                             " (NCCL's bootstrap needs a usable network interface, loopback will do: "
                             "see NCCL_SOCKET_IFNAME)");
  c->join(&id);
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (!comm_) return;
  if (std::uncaught_exceptions() > 0) {
    // Unwinding after an error: peers may never finish what is in flight, so
    // do not wait for it (ncclCommDestroy would).
    ncclCommAbort(comm_);
    return;
  }
  try {
    synchronize();
  } catch (const std::exception& e) {  // a CUDA error: the communicator cannot finish cleanly
    std::fprintf(stderr, "[rank %d] %s: warning: closing group '%s': %s\n", members_[rank_], program(),
                 name_.c_str(), e.what());
    ncclCommAbort(comm_);
    return;
  }
  DeviceGuard guard(device_);
  ncclCommDestroy(comm_);
}

// ---- checks and descriptions -------------------------------------------------

std::string NcclCommunicator::describe(const Pending& p) const {
  if (std::strcmp(p.op, "send_recv") == 0)
    return "send_recv (send of " + std::to_string(p.bytes) + " bytes to rank " + std::to_string(members_[p.peer]) +
           ", recv of " + std::to_string(p.recv_bytes) + " bytes from rank " +
           std::to_string(members_[p.recv_peer]) + ", tag " + std::to_string(p.tag) + ") on group '" + name_ +
           "' (ranks " + rank_list(members_) + ")";
  std::string s = describe(p.op, p.bytes, p.peer, p.tag);
  // NCCL matches point-to-point by order only: say which one this is.
  if (p.peer >= 0)
    s += ", " + std::string(p.op) + " #" + std::to_string(p.seq + 1) + " with that rank";
  return s;
}

void NcclCommunicator::check_tensor(const char* op, const Tensor& t, const char* what) const {
  if (!t.defined()) throw std::invalid_argument(where(op) + ": " + what + " tensor is undefined");
  if (t.device() != Device::cuda(device_))
    throw std::invalid_argument(where(op) + ": " + what + " tensor " + t.str() + " is not on cuda:" +
                                std::to_string(device_) +
                                ", this communicator's device (the NCCL backend moves GPU memory: copy the "
                                "tensor to cuda:" + std::to_string(device_) +
                                " first, or use the MPI communicator for CPU tensors)");
}

void NcclCommunicator::check_peer(const char* op, int peer, int tag, bool self_ok) const {
  if (peer < 0 || peer >= size_)
    throw std::invalid_argument(where(op) + ": peer " + std::to_string(peer) + " is not a rank of the group");
  if (tag < 0) throw std::invalid_argument(where(op) + ": tag " + std::to_string(tag) + " is negative");
  if (!self_ok && peer == rank_)
    throw std::invalid_argument(where(op) + ": peer " + std::to_string(peer) +
                                " is this rank: NCCL needs a send to itself and its recv in one group; "
                                "use send_recv_async");
}

void NcclCommunicator::check_nccl(int result, const char* op) const {
  const auto r = static_cast<ncclResult_t>(result);
  if (r == ncclSuccess) return;
  const char* last = ncclGetLastError(comm_);
  throw std::runtime_error(where(op) + ": NCCL error: " + ncclGetErrorString(r) +
                           (last && *last ? std::string(" (") + last + ")" : std::string()));
}

// ---- issuing -------------------------------------------------------------------

void NcclCommunicator::begin(std::initializer_list<const Tensor*> tensors) {
  if (!comm_) throw std::logic_error("group '" + name_ + "': the NCCL communicator was aborted");
  ready_->record(cuda::current_stream());
  ready_->wait(stream());
  for (const Tensor* t : tensors)
    if (t->nbytes() > 0) cuda::record_stream(t->raw(), stream());
}

NcclCommunicator::Pending NcclCommunicator::record(Pending p) {
  p.done = std::make_shared<cuda::Event>();
  p.done->record(stream());
  // Stream order: entries finish front to back, so drop the finished prefix.
  while (!pending_.empty() && pending_.front().done->query()) pending_.pop_front();
  pending_.push_back(p);
  return p;
}

CommHandlePtr NcclCommunicator::handle(Pending p) { return std::make_unique<NcclHandle>(this, record(std::move(p))); }

CommHandlePtr NcclCommunicator::all_reduce_async(Tensor& t, ReduceOp op) {
  check_tensor("all_reduce", t, "the");
  const ncclDataType_t type = reduce_type(t, where("all_reduce"));
  comm_stall_point([&] { return describe("all_reduce", t.nbytes()); });
  DeviceGuard guard(device_);
  begin({&t});
  if (t.numel() > 0)
    check_nccl(ncclAllReduce(t.raw(), t.raw(), t.numel(), type, nccl_op(op), comm_, stream()), "all_reduce");
  count(CommOp::AllReduce, 2 * ring_share(t.nbytes(), size_));
  return handle({.op = "all_reduce", .bytes = t.nbytes()});
}

CommHandlePtr NcclCommunicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) {
  check_tensor("reduce_scatter", in, "input");
  check_tensor("reduce_scatter", out, "output");
  if (in.dtype() != out.dtype() || in.numel() != size_ * out.numel())
    throw std::invalid_argument(where("reduce_scatter") + ": input " + in.str() + " must have size() = " +
                                std::to_string(size_) + " times the elements of output " + out.str() +
                                ", same dtype");
  const ncclDataType_t type = reduce_type(out, where("reduce_scatter"));
  const char* in_p = static_cast<const char*>(in.raw());
  const char* out_p = static_cast<const char*>(out.raw());
  const size_t chunk = out.nbytes();
  // NCCL's in-place form is exactly ours: out == chunk rank() of in.
  const bool in_place = chunk > 0 && out_p == in_p + rank_ * chunk;
  if (!in_place && chunk > 0 && out_p < in_p + in.nbytes() && in_p < out_p + chunk)
    throw std::invalid_argument(where("reduce_scatter") +
                                ": output overlaps the input other than as its chunk rank()");
  comm_stall_point([&] { return describe("reduce_scatter", in.nbytes()); });
  DeviceGuard guard(device_);
  begin({&in, &out});
  if (chunk > 0)
    check_nccl(ncclReduceScatter(in.raw(), out.raw(), out.numel(), type, nccl_op(op), comm_, stream()),
               "reduce_scatter");
  count(CommOp::ReduceScatter, ring_share(in.nbytes(), size_));
  return handle({.op = "reduce_scatter", .bytes = in.nbytes()});
}

CommHandlePtr NcclCommunicator::all_gather_async(const Tensor& in, Tensor& out) {
  check_tensor("all_gather", in, "input");
  check_tensor("all_gather", out, "output");
  if (in.dtype() != out.dtype() || out.numel() != size_ * in.numel())
    throw std::invalid_argument(where("all_gather") + ": output " + out.str() + " must have size() = " +
                                std::to_string(size_) + " times the elements of input " + in.str() +
                                ", same dtype");
  const char* in_p = static_cast<const char*>(in.raw());
  const char* out_p = static_cast<const char*>(out.raw());
  const size_t chunk = in.nbytes();
  const bool in_place = chunk > 0 && in_p == out_p + rank_ * chunk;
  if (!in_place && chunk > 0 && in_p < out_p + out.nbytes() && out_p < in_p + chunk)
    throw std::invalid_argument(where("all_gather") +
                                ": input overlaps the output other than as its chunk rank()");
  comm_stall_point([&] { return describe("all_gather", out.nbytes()); });
  DeviceGuard guard(device_);
  begin({&in, &out});
  // No arithmetic: move bytes, whatever the dtype.
  if (chunk > 0) check_nccl(ncclAllGather(in.raw(), out.raw(), chunk, ncclUint8, comm_, stream()), "all_gather");
  count(CommOp::AllGather, ring_share(out.nbytes(), size_));
  return handle({.op = "all_gather", .bytes = out.nbytes()});
}

CommHandlePtr NcclCommunicator::broadcast_async(Tensor& t, int root) {
  check_tensor("broadcast", t, "the");
  if (root < 0 || root >= size_)
    throw std::invalid_argument(where("broadcast") + ": root " + std::to_string(root) +
                                " is not a rank of the group");
  comm_stall_point([&] { return describe("broadcast", t.nbytes()); });
  DeviceGuard guard(device_);
  begin({&t});
  if (t.nbytes() > 0)
    check_nccl(ncclBroadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, comm_, stream()), "broadcast");
  if (rank_ == root && size_ > 1) count(CommOp::Broadcast, t.nbytes());
  return handle({.op = "broadcast", .bytes = t.nbytes()});
}

CommHandlePtr NcclCommunicator::send_async(const Tensor& t, int peer, int tag) {
  check_tensor("send", t, "the");
  check_peer("send", peer, tag, false);
  const Pending p{.op = "send", .bytes = t.nbytes(), .peer = peer, .tag = tag, .seq = sends_[peer]};
  comm_stall_point([&] { return describe(p); });
  DeviceGuard guard(device_);
  begin({&t});
  // Both sides skip an empty message alike (their sizes must match).
  if (t.nbytes() > 0) check_nccl(ncclSend(t.raw(), t.nbytes(), ncclUint8, peer, comm_, stream()), "send");
  ++sends_[peer];
  count(CommOp::Send, t.nbytes());
  return handle(p);
}

CommHandlePtr NcclCommunicator::recv_async(Tensor& t, int peer, int tag) {
  check_tensor("recv", t, "the");
  check_peer("recv", peer, tag, false);
  const Pending p{.op = "recv", .bytes = t.nbytes(), .peer = peer, .tag = tag, .seq = recvs_[peer]};
  comm_stall_point([&] { return describe(p); });
  DeviceGuard guard(device_);
  begin({&t});
  if (t.nbytes() > 0) check_nccl(ncclRecv(t.raw(), t.nbytes(), ncclUint8, peer, comm_, stream()), "recv");
  ++recvs_[peer];
  count(CommOp::Recv, t.nbytes());
  return handle(p);
}

CommHandlePtr NcclCommunicator::send_recv_async(const Tensor& send, int send_peer, Tensor& recv, int recv_peer,
                                                int tag) {
  check_tensor("send_recv", send, "the send");
  check_tensor("send_recv", recv, "the recv");
  check_peer("send_recv", send_peer, tag, true);
  check_peer("send_recv", recv_peer, tag, true);
  const char* s_p = static_cast<const char*>(send.raw());
  const char* r_p = static_cast<const char*>(recv.raw());
  if (send.nbytes() > 0 && recv.nbytes() > 0 && s_p < r_p + recv.nbytes() && r_p < s_p + send.nbytes())
    throw std::invalid_argument(where("send_recv") + ": the send and recv tensors overlap");
  const Pending p{.op = "send_recv",
                  .bytes = send.nbytes(),
                  .peer = send_peer,
                  .tag = tag,
                  .recv_peer = recv_peer,
                  .recv_bytes = recv.nbytes()};
  comm_stall_point([&] { return describe(p); });
  DeviceGuard guard(device_);
  begin({&send, &recv});
  check_nccl(ncclGroupStart(), "send_recv");
  ncclResult_t rs = ncclSuccess, rr = ncclSuccess;
  if (send.nbytes() > 0) rs = ncclSend(send.raw(), send.nbytes(), ncclUint8, send_peer, comm_, stream());
  if (recv.nbytes() > 0) rr = ncclRecv(recv.raw(), recv.nbytes(), ncclUint8, recv_peer, comm_, stream());
  const ncclResult_t re = ncclGroupEnd();  // always closes the group, even after a failed call
  check_nccl(rs, "send_recv");
  check_nccl(rr, "send_recv");
  check_nccl(re, "send_recv");
  ++sends_[send_peer];
  ++recvs_[recv_peer];
  count(CommOp::Send, send.nbytes());
  count(CommOp::Recv, recv.nbytes());
  return handle(p);
}

void NcclCommunicator::barrier() {
  comm_stall_point([&] { return describe("barrier", 0); });
  DeviceGuard guard(device_);
  begin({&barrier_buf_});
  // Max: the (uninitialised) values cannot overflow.
  check_nccl(ncclAllReduce(barrier_buf_.raw(), barrier_buf_.raw(), 1, ncclInt32, ncclMax, comm_, stream()),
             "barrier");
  record({.op = "barrier"});
  synchronize();
}

// ---- host waits, errors ----------------------------------------------------------

void NcclCommunicator::synchronize() {
  if (!comm_) throw std::logic_error("group '" + name_ + "': the NCCL communicator was aborted");
  if (pending_.empty()) return;  // only finished entries are ever dropped
  DeviceGuard guard(device_);
  host_wait(*pending_.back().done);
  pending_.clear();
}

std::string NcclCommunicator::oldest_unfinished(const Pending& fallback) {
  for (const Pending& p : pending_) {
    const cudaError_t e = cudaEventQuery(p.done->get());
    if (e != cudaSuccess) return describe(p);  // not ready, or a CUDA error: this one is stuck
  }
  return describe(fallback);
}

void NcclCommunicator::check_async_error(const Pending& waiting_on) {
  if (!comm_) return;
  ncclResult_t err = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(comm_, &err);
  if (r != ncclSuccess) err = r;
  if (err == ncclSuccess || err == ncclInProgress) return;
  const char* last = ncclGetLastError(comm_);
  fail_job("NCCL error: " + oldest_unfinished(waiting_on) + " failed: " + ncclGetErrorString(err) +
           (last && *last ? std::string(" (") + last + ")" : std::string()) + iteration_str() +
           "; a peer may have died, or the network failed");
}

void NcclCommunicator::host_wait(const cuda::Event& event) {
  using Clock = std::chrono::steady_clock;
  const double timeout = comm_timeout();
  const auto start = Clock::now();
  const auto deadline =
      timeout > 0 ? start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout))
                  : Clock::time_point::max();
  const Pending& last = pending_.back();
  for (;;) {
    if (event.query()) return;
    check_async_error(last);
    const auto now = Clock::now();
    const auto waited = now - start;
    if (now >= deadline) {
      char secs[64];
      std::snprintf(secs, sizeof secs, "%.1f s (--comm-timeout %g)", std::chrono::duration<double>(waited).count(),
                    timeout);
      fail_job("hang: " + oldest_unfinished(last) + " has waited " + secs + iteration_str() +
               "; a peer may have died or stalled");
    }
    // NCCL progresses without us (GPU kernels, its proxy thread): poll tightly
    // only for the first millisecond, for short operations' latency.
    if (waited < std::chrono::milliseconds(1)) continue;
    std::this_thread::sleep_for(waited < std::chrono::milliseconds(100) ? std::chrono::microseconds(50)
                                                                        : std::chrono::microseconds(1000));
  }
}

void NcclCommunicator::fail_job(const std::string& report) {
  std::fflush(stdout);
  std::fprintf(stderr, "[rank %d] %s: error: %s\n", members_[rank_], program(), report.c_str());
  std::fflush(stderr);
  // Stops the kernels that wait on peers, so nothing outlives the exit.
  if (ncclComm_t c = std::exchange(comm_, nullptr)) ncclCommAbort(c);
  end_job(kCommHangExitCode);
}

}  // namespace llm
#endif  // LLM_WITH_NCCL
