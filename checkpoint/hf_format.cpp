#include "checkpoint/hf_format.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "checkpoint/checkpoint.h"
#include "checkpoint/safetensors.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;

namespace llm {

void export_hf(const LlamaModel& model, const std::string& tokenizer_model, const std::string& out_dir, DType dtype) {
  if (dtype != DType::F32 && dtype != DType::BF16)
    throw std::invalid_argument("--dtype: export supports float32 and bfloat16");
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw std::runtime_error("--output " + out_dir + ": cannot create the directory (" + ec.message() + ")");
  const ModelConfig& c = model.config();
  const ParameterStore& ps = model.params();
  int bos = 1, eos = 2;  // llm-prepare-data's tokenizers; read from the model file when there is one
  if (!tokenizer_model.empty()) {
    const data::Tokenizer tok(tokenizer_model);
    bos = tok.bos_id();
    eos = tok.eos_id();
  }
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const auto& p : ps.infos()) {
    Tensor v = ps.values().flat_view(p.offset, p.shape);
    if (dtype == DType::F32 && v.dtype() == DType::F32) {
      w.add(p.name, v);
      continue;
    }
    std::vector<char> bytes(static_cast<size_t>(p.numel) * dtype_size(dtype));
    for (int64_t i = 0; i < p.numel; ++i) {
      const double x = v.dtype() == DType::F64 ? v.data<double>()[i] : v.data<float>()[i];
      if (dtype == DType::F32) reinterpret_cast<float*>(bytes.data())[i] = static_cast<float>(x);
      else reinterpret_cast<bf16*>(bytes.data())[i] = bf16(static_cast<float>(x));
    }
    w.add_raw(p.name, dtype, p.shape, bytes.data(), bytes.size());
  }
  w.write((fs::path(out_dir) / "model.safetensors").string());
  nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.ffn()},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.groups()},
      {"head_dim", c.head_dim()},
      {"max_position_embeddings", c.seq_length},
      {"rms_norm_eps", c.norm_eps},
      {"rope_theta", c.rope_theta},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"tie_word_embeddings", c.tie_embeddings},
      {"initializer_range", c.init_std},
      {"bos_token_id", bos},
      {"eos_token_id", eos},
      {"torch_dtype", dtype == DType::BF16 ? "bfloat16" : "float32"}};
  write_file_atomic((fs::path(out_dir) / "config.json").string(), config.dump(2) + "\n");
  write_file_atomic((fs::path(out_dir) / "generation_config.json").string(),
                    nlohmann::json{{"bos_token_id", bos}, {"eos_token_id", eos}}.dump(2) + "\n");
  if (!tokenizer_model.empty()) {
    fs::copy_file(tokenizer_model, fs::path(out_dir) / "tokenizer.model", fs::copy_options::overwrite_existing);
    const nlohmann::json tok = {{"tokenizer_class", "LlamaTokenizer"}, {"bos_token", "<s>"},   {"eos_token", "</s>"},
                                {"unk_token", "<unk>"},                {"add_bos_token", true}, {"add_eos_token", false},
                                {"model_max_length", c.seq_length}};
    write_file_atomic((fs::path(out_dir) / "tokenizer_config.json").string(), tok.dump(2) + "\n");
  }
}

ModelConfig read_hf_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  std::ifstream in(path);
  if (!in) throw std::runtime_error("'" + path + "' is missing: not a Hugging Face model directory");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + path + "' is not valid JSON: " + e.what());
  }
  try {
    ModelConfig c;
    c.vocab_size = j.at("vocab_size");
    c.hidden_size = j.at("hidden_size");
    c.ffn_hidden_size = j.at("intermediate_size");
    c.num_layers = j.at("num_hidden_layers");
    c.num_attention_heads = j.at("num_attention_heads");
    c.num_query_groups = j.value("num_key_value_heads", c.num_attention_heads);
    c.seq_length = j.value("max_position_embeddings", int64_t{2048});
    c.norm_eps = j.value("rms_norm_eps", 1e-6);
    c.rope_theta = j.value("rope_theta", 10000.0);
    c.tie_embeddings = j.value("tie_word_embeddings", false);
    if (j.value("model_type", std::string("llama")) != "llama")
      throw std::runtime_error("model_type '" + j["model_type"].get<std::string>() + "' is not llama");
    if (j.value("attention_bias", false) || j.value("mlp_bias", false))
      throw std::runtime_error("attention_bias / mlp_bias are not supported (the model has no biases)");
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
      throw std::runtime_error("rope_scaling is not supported");
    if (j.value("hidden_act", std::string("silu")) != "silu")
      throw std::runtime_error("hidden_act must be silu");
    if (j.contains("head_dim") && j["head_dim"].get<int64_t>() != c.hidden_size / c.num_attention_heads)
      throw std::runtime_error("head_dim other than hidden_size / num_attention_heads is not supported");
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("'" + path + "': " + e.what());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("'" + path + "': " + e.what());
  }
}

void load_hf_weights(const std::string& dir, LlamaModel& model) {
  const std::string path = (fs::path(dir) / "model.safetensors").string();
  SafetensorsReader r(path);
  ParameterStore& ps = model.params();
  for (const auto& [name, e] : r.entries())
    if (!ps.has(name))
      throw std::runtime_error("'" + path + "' holds '" + name + "', which a LlamaForCausalLM of this config does not have");
  for (const auto& p : ps.infos()) {
    if (!r.has(p.name)) throw std::runtime_error("'" + path + "' has no tensor '" + p.name + "'");
    if (r.entry(p.name).shape != p.shape)
      throw std::runtime_error("'" + path + "': '" + p.name + "' has shape " + shape_str(r.entry(p.name).shape) +
                               ", config.json implies " + shape_str(p.shape));
    Tensor dst = ps.values().flat_view(p.offset, p.shape);
    r.read_into(p.name, dst);
  }
}

InferenceModel load_for_inference(const std::string& dir) {
  InferenceModel m;
  if (fs::exists(fs::path(dir) / "config.json") && fs::exists(fs::path(dir) / "model.safetensors")) {
    m.model = std::make_unique<LlamaModel>(read_hf_config(dir));
    load_hf_weights(dir, *m.model);
    const fs::path tok = fs::path(dir) / "tokenizer.model";
    m.tokenizer_model = fs::exists(tok) ? tok.string() : "";
    m.source = "hf";
    return m;
  }
  CheckpointOnDisk ck = open_checkpoint(dir);
  m.model = std::make_unique<LlamaModel>(ck.model);
  load_model_weights(ck, *m.model);
  m.tokenizer_model = ck.tokenizer_model();
  m.source = "checkpoint";
  return m;
}

}  // namespace llm
