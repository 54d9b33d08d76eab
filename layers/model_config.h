// Shape of a LLaMA-style model, its parameter and FLOP counts.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace llm {

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 256;
  int64_t ffn_hidden_size = 0;  // 0: LLaMA's rule, ceil(8·hidden/3 / multiple)·multiple
  int64_t ffn_multiple_of = 256;
  int64_t num_layers = 4;
  int64_t num_attention_heads = 8;
  int64_t num_query_groups = 0;  // 0: same as heads (multi-head attention)
  int64_t seq_length = 256;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  double init_std = 0.02;
  bool tie_embeddings = false;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t groups() const { return num_query_groups ? num_query_groups : num_attention_heads; }
  int64_t ffn() const;
  // Fills in the derived defaults (ffn width, query groups).
  ModelConfig resolved() const;
  // Throws std::invalid_argument naming the flag and the fix.
  void validate() const;

  int64_t num_parameters() const;            // every trainable element
  int64_t num_embedding_parameters() const;  // the input embedding table
  // Weights used in a matrix product per token (PaLM's N for MFU): everything
  // but the input embedding lookup; the output projection counts even when tied.
  int64_t num_matmul_parameters() const;
  // Model FLOPs per trained token, PaLM appendix B: 6·N_matmul + 12·L·d·T.
  double flops_per_token() const;
};

void to_json(nlohmann::json& j, const ModelConfig& c);
void from_json(const nlohmann::json& j, ModelConfig& c);

}  // namespace llm
