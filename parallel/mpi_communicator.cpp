// MPI backend of the Communicator: argument checks with messages that name the
// operation and the group, MPI nonblocking calls waited on under the hang
// watchdog, and ring-formula byte counts.
#include "parallel/mpi_communicator.h"

#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <utility>

namespace llm {
namespace {

void check_mpi(int rc, const std::string& what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw std::runtime_error(what + ": MPI error: " + std::string(msg, len));
}

// What a handle waits on, described only if the watchdog reports a hang.
struct Pending {
  const MpiCommunicator* comm = nullptr;
  const char* op = "";
  size_t bytes = 0;
  int peer = -1, tag = -1;
  std::string str() const { return comm->describe(op, bytes, peer, tag); }
};

// A request plus what must outlive it: the tensors (their storage stays alive
// until completion) and an optional step run once it completed (may throw).
class MpiHandle : public CommHandle {
 public:
  using Then = std::function<void(const MPI_Status&)>;
  MpiHandle(MPI_Request req, std::vector<Tensor> keep, std::string what, Pending pending, Then then = {})
      : what_(std::move(what)), req_(req), keep_(std::move(keep)), pending_(pending), then_(std::move(then)) {}
  ~MpiHandle() override {
    if (!complete_) {  // dropped unfinished: MPI still owns the buffers
      try {
        wait();
      } catch (const std::exception& e) {  // cannot throw from here: end the job
        std::fprintf(stderr, "error: %s\n", e.what());
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
    }
  }
  void wait() override {
    if (complete_) return;
    MPI_Status status;
    int rc = MPI_SUCCESS;
    if (comm_timeout() <= 0) {
      rc = MPI_Wait(&req_, &status);
    } else {  // MPI_Test until done, under the watchdog's deadline (which may throw)
      watchdog_wait(
          [&] {
            int flag = 0;
            rc = MPI_Test(&req_, &flag, &status);
            return flag != 0 || rc != MPI_SUCCESS;
          },
          [this] { return pending_.str(); });
    }
    finish(rc, status);
  }
  bool done() override {
    if (complete_) return true;
    int flag = 0;
    MPI_Status status;
    const int rc = MPI_Test(&req_, &flag, &status);
    if (!flag && rc == MPI_SUCCESS) return false;
    finish(rc, status);
    return true;
  }

 private:
  // Complete (even when it failed: the request is gone), then report.
  void finish(int rc, const MPI_Status& status) {
    complete_ = true;
    keep_.clear();
    Then then = std::exchange(then_, {});
    check_mpi(rc, what_);
    if (then) then(status);
  }
  std::string what_;  // "recv on group 'pp' (size 2)", for error messages
  MPI_Request req_;
  bool complete_ = false;
  std::vector<Tensor> keep_;  // released once complete
  Pending pending_;
  Then then_;
};

CommHandlePtr make_handle(MPI_Request req, std::vector<Tensor> keep, std::string what, Pending pending,
                          MpiHandle::Then then = {}) {
  return std::make_unique<MpiHandle>(req, std::move(keep), std::move(what), pending, std::move(then));
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

// Element type and count for a reduction; BF16/F16 have no MPI reduction here.
std::pair<MPI_Datatype, int> reduce_type(const Tensor& t, const std::string& where) {
  switch (t.dtype()) {
    case DType::F32: return {MPI_FLOAT, static_cast<int>(t.numel())};
    case DType::F64: return {MPI_DOUBLE, static_cast<int>(t.numel())};
    case DType::I32: return {MPI_INT, static_cast<int>(t.numel())};
    case DType::BF16:
    case DType::F16:  // 16-bit tensors only move (as bytes): sums of them would lose precision
      throw std::invalid_argument(where + ": reductions of " + dtype_name(t.dtype()) +
                                  " tensors are not supported: reduce 16-bit gradients in fp32: convert to F32 first");
    default:
      throw std::invalid_argument(where + ": reductions of " + dtype_name(t.dtype()) +
                                  " tensors are not supported by the MPI backend (use F32, F64 or I32)");
  }
}

// Data movement without arithmetic: plain bytes, whatever the dtype.
int byte_count(const Tensor& t) { return static_cast<int>(t.nbytes()); }

uint64_t ring_share(uint64_t bytes, int p) { return p > 1 ? bytes * (p - 1) / p : 0; }

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name) : name_(std::move(name)) {
  check_mpi(MPI_Comm_dup(comm, &comm_), "group '" + name_ + "': MPI_Comm_dup");
  init();
}

MpiCommunicator::MpiCommunicator(Adopt, MPI_Comm owned, std::string name)
    : comm_(owned), name_(std::move(name)) {
  init();
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(MPI_Comm parent, int color, int key,
                                                        std::string name) {
  if (color < 0) throw std::invalid_argument("group '" + name + "': split color must be >= 0");
  MPI_Comm comm = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(parent, color, key, &comm), "group '" + name + "': MPI_Comm_split");
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(Adopt{}, comm, std::move(name)));
}

void MpiCommunicator::init() {
  // Errors come back as codes, turned into exceptions naming the op and group
  // (the tools' main() then ends the whole job through MpiEnv::fail).
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  // Members as MPI_COMM_WORLD ranks, in this group's rank order.
  MPI_Group group, world;
  MPI_Comm_group(comm_, &group);
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  std::vector<int> local(size_);
  for (int i = 0; i < size_; ++i) local[i] = i;
  members_.resize(size_);
  MPI_Group_translate_ranks(group, size_, local.data(), world, members_.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::check_tensor(const char* op, const Tensor& t, const char* what) const {
  if (!t.defined()) throw std::invalid_argument(where(op) + ": " + what + " tensor is undefined");
  if (!t.device().is_cpu())
    throw std::invalid_argument(where(op) + ": " + what + " tensor " + t.str() +
                                " is not on the CPU (the MPI backend moves host memory)");
  if (t.nbytes() > static_cast<size_t>(INT32_MAX))
    throw std::invalid_argument(where(op) + ": " + what + " tensor " + t.str() +
                                " exceeds 2 GiB, the MPI count limit; split it");
}

void MpiCommunicator::check_peer(const char* op, int peer, int tag) const {
  if (peer < 0 || peer >= size_)
    throw std::invalid_argument(where(op) + ": peer " + std::to_string(peer) + " is not a rank of the group");
  if (tag < 0) throw std::invalid_argument(where(op) + ": tag " + std::to_string(tag) + " is negative");
}

CommHandlePtr MpiCommunicator::all_reduce_async(Tensor& t, ReduceOp op) {
  check_tensor("all_reduce", t, "the");
  auto [type, n] = reduce_type(t, where("all_reduce"));
  const Pending pending{this, "all_reduce", t.nbytes()};
  comm_stall_point([&] { return pending.str(); });
  MPI_Request req;
  // In place: libnbc then uses a binomial reduce + broadcast, whose order of
  // operations is fixed and whose result is bitwise the same on every rank.
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, t.raw(), n, type, mpi_op(op), comm_, &req), where("all_reduce"));
  count(CommOp::AllReduce, 2 * ring_share(t.nbytes(), size_));
  return make_handle(req, {t}, where("all_reduce"), pending);
}

CommHandlePtr MpiCommunicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) {
  check_tensor("reduce_scatter", in, "input");
  check_tensor("reduce_scatter", out, "output");
  if (in.dtype() != out.dtype() || in.numel() != size_ * out.numel())
    throw std::invalid_argument(where("reduce_scatter") + ": input " + in.str() + " must have size() = " +
                                std::to_string(size_) + " times the elements of output " + out.str() +
                                ", same dtype");
  auto [type, n] = reduce_type(out, where("reduce_scatter"));
  char* const in_p = static_cast<char*>(in.raw());
  char* const out_p = static_cast<char*>(out.raw());
  const size_t chunk = out.nbytes();
  const bool in_place = chunk > 0 && out_p == in_p + rank_ * chunk;
  if (!in_place && chunk > 0 && out_p < in_p + in.nbytes() && in_p < out_p + chunk)
    throw std::invalid_argument(where("reduce_scatter") +
                                ": output overlaps the input other than as its chunk rank()");
  const Pending pending{this, "reduce_scatter", in.nbytes()};
  comm_stall_point([&] { return pending.str(); });
  MPI_Request req;
  MpiHandle::Then then;
  if (in_place) {
    // MPI's in-place form takes the input from, and leaves the result at the
    // start of, the receive buffer: move it to chunk rank() on completion.
    check_mpi(MPI_Ireduce_scatter_block(MPI_IN_PLACE, in_p, n, type, mpi_op(op), comm_, &req),
              where("reduce_scatter"));
    if (rank_ != 0) then = [in_p, out_p, chunk](const MPI_Status&) { std::memmove(out_p, in_p, chunk); };
  } else {
    check_mpi(MPI_Ireduce_scatter_block(in_p, out_p, n, type, mpi_op(op), comm_, &req),
              where("reduce_scatter"));
  }
  count(CommOp::ReduceScatter, ring_share(in.nbytes(), size_));
  return make_handle(req, {in, out}, where("reduce_scatter"), pending, std::move(then));
}

CommHandlePtr MpiCommunicator::all_gather_async(const Tensor& in, Tensor& out) {
  check_tensor("all_gather", in, "input");
  check_tensor("all_gather", out, "output");
  if (in.dtype() != out.dtype() || out.numel() != size_ * in.numel())
    throw std::invalid_argument(where("all_gather") + ": output " + out.str() + " must have size() = " +
                                std::to_string(size_) + " times the elements of input " + in.str() +
                                ", same dtype");
  const char* in_p = static_cast<const char*>(in.raw());
  char* out_p = static_cast<char*>(out.raw());
  const size_t chunk = in.nbytes();
  const bool in_place = chunk > 0 && in_p == out_p + rank_ * chunk;
  if (!in_place && chunk > 0 && in_p < out_p + out.nbytes() && out_p < in_p + chunk)
    throw std::invalid_argument(where("all_gather") +
                                ": input overlaps the output other than as its chunk rank()");
  const Pending pending{this, "all_gather", out.nbytes()};
  comm_stall_point([&] { return pending.str(); });
  MPI_Request req;
  check_mpi(MPI_Iallgather(in_place ? MPI_IN_PLACE : in_p, byte_count(in), MPI_BYTE, out_p, byte_count(in),
                           MPI_BYTE, comm_, &req),
            where("all_gather"));
  count(CommOp::AllGather, ring_share(out.nbytes(), size_));
  return make_handle(req, {in, out}, where("all_gather"), pending);
}

CommHandlePtr MpiCommunicator::broadcast_async(Tensor& t, int root) {
  check_tensor("broadcast", t, "the");
  if (root < 0 || root >= size_)
    throw std::invalid_argument(where("broadcast") + ": root " + std::to_string(root) +
                                " is not a rank of the group");
  const Pending pending{this, "broadcast", t.nbytes()};
  comm_stall_point([&] { return pending.str(); });
  MPI_Request req;
  check_mpi(MPI_Ibcast(t.raw(), byte_count(t), MPI_BYTE, root, comm_, &req), where("broadcast"));
  if (rank_ == root && size_ > 1) count(CommOp::Broadcast, t.nbytes());
  return make_handle(req, {t}, where("broadcast"), pending);
}

CommHandlePtr MpiCommunicator::send_async(const Tensor& t, int peer, int tag) {
  check_tensor("send", t, "the");
  check_peer("send", peer, tag);
  const Pending pending{this, "send", t.nbytes(), peer, tag};
  comm_stall_point([&] { return pending.str(); });
  MPI_Request req;
  check_mpi(MPI_Isend(t.raw(), byte_count(t), MPI_BYTE, peer, tag, comm_, &req), where("send"));
  count(CommOp::Send, t.nbytes());
  return make_handle(req, {t}, where("send"), pending);
}

CommHandlePtr MpiCommunicator::recv_async(Tensor& t, int peer, int tag) {
  check_tensor("recv", t, "the");
  check_peer("recv", peer, tag);
  const Pending pending{this, "recv", t.nbytes(), peer, tag};
  comm_stall_point([&] { return pending.str(); });
  MPI_Request req;
  check_mpi(MPI_Irecv(t.raw(), byte_count(t), MPI_BYTE, peer, tag, comm_, &req), where("recv"));
  count(CommOp::Recv, t.nbytes());
  // A shorter message than the tensor would leave it partly stale: refuse it.
  // (A longer one fails in MPI as truncated.)
  auto check = [w = where("recv"), peer, tag, want = t.nbytes()](const MPI_Status& st) {
    int got = 0;
    MPI_Get_count(&st, MPI_BYTE, &got);
    if (static_cast<size_t>(got) != want)
      throw std::runtime_error(w + ": expected " + std::to_string(want) + " bytes from peer " +
                               std::to_string(peer) + " with tag " + std::to_string(tag) + ", got " +
                               std::to_string(got));
  };
  return make_handle(req, {t}, where("recv"), pending, std::move(check));
}

// Nonblocking, so that the wait is watched like any other.
void MpiCommunicator::barrier() {
  const Pending pending{this, "barrier", 0};
  comm_stall_point([&] { return pending.str(); });
  MPI_Request req;
  check_mpi(MPI_Ibarrier(comm_, &req), where("barrier"));
  MpiHandle(req, {}, where("barrier"), pending).wait();
}

}  // namespace llm
