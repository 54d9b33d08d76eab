#include "sweep/flops.h"

namespace llm::sweep {

int64_t total_parameters(const ModelConfig& m) { return m.resolved().num_parameters(); }

int64_t non_embedding_parameters(const ModelConfig& m) {
  const ModelConfig r = m.resolved();
  const int64_t vocab_matrices = r.num_embedding_parameters() * (r.tie_embeddings ? 1 : 2);
  return r.num_parameters() - vocab_matrices;
}

double flops_6nd(double n, double tokens) { return 6.0 * n * tokens; }

double flops_exact(const ModelConfig& m, double tokens) { return m.resolved().flops_per_token() * tokens; }

}  // namespace llm::sweep
