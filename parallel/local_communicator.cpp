#include "parallel/local_communicator.h"

#include <stdexcept>

namespace llm {
namespace {

class DoneHandle : public CommHandle {
 public:
  void wait() override {}
  bool done() override { return true; }
};

}  // namespace

static CommHandlePtr done() { return std::make_unique<DoneHandle>(); }

// Every operation checks its sizes as the other backends do, so a layout bug
// shows up on one process too.
CommHandlePtr LocalCommunicator::all_reduce_async(Tensor&, ReduceOp) { return done(); }

CommHandlePtr LocalCommunicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp) {
  if (in.numel() != out.numel())
    throw std::invalid_argument(name_ + " reduce_scatter: " + in.str() + " into " + out.str() +
                                ": a group of one keeps the whole input");
  if (in.raw() != out.raw()) out.copy_from(in);
  return done();
}

CommHandlePtr LocalCommunicator::all_gather_async(const Tensor& in, Tensor& out) {
  if (in.numel() != out.numel())
    throw std::invalid_argument(name_ + " all_gather: " + in.str() + " into " + out.str() +
                                ": a group of one gathers just its own input");
  if (in.raw() != out.raw()) out.copy_from(in);
  return done();
}

CommHandlePtr LocalCommunicator::broadcast_async(Tensor&, int root) {
  if (root != 0) throw std::invalid_argument(name_ + " broadcast: root " + std::to_string(root) + " in a group of one");
  return done();
}

CommHandlePtr LocalCommunicator::send_async(const Tensor&, int peer, int) {
  throw std::logic_error(name_ + " send to " + std::to_string(peer) + ": a group of one has no peer");
}

CommHandlePtr LocalCommunicator::recv_async(Tensor&, int peer, int) {
  throw std::logic_error(name_ + " recv from " + std::to_string(peer) + ": a group of one has no peer");
}

}  // namespace llm
