// The data-parallel optimizer: ZeRO stages 0-3 and mixed precision.
//
// The parameter store is laid out in buckets (layers/parameters.h), each
// padded to a multiple of the data-parallel size dp; dp rank r owns the r-th
// contiguous slice of every bucket (Megatron's distributed optimizer). The
// concatenation of a rank's slices is its "shard space"; everything sharded
// lives there.
//
//   stage 0  gradients all-reduced bucket by bucket during the last
//            micro-batch's backward; every rank updates every parameter.
//   stage 1  the same buckets reduce-scattered instead (in place): Adam's
//            moments (and fp32 master weights) exist for the own slices only;
//            after the update each bucket's slices are all-gathered in place.
//   stage 2  also gradients: a layer's gradient buffer exists from its
//            backward until its reduce-scatter (every micro-batch), which
//            adds its slice into the rank's gradient shard.
//   stage 3  also parameters: a rank keeps only its slices of the values;
//            a layer's bucket is all-gathered before its forward and again
//            before its backward, the next layer's gather in flight
//            meanwhile, and freed after use. No all-gather after the update.
//
// Mixed precision (model dtype BF16/F16): the store's values and gradients are
// 16-bit; master weights and moments are fp32 in shard space; gradients are
// reduced in fp32 (converted per bucket, then rounded back).
//
// With dp = 1 every stage is stage 0 (nothing to shard). The model tells this
// class when it uses which layer through layers/parameter_hooks.h.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "layers/llama_model.h"
#include "optim/adamw.h"
#include "parallel/communicator.h"

namespace llm {

struct DistributedOptimizerConfig {
  int zero_stage = 0;
  int64_t bucket_elems = 40'000'000;  // stages 0-1: layers are merged into buckets up to this size
  AdamWConfig adam;
};

class DistributedOptimizer : public ParameterHooks {
 public:
  // Lays the model's store out in buckets (it is reallocated: call before
  // the model is initialized or loaded) and registers itself as its hooks.
  DistributedOptimizer(LlamaModel& model, Communicator& dp, const DistributedOptimizerConfig& cfg);
  ~DistributedOptimizer() override;
  DistributedOptimizer(const DistributedOptimizer&) = delete;
  DistributedOptimizer& operator=(const DistributedOptimizer&) = delete;

  int stage() const { return stage_; }  // the effective stage (0 when dp = 1)
  bool sharded() const { return stage_ >= 1; }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  int64_t owned_elements() const { return owned_; }  // parameters whose moments this rank keeps
  bool has_master_weights() const { return master_.defined(); }

  // Initial values, laid out like the store (F32 or F64, padded_numel()):
  // they become the master weights and, rounded, the model's values (of
  // which ZeRO-3 keeps only the own slices). `flat` may be the store's own values.
  void set_values(const Tensor& flat);

  // One optimizer step: begin_step(), the micro-batches (the model calls
  // acquire/release; set_last_microbatch before each backward), then
  // finish_gradient_reduction(), any group sums, the norm, step().
  void begin_step();
  void set_last_microbatch(bool last) { last_microbatch_ = last; }
  void acquire(int unit, bool backward, int prefetch) override;
  void release(int unit, bool backward, bool grads_complete) override;
  void finish_gradient_reduction();
  // Sums over `group` the summed gradients this rank owns of the parameters
  // `which` selects (a tied embedding's two copies; sequence-parallel norm
  // weights). Every rank of the group must own the same slices of them.
  void all_reduce_grads(const std::function<bool(const ParameterInfo&)>& which, Communicator& group);
  // Sum of squared gradients per parameter (registration order) over the
  // data-parallel group: the same numbers on every dp rank.
  std::vector<double> grad_sums_of_squares();
  // AdamW on the own slices, then the model's values brought up to date.
  void step(double lr, double grad_scale);

  // A host copy of what this rank updates (master weights or its values,
  // and the moments; in host memory also for a GPU model): the in-memory
  // snapshot spike rollback returns to.
  // restore() is a collective over dp for stages 1-2 (values re-gathered).
  struct Snapshot {
    Tensor params, exp_avg, exp_avg_sq;
    int64_t steps = 0;
    size_t bytes() const { return params.nbytes() + exp_avg.nbytes() + exp_avg_sq.nbytes(); }
  };
  Snapshot snapshot() const;
  // Fault injection (tests): a NaN in the first gradient element this rank owns.
  void poison_gradient();
  void restore(const Snapshot& s);

  // Checkpoints (collectives over dp): the full master weights laid out like
  // the store (the store's own values when those are them), and the full
  // moments as an AdamW laid out like the store. The moments are in host
  // memory when nothing needs gathering (one data-parallel shard), else on
  // the model's device (the collectives run there).
  Tensor gather_master_values();
  std::unique_ptr<AdamW> gather_state();
  void load_state(const AdamW& full);
  int64_t steps_taken() const { return adam_->steps_taken(); }
  const AdamW& adam() const { return *adam_; }

 private:
  // A parameter's part in the own slice of its bucket.
  struct Piece {
    size_t param;
    int64_t flat;   // first element, flat offset
    int64_t shard;  // first element in shard space
    int64_t state;  // first element in the moments
    int64_t numel;
  };
  struct Bucket {
    int64_t begin = 0, numel = 0;  // the store's bucket
    int64_t own = 0;               // flat offset of this rank's slice (numel / shards elements)
    int64_t shard = 0;             // the slice's place in shard space
    int units = 0, units_done = 0;
    bool launched = false;   // reduction started since begin_step (stages 0-1)
    int value_refs = 0;      // ZeRO-3: users of the gathered values
    CommHandlePtr gather;    // ZeRO-3: gather in flight
    CommHandlePtr reduce;    // reduction in flight
    Tensor send, recv;       // its buffers (fp32 copy of 16-bit gradients; ZeRO-2/3 result)
  };
  int64_t slice(const Bucket& b) const { return b.numel / shards_; }
  Tensor grad_of(const Piece& p) const;   // the summed gradient this rank owns
  Tensor value_of(const Piece& p) const;  // the model's (possibly 16-bit) value
  // Copies every piece from src (at offset p.*from) to dst (at p.*to), one copy per run
  // of pieces adjacent in both layouts: a GPU model's state moves in a few large copies.
  void copy_pieces(const Tensor& src, int64_t Piece::*from, Tensor& dst, int64_t Piece::*to) const;
  void start_gather(size_t b);
  // master → model values (rounded, unless the update already did: rounded); stages 1-2: slices all-gathered
  void publish_values(bool rounded = false);
  void launch_reduction(size_t b);
  void complete_reduction(size_t b);
  void poll();

  LlamaModel& model_;
  ParameterStore& store_;
  Communicator& dp_;
  DistributedOptimizerConfig cfg_;
  int stage_ = 0, shards_ = 1, rank_ = 0;
  DType dtype_, master_dtype_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> unit_bucket_;
  std::vector<Piece> pieces_;
  std::vector<size_t> in_flight_;
  int64_t shard_numel_ = 0, owned_ = 0;
  Tensor grad_shard_;   // ZeRO-2/3: summed gradients of the own slices
  Tensor param_shard_;  // ZeRO-3: values of the own slices
  Tensor master_;       // mixed precision: fp32 master weights, shard space
  std::unique_ptr<AdamW> adam_;
  bool last_microbatch_ = true;
};

}  // namespace llm
