// Hugging Face LlamaForCausalLM format: config.json + model.safetensors
// (+ tokenizer.model). Our parameter names are already HF's, and q/k/v and
// gate/up are stored as separate tensors, so export is a straight copy.
#pragma once
#include <memory>
#include <string>

#include "layers/llama_model.h"

namespace llm {

// Writes out_dir/{config.json, model.safetensors, tokenizer.model, tokenizer_config.json,
// generation_config.json}. dtype: F32 or BF16 for the weights.
void export_hf(const LlamaModel& model, const std::string& tokenizer_model, const std::string& out_dir, DType dtype);

// The model config of an HF export (config.json), checked for features we do not support.
ModelConfig read_hf_config(const std::string& dir);
void load_hf_weights(const std::string& dir, LlamaModel& model);

// A model ready for inference from a checkpoint (--save root or iteration dir)
// or an HF export directory, with the tokenizer model path found beside it.
struct InferenceModel {
  std::unique_ptr<LlamaModel> model;
  std::string tokenizer_model;  // "" when the directory holds none
  std::string source;           // "checkpoint" or "hf"
};
InferenceModel load_for_inference(const std::string& dir);

}  // namespace llm
