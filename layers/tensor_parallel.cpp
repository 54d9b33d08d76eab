#include "layers/tensor_parallel.h"

namespace llm {

Tensor TensorParallel::gather(const Tensor& residual) const {
  if (!active() || !sequence_parallel) return residual;
  Tensor full = Tensor::empty({residual.size(0) * size(), residual.size(1)}, residual.dtype(),
                              MemoryCategory::Activations, residual.device());
  group->all_gather(residual, full);
  return full;
}

Tensor TensorParallel::reduce(Tensor& partial) const {
  if (!active()) return partial;
  if (statistics_dtype(partial.dtype()) != partial.dtype()) {  // 16-bit partial sums are added in fp32
    Tensor wide = partial.to(DType::F32, MemoryCategory::Communication);
    const Tensor sum = reduce(wide);
    Tensor out = sequence_parallel ? Tensor::empty(sum.shape(), partial.dtype(), MemoryCategory::Activations,
                                                   partial.device())
                                   : partial;
    out.convert_from(sum);
    return out;
  }
  if (!sequence_parallel) {
    group->all_reduce(partial, ReduceOp::Sum);
    return partial;
  }
  Tensor mine = Tensor::empty({partial.size(0) / size(), partial.size(1)}, partial.dtype(),
                              MemoryCategory::Activations, partial.device());
  group->reduce_scatter(partial, mine, ReduceOp::Sum);
  return mine;
}

}  // namespace llm
