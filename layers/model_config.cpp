#include "layers/model_config.h"

#include <stdexcept>

namespace llm {

int64_t ModelConfig::ffn() const {
  if (ffn_hidden_size > 0) return ffn_hidden_size;
  const int64_t m = ffn_multiple_of > 0 ? ffn_multiple_of : 1;
  const int64_t raw = 8 * hidden_size / 3;  // 2/3 · 4 · hidden, as LLaMA's int(2·4d/3)
  return (raw + m - 1) / m * m;
}

ModelConfig ModelConfig::resolved() const {
  ModelConfig c = *this;
  c.ffn_hidden_size = ffn();
  c.num_query_groups = groups();
  return c;
}

static void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

void ModelConfig::validate() const {
  require(vocab_size > 0, "--vocab-size: must be positive (it is taken from the tokenizer model when given)");
  require(hidden_size > 0, "--hidden-size: must be positive");
  require(num_layers > 0, "--num-layers: must be positive");
  require(num_attention_heads > 0, "--num-attention-heads: must be positive");
  require(seq_length > 0, "--seq-length: must be positive");
  require(hidden_size % num_attention_heads == 0,
          "--num-attention-heads " + std::to_string(num_attention_heads) + " does not divide --hidden-size " +
              std::to_string(hidden_size) + ": choose heads so that hidden-size / heads is a whole head dimension");
  require(head_dim() % 2 == 0, "--hidden-size / --num-attention-heads = " + std::to_string(head_dim()) +
                                   " is odd: rotary embeddings need an even head dimension");
  require(num_query_groups >= 0, "--num-query-groups: must be positive");
  require(num_attention_heads % groups() == 0,
          "--num-query-groups " + std::to_string(groups()) + " does not divide --num-attention-heads " +
              std::to_string(num_attention_heads) + ": each key/value group must serve a whole number of query heads");
  require(ffn() > 0, "--ffn-hidden-size: must be positive");
  require(rope_theta > 0, "--rotary-base: must be positive");
  require(norm_eps > 0, "--norm-epsilon: must be positive");
  require(init_std > 0, "--init-method-std: must be positive");
}

int64_t ModelConfig::num_embedding_parameters() const { return vocab_size * hidden_size; }

int64_t ModelConfig::num_parameters() const {
  const int64_t d = hidden_size, kv = groups() * head_dim();
  const int64_t per_layer = d * (d + 2 * kv) + d * d + 3 * d * ffn() + 2 * d;
  return num_embedding_parameters() + num_layers * per_layer + d + (tie_embeddings ? 0 : vocab_size * d);
}

int64_t ModelConfig::num_matmul_parameters() const {
  const int64_t d = hidden_size, kv = groups() * head_dim();
  const int64_t per_layer = d * (d + 2 * kv) + d * d + 3 * d * ffn();
  return num_layers * per_layer + vocab_size * d;
}

double ModelConfig::flops_per_token() const {
  return 6.0 * static_cast<double>(num_matmul_parameters()) +
         12.0 * static_cast<double>(num_layers) * static_cast<double>(hidden_size) *
             static_cast<double>(seq_length);
}

void to_json(nlohmann::json& j, const ModelConfig& c) {
  j = nlohmann::json{{"vocab_size", c.vocab_size},
                     {"hidden_size", c.hidden_size},
                     {"ffn_hidden_size", c.ffn()},
                     {"num_layers", c.num_layers},
                     {"num_attention_heads", c.num_attention_heads},
                     {"num_query_groups", c.groups()},
                     {"seq_length", c.seq_length},
                     {"rope_theta", c.rope_theta},
                     {"norm_eps", c.norm_eps},
                     {"init_std", c.init_std},
                     {"tie_embeddings", c.tie_embeddings}};
}

void from_json(const nlohmann::json& j, ModelConfig& c) {
  c.vocab_size = j.at("vocab_size");
  c.hidden_size = j.at("hidden_size");
  c.ffn_hidden_size = j.at("ffn_hidden_size");
  c.num_layers = j.at("num_layers");
  c.num_attention_heads = j.at("num_attention_heads");
  c.num_query_groups = j.at("num_query_groups");
  c.seq_length = j.at("seq_length");
  c.rope_theta = j.at("rope_theta");
  c.norm_eps = j.at("norm_eps");
  c.init_std = j.value("init_std", 0.02);
  c.tie_embeddings = j.at("tie_embeddings");
}

}  // namespace llm
