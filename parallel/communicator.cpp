// The backend-independent part of the Communicator: operation names and the
// byte counters, so every backend reports communication volume the same way.
#include "parallel/communicator.h"

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

void Communicator::reset_counters() {
  for (auto& b : bytes_) b = 0;
}

}  // namespace llm
