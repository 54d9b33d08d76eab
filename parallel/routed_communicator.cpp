#include "parallel/routed_communicator.h"

#include <stdexcept>

namespace llm {

RoutedCommunicator::RoutedCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<Communicator> device)
    : host_(std::move(host)), device_(std::move(device)) {
  if (host_->size() != device_->size() || host_->rank() != device_->rank())
    throw std::logic_error("RoutedCommunicator " + host_->name() + ": the host and device groups differ");
}

template <class F>
CommHandlePtr RoutedCommunicator::route(CommOp op, const Tensor& t, F&& f) {
  Communicator& c = t.device().is_cpu() ? *host_ : *device_;
  const uint64_t before = c.bytes_sent(op);
  CommHandlePtr h = f(c);
  count(op, c.bytes_sent(op) - before);
  return h;
}

CommHandlePtr RoutedCommunicator::all_reduce_async(Tensor& t, ReduceOp op) {
  return route(CommOp::AllReduce, t, [&](Communicator& c) { return c.all_reduce_async(t, op); });
}

CommHandlePtr RoutedCommunicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) {
  if (in.device() != out.device())
    throw std::invalid_argument(name() + " reduce_scatter: " + in.str() + " into " + out.str() + ": devices differ");
  return route(CommOp::ReduceScatter, in, [&](Communicator& c) { return c.reduce_scatter_async(in, out, op); });
}

CommHandlePtr RoutedCommunicator::all_gather_async(const Tensor& in, Tensor& out) {
  if (in.device() != out.device())
    throw std::invalid_argument(name() + " all_gather: " + in.str() + " into " + out.str() + ": devices differ");
  return route(CommOp::AllGather, in, [&](Communicator& c) { return c.all_gather_async(in, out); });
}

CommHandlePtr RoutedCommunicator::broadcast_async(Tensor& t, int root) {
  return route(CommOp::Broadcast, t, [&](Communicator& c) { return c.broadcast_async(t, root); });
}

CommHandlePtr RoutedCommunicator::send_async(const Tensor& t, int peer, int tag) {
  return route(CommOp::Send, t, [&](Communicator& c) { return c.send_async(t, peer, tag); });
}

CommHandlePtr RoutedCommunicator::recv_async(Tensor& t, int peer, int tag) {
  return route(CommOp::Recv, t, [&](Communicator& c) { return c.recv_async(t, peer, tag); });
}

}  // namespace llm
