// Tensor parallelism as the layers see it: which part of a split weight this
// rank holds, and the two conjugate collectives that join the parts
// (Megatron's f and g).
//
// Between layers the residual stream is replicated on every tensor-parallel
// rank, or, with sequence parallelism, split into equal blocks of rows (rank
// r holds rows [r·rows/tp, (r+1)·rows/tp) of batch·sequence). Each block of
// the model then reads the full rows and ends in partial sums:
//
//   full  = gather(residual)    SP: all-gather rows      else: the same tensor
//   out  += reduce(partial)     SP: reduce-scatter rows  else: all-reduce
//
// and in backward the two swap roles: gather() of the output's gradient gives
// the partial sums' gradient, reduce() of the input's partial gradient gives
// the residual's. Layers hold a pointer to the tp Communicator only.
#pragma once
#include <cstdint>

#include "layers/parameters.h"
#include "parallel/communicator.h"

namespace llm {

struct TensorParallel {
  Communicator* group = nullptr;  // null: no tensor parallelism
  bool sequence_parallel = false;

  int size() const { return group ? group->size() : 1; }
  int rank() const { return group ? group->rank() : 0; }
  bool active() const { return size() > 1; }
  // Rows of the residual stream this rank holds, of `rows` in the micro-batch.
  int64_t residual_rows(int64_t rows) const { return sequence_parallel ? rows / size() : rows; }
  // This rank's equal part of a dimension of size `full` along `dim`.
  int64_t part(int64_t full) const { return full / size(); }
  TensorShard shard(int dim, int64_t full) const {
    if (!active()) return {};
    return {dim, rank() * part(full), full};
  }

  // Residual layout → full rows (see above). Returns `residual` itself without SP.
  Tensor gather(const Tensor& residual) const;
  // Partial sums over full rows → residual layout, summed over the ranks.
  // May reduce in place and return `partial` (all-reduce).
  Tensor reduce(Tensor& partial) const;
};

}  // namespace llm
