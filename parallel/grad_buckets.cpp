#include "parallel/grad_buckets.h"

#include <algorithm>
#include <stdexcept>

namespace llm {

GradBuckets::GradBuckets(Tensor grads, Communicator& dp, int64_t bucket_elems) : grads_(std::move(grads)), dp_(dp) {
  if (bucket_elems <= 0) throw std::invalid_argument("--ddp-bucket-size must be positive");
  for (int64_t end = grads_.numel(); end > 0; end -= bucket_elems)
    buckets_.push_back({std::max<int64_t>(0, end - bucket_elems), end, nullptr});
}

void GradBuckets::grads_final_from(int64_t offset) {
  while (next_ < buckets_.size() && buckets_[next_].begin >= offset) {
    Bucket& b = buckets_[next_++];
    Tensor view = grads_.flat_view(b.begin, {b.end - b.begin});
    b.handle = dp_.all_reduce_async(view, ReduceOp::Sum);
  }
  for (size_t i = 0; i < next_; ++i)
    if (buckets_[i].handle) buckets_[i].handle->done();  // lets MPI progress the transfers
}

void GradBuckets::finish() {
  grads_final_from(0);
  for (auto& b : buckets_) {
    if (b.handle) b.handle->wait();
    b.handle.reset();
  }
  next_ = 0;
}

}  // namespace llm
