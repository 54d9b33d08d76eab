// How a model tells the owner of its parameter memory when it uses which
// parameters, so that ZeRO (optim/distributed_optimizer.h) can gather a
// layer's weights just before it runs (stage 3), prefetch the next layer's,
// free them after, and reduce a layer's gradients as soon as they are
// complete (stages 0-3; overlapped with the rest of backward).
//
// A unit is a run of parameters used together: a chunk's embedding, one
// transformer block, the final norm, the output projection. Every use of a
// unit's values or gradients lies between acquire() and release().
#pragma once
#include <cstddef>
#include <vector>

namespace llm {

struct ParameterUnit {
  size_t first_param = 0, end_param = 0;  // the store's parameters [first, end)
  int chunk = 0;                          // the model chunk using it
  // Kept in a bucket of its own: a tied embedding or output weight, whose
  // gradient is summed with its twin on another pipeline stage shard by shard.
  bool standalone = false;
};

class ParameterHooks {
 public:
  virtual ~ParameterHooks() = default;
  // The unit's values (and, for backward, its gradients) are needed now.
  // prefetch: the unit the model will acquire next (−1: none), whose
  // values may be fetched while this one is in use.
  virtual void acquire(int unit, bool backward, int prefetch) = 0;
  // Done with the unit. grads_complete: this micro-batch adds nothing more
  // to its gradients (false when a tied weight is used again later).
  virtual void release(int unit, bool backward, bool grads_complete) = 0;
};

}  // namespace llm
