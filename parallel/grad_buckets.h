// Data-parallel gradient reduction in buckets, overlapped with backward.
//
// The flat gradient buffer is cut into buckets from its end: backward
// finishes parameters in reverse registration order (output projection
// first, embedding last), so the last bucket is final first. The model
// reports "gradients from flat offset X to the end are final" as backward
// proceeds; every bucket wholly inside that range starts its all-reduce at
// once, asynchronously, while backward goes on. finish() starts what is left
// and waits for all. Non-blocking MPI collectives progress inside MPI calls,
// so each report also polls the buckets in flight.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "parallel/communicator.h"

namespace llm {

class GradBuckets {
 public:
  // grads: the flat gradient buffer; bucket_elems: elements per bucket (> 0).
  GradBuckets(Tensor grads, Communicator& dp, int64_t bucket_elems);
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Gradients at flat offsets [offset, end) will not change any more.
  void grads_final_from(int64_t offset);
  // Starts the remaining buckets and waits for every reduction.
  void finish();

 private:
  struct Bucket {
    int64_t begin, end;
    CommHandlePtr handle;
  };
  Tensor grads_;
  Communicator& dp_;
  std::vector<Bucket> buckets_;  // buckets_[0] is the last range of the buffer
  size_t next_ = 0;              // first bucket not started yet
};

}  // namespace llm
