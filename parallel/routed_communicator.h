// One group, two transports: tensors in host memory go over the host
// communicator (MPI), tensors on a GPU over the device communicator (NCCL).
// The trainer's small control values (loss sums, agreement on a signal) stay
// on the host while the layers' activations and gradients never leave the GPU,
// and neither side needs to know which transport carries it.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace llm {

class RoutedCommunicator : public Communicator {
 public:
  RoutedCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<Communicator> device);
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  const std::vector<int>& members() const override { return host_->members(); }
  const std::string& name() const override { return host_->name(); }

  CommHandlePtr all_reduce_async(Tensor& t, ReduceOp op) override;
  CommHandlePtr reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override;
  CommHandlePtr all_gather_async(const Tensor& in, Tensor& out) override;
  CommHandlePtr broadcast_async(Tensor& t, int root) override;
  CommHandlePtr send_async(const Tensor& t, int peer, int tag) override;
  CommHandlePtr recv_async(Tensor& t, int peer, int tag) override;
  void barrier() override { host_->barrier(); }

  Communicator& host() { return *host_; }
  Communicator& device() { return *device_; }

 private:
  // The transport for t; the bytes it counts are added to this group's counters.
  template <class F>
  CommHandlePtr route(CommOp op, const Tensor& t, F&& f);
  std::unique_ptr<Communicator> host_, device_;
};

}  // namespace llm
