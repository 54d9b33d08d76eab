// The communicator of a group of one: every collective is the identity (or a
// copy between its two buffers), on any device. A process started without a
// launcher uses it for all its groups, so a single machine, a single GPU
// included, needs no MPI runtime at all.
#pragma once
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace llm {

class LocalCommunicator : public Communicator {
 public:
  explicit LocalCommunicator(std::string name, int global_rank = 0)
      : name_(std::move(name)), members_{global_rank} {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::vector<int>& members() const override { return members_; }
  const std::string& name() const override { return name_; }

  CommHandlePtr all_reduce_async(Tensor& t, ReduceOp op) override;
  CommHandlePtr reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override;
  CommHandlePtr all_gather_async(const Tensor& in, Tensor& out) override;
  CommHandlePtr broadcast_async(Tensor& t, int root) override;
  CommHandlePtr send_async(const Tensor& t, int peer, int tag) override;
  CommHandlePtr recv_async(Tensor& t, int peer, int tag) override;
  void barrier() override {}

 private:
  std::string name_;
  std::vector<int> members_;
};

}  // namespace llm
