// The backend-independent part of the Communicator: operation names and the
// byte counters, so every backend reports communication volume the same way.
#include "parallel/communicator.h"

#include <cstring>

#include "parallel/watchdog.h"

namespace llm {

const char* comm_op_name(CommOp op) {
  switch (op) {
    case CommOp::AllReduce: return "all_reduce";
    case CommOp::ReduceScatter: return "reduce_scatter";
    case CommOp::AllGather: return "all_gather";
    case CommOp::Broadcast: return "broadcast";
    case CommOp::Send: return "send";
    case CommOp::Recv: return "recv";
    case CommOp::kCount: break;
  }
  return "?";
}

// Recv's counter holds the bytes received (nothing is sent by a receive), so
// it is left out of the total: every byte is counted once, by its sender.
uint64_t Communicator::bytes_sent_total() const {
  uint64_t total = 0;
  for (size_t i = 0; i < static_cast<size_t>(CommOp::kCount); ++i)
    if (static_cast<CommOp>(i) != CommOp::Recv) total += bytes_[i];
  return total;
}

std::string Communicator::where(const char* op) const {
  return std::string(op) + " on group '" + name() + "' (size " + std::to_string(size()) + ")";
}

std::string Communicator::describe(const char* op, size_t bytes, int peer, int tag) const {
  std::string s = op;
  if (peer >= 0 && peer < size())
    s += std::string(std::strcmp(op, "recv") == 0 ? " from" : " to") + " rank " + std::to_string(members()[peer]) +
         " (tag " + std::to_string(tag) + ")";
  s += " on group '" + name() + "' (ranks " + rank_list(members()) + ")";
  if (std::strcmp(op, "barrier") != 0) s += " of " + std::to_string(bytes) + " bytes";
  return s;
}

void Communicator::reset_counters() {
  for (auto& b : bytes_) b = 0;
}

}  // namespace llm
