// Parameter and FLOP counts of a sweep run (the N and C of the scaling-law fits).
//
// N total       = ModelConfig::num_parameters(): every trainable element (input
//                 embedding, blocks, final norm, untied output projection).
// N non-embedding = N total minus the vocabulary matrices: the input embedding
//                 table and, when untied, the output projection (Kaplan et al.'s
//                 convention: what is left grows with depth and width only).
// C 6ND         = 6 · N · D, the usual approximation (2 FLOPs per weight per
//                 token forward, 4 backward), here always with N total.
// C exact       = ModelConfig::flops_per_token() · D = (6 · N_matmul + 12 · L · d · T) · D
//                 (PaLM's appendix B, the count llm-train's MFU uses): N_matmul
//                 counts every weight used in a matrix product (blocks and the
//                 output projection, not the embedding lookup, not the norms), and
//                 12·L·d·T is attention's QKᵀ and A·V (forward + backward) with
//                 T = seq-length, i.e. without halving for the causal mask.
#pragma once
#include <cstdint>

#include "layers/model_config.h"

namespace llm::sweep {

// N total (ModelConfig::num_parameters()).
int64_t total_parameters(const ModelConfig& m);
// N without the input embedding and the (untied) output projection.
int64_t non_embedding_parameters(const ModelConfig& m);
// 6 · n · tokens.
double flops_6nd(double n, double tokens);
// flops_per_token() · tokens, attention term included.
double flops_exact(const ModelConfig& m, double tokens);

}  // namespace llm::sweep
