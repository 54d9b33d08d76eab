// Hugging Face LlamaForCausalLM format: config.json + model.safetensors
// (+ tokenizer.model). Our parameter names are already HF's, and q/k/v and
// gate/up are stored as separate tensors, so export is a straight copy.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "layers/llama_model.h"

namespace llm {

// Writes out_dir/{config.json, model.safetensors, tokenizer.model, tokenizer_config.json,
// generation_config.json}. dtype: F32 or BF16 for the weights.
void export_hf(const LlamaModel& model, const std::string& tokenizer_model, const std::string& out_dir, DType dtype);

// The model config of an HF export (config.json), checked for features we do not support.
ModelConfig read_hf_config(const std::string& dir);

// Initialises parameters from a Hugging Face LlamaForCausalLM directory (the
// inverse of export_hf; --load-hf), for any layout: `params` is the part one
// rank holds (a pipeline stage's subset of the parameters, tensor-parallel
// boxes of the full tensors), and each parameter p gets the box
// [p.full_offset, p.full_offset + p.shape) of the HF tensor of the same name,
// written to flat.flat_view(p.offset, p.shape). Nothing else of `flat` (e.g.
// bucket padding) is touched.
//
//  - dir/config.json must agree with `expected` in everything that shapes or
//    means something for the parameters (layers, hidden, ffn, heads, kv
//    heads, vocab, tied embeddings, rope theta, norm eps); seq_length and
//    init_std may differ.
//  - Weights: dir/model.safetensors, else the shards listed by
//    dir/model.safetensors.index.json ("weight_map": name -> file).
//  - HF dtypes F32, BF16, F16, F64 are converted to flat's dtype (F32 or F64;
//    exact except F64 -> F32, which rounds to nearest even).
//  - Tied embeddings: the last pipeline stage's copy of
//    model.embed_tokens.weight reads embed_tokens; an HF lm_head.weight is
//    then ignored (transformers ties it to the embedding as well).
//  - Every tensor of the full model is checked (presence, full shape, dtype)
//    on every rank, so all ranks fail alike; only this rank's bytes are read.
//  - Errors (std::runtime_error) name the file and the tensor: config
//    mismatch, missing tensor, shape mismatch, unsupported dtype, header
//    offsets outside the file (truncated), index naming a missing file.
//  - Unknown extra tensors are not errors: rotary inv_freq buffers are ignored
//    silently, anything else gives one warning line, appended to `warnings`
//    when given, else printed on stderr ("warning: ...").
void load_hf_parameters(const std::string& dir, const ModelConfig& expected, const ParameterStore& params,
                        Tensor& flat, std::vector<std::string>* warnings = nullptr);
// The whole model's values from an HF directory (load_hf_parameters into the
// model's own buffer; its config must match config.json).
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
