#include "checkpoint/hf_format.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
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

namespace {

// ---- reading Hugging Face safetensors checkpoints (--load-hf) ----

// A tensor of a safetensors file, from its header. Parsed here rather than by
// SafetensorsReader: HF files may hold tensors of dtypes we never read (I64,
// U8, F8_E4M3, ...), which must not make the whole file unreadable, and
// partial reads need the absolute byte offsets.
struct HfTensor {
  std::string file;
  std::string dtype;  // safetensors' name: "F32", "BF16", ...
  Shape shape;
  uint64_t begin = 0, end = 0;  // absolute byte range in the file
};

// Bytes per element of safetensors' dtypes; 0 when unknown.
size_t safetensors_dtype_size(const std::string& d) {
  static const std::map<std::string, size_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},      {"I16", 2},     {"I8", 1},
      {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1},   {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  const auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

bool readable_dtype(const std::string& d) { return d == "F32" || d == "F64" || d == "BF16" || d == "F16"; }

// The tensors of one safetensors file, every byte range checked against the
// file's size (a truncated file fails here, naming the tensor).
std::map<std::string, HfTensor> read_safetensors_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open '" + path + "': file missing or unreadable");
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  auto bad = [&](const std::string& why) {
    return std::runtime_error("'" + path + "' is not a valid safetensors file: " + why);
  };
  if (size < 8) throw bad("it has " + std::to_string(size) + " bytes, fewer than the 8-byte header length (truncated?)");
  in.seekg(0);
  unsigned char len_le[8];
  in.read(reinterpret_cast<char*>(len_le), 8);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= static_cast<uint64_t>(len_le[i]) << (8 * i);
  if (hlen > size - 8)
    throw bad("the header length " + std::to_string(hlen) + " exceeds the file of " + std::to_string(size) +
              " bytes (truncated?)");
  if (hlen > (100u << 20)) throw bad("the header length " + std::to_string(hlen) + " exceeds 100 MiB");
  std::string h(hlen, '\0');
  in.read(h.data(), static_cast<std::streamsize>(hlen));
  if (!in) throw bad("cannot read its header");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(h);
  } catch (const std::exception& e) {
    throw bad(std::string("the header is not JSON (") + e.what() + ")");
  }
  if (!header.is_object()) throw bad("the header is not a JSON object");
  const uint64_t data_start = 8 + hlen, data_size = size - data_start;
  std::map<std::string, HfTensor> out;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") continue;
    HfTensor t;
    t.file = path;
    try {
      t.dtype = v.at("dtype").get<std::string>();
      t.shape = v.at("shape").get<Shape>();
      const auto& offs = v.at("data_offsets");
      if (!offs.is_array() || offs.size() != 2) throw bad("tensor '" + name + "': data_offsets is not [begin, end]");
      t.begin = offs.at(0).get<uint64_t>();
      t.end = offs.at(1).get<uint64_t>();
    } catch (const nlohmann::json::exception& e) {
      throw bad("tensor '" + name + "': " + e.what());
    }
    uint64_t numel = 1;
    for (const int64_t d : t.shape) {
      if (d < 0 || (d > 0 && numel > (uint64_t{1} << 62) / static_cast<uint64_t>(d)))
        throw bad("tensor '" + name + "' has an invalid shape " + shape_str(t.shape));
      numel *= static_cast<uint64_t>(d);
    }
    if (t.begin > t.end || t.end > data_size)
      throw bad("tensor '" + name + "' byte range [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                ") lies outside the data section of " + std::to_string(data_size) + " bytes (truncated file?)");
    const size_t esize = safetensors_dtype_size(t.dtype);
    if (esize && numel * esize != t.end - t.begin)
      throw bad("tensor '" + name + "' has " + std::to_string(t.end - t.begin) + " bytes, but " + t.dtype +
                shape_str(t.shape) + " needs " + std::to_string(numel * esize));
    t.begin += data_start;
    t.end += data_start;
    out.emplace(name, std::move(t));
  }
  return out;
}

// Every tensor of an HF checkpoint directory: model.safetensors, else the
// shards named by model.safetensors.index.json (as transformers looks for them).
struct HfWeights {
  std::string source;  // the single file or the index, for messages
  std::map<std::string, HfTensor> tensors;
};

HfWeights open_hf_weights(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors", index = fs::path(dir) / "model.safetensors.index.json";
  HfWeights w;
  if (fs::exists(single)) {
    w.source = single.string();
    w.tensors = read_safetensors_header(w.source);
    return w;
  }
  if (!fs::exists(index))
    throw std::runtime_error("'" + dir +
                             "' holds neither model.safetensors nor model.safetensors.index.json: not a Hugging Face "
                             "safetensors checkpoint (pytorch_model.bin is not read; save with safe_serialization=True)");
  w.source = index.string();
  std::ifstream in(index);
  if (!in) throw std::runtime_error("cannot open '" + w.source + "': unreadable");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + w.source + "' is not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw std::runtime_error("'" + w.source + "' has no \"weight_map\" object (tensor name -> file)");
  std::map<std::string, std::map<std::string, HfTensor>> files;
  for (const auto& [name, f] : j["weight_map"].items()) {
    if (!f.is_string())
      throw std::runtime_error("'" + w.source + "': weight_map entry '" + name + "' is not a file name");
    const std::string file = f.get<std::string>(), path = (fs::path(dir) / file).string();
    auto it = files.find(file);
    if (it == files.end()) {
      if (!fs::exists(path))
        throw std::runtime_error("'" + w.source + "' maps '" + name + "' to '" + path +
                                 "', which does not exist (an incomplete download or copy?)");
      it = files.emplace(file, read_safetensors_header(path)).first;
    }
    const auto t = it->second.find(name);
    if (t == it->second.end())
      throw std::runtime_error("'" + w.source + "' maps '" + name + "' to '" + path +
                               "', which holds no tensor of that name");
    w.tensors.emplace(name, t->second);
  }
  return w;
}

// The tensors of an HF LlamaForCausalLM of config c (resolved), with full shapes.
std::vector<std::pair<std::string, Shape>> hf_llama_tensors(const ModelConfig& c) {
  const int64_t d = c.hidden_size, hd = c.head_dim(), q = c.num_attention_heads * hd, kv = c.groups() * hd,
                f = c.ffn(), V = c.vocab_size;
  std::vector<std::pair<std::string, Shape>> t = {{"model.embed_tokens.weight", {V, d}}};
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {d}});
    t.push_back({p + "self_attn.q_proj.weight", {q, d}});
    t.push_back({p + "self_attn.k_proj.weight", {kv, d}});
    t.push_back({p + "self_attn.v_proj.weight", {kv, d}});
    t.push_back({p + "self_attn.o_proj.weight", {d, q}});
    t.push_back({p + "post_attention_layernorm.weight", {d}});
    t.push_back({p + "mlp.gate_proj.weight", {f, d}});
    t.push_back({p + "mlp.up_proj.weight", {f, d}});
    t.push_back({p + "mlp.down_proj.weight", {d, f}});
  }
  t.push_back({"model.norm.weight", {d}});
  if (!c.tie_embeddings) t.push_back({"lm_head.weight", {V, d}});
  return t;
}

// config.json against the configured model: everything that shapes the
// parameters or changes what they mean.
void check_hf_config(const std::string& dir, const ModelConfig& expected) {
  const ModelConfig h = read_hf_config(dir).resolved(), e = expected.resolved();
  std::string diffs;
  auto cmp = [&](const char* key, const char* flag, const nlohmann::json& hv, const nlohmann::json& ev) {
    if (hv == ev) return;
    diffs += std::string(diffs.empty() ? "" : "; ") + key + " is " + hv.dump() + " but the model is configured with " +
             ev.dump() + " (" + flag + ")";
  };
  cmp("num_hidden_layers", "--num-layers", h.num_layers, e.num_layers);
  cmp("hidden_size", "--hidden-size", h.hidden_size, e.hidden_size);
  cmp("intermediate_size", "--ffn-hidden-size", h.ffn(), e.ffn());
  cmp("num_attention_heads", "--num-attention-heads", h.num_attention_heads, e.num_attention_heads);
  cmp("num_key_value_heads", "--num-query-groups", h.groups(), e.groups());
  cmp("vocab_size", "--vocab-size / the tokenizer", h.vocab_size, e.vocab_size);
  cmp("tie_word_embeddings", "--tie-embeddings", h.tie_embeddings, e.tie_embeddings);
  cmp("rope_theta", "--rotary-base", h.rope_theta, e.rope_theta);
  cmp("rms_norm_eps", "--norm-epsilon", h.norm_eps, e.norm_eps);
  if (!diffs.empty())
    throw std::runtime_error("'" + (fs::path(dir) / "config.json").string() +
                             "' does not describe the configured model: " + diffs +
                             ". Configure the model like the Hugging Face one");
}

void check_hf_tensor(const HfTensor& t, const std::string& name, const Shape& full_shape, const char* what) {
  if (t.shape != full_shape)
    throw std::runtime_error("'" + t.file + "': tensor '" + name + "' has shape " + shape_str(t.shape) + ", but " +
                             what + " " + shape_str(full_shape));
  if (!readable_dtype(t.dtype))
    throw std::runtime_error("'" + t.file + "': tensor '" + name + "' has dtype " + t.dtype +
                             ", which is not supported (F32, BF16, F16 or F64 only)");
}

std::runtime_error missing_tensor(const HfWeights& w, const std::string& name) {
  if (name == "lm_head.weight")
    return std::runtime_error("'" + w.source +
                              "' has no tensor 'lm_head.weight', but the model has an untied output projection "
                              "(tie_word_embeddings false in config.json, no --tie-embeddings): a tied checkpoint needs "
                              "tie_word_embeddings true in config.json and --tie-embeddings");
  return std::runtime_error("'" + w.source + "' has no tensor '" + name +
                            "', which a LlamaForCausalLM of this config has (an incomplete checkpoint?)");
}

// A run of elements: `n` from element `src` of the full tensor (row-major) to element `dst` of flat.
struct Segment {
  int64_t src = 0, dst = 0, n = 0;
};

// The box a parameter covers as contiguous runs of the full tensor, in increasing order.
std::vector<Segment> box_segments(const ParameterInfo& p) {
  const Shape& full = p.full_shape;
  const size_t nd = full.size();
  if (p.shape.size() != nd || p.full_offset.size() != nd)
    throw std::logic_error("parameter '" + p.name + "': shape, full shape and offset differ in rank");
  for (size_t d = 0; d < nd; ++d)
    if (p.full_offset[d] < 0 || p.full_offset[d] + p.shape[d] > full[d])
      throw std::logic_error("parameter '" + p.name + "': its box lies outside the full tensor");
  if (p.numel == 0) return {};
  std::vector<int64_t> stride(nd, 1);
  for (size_t d = nd; d-- > 1;) stride[d - 1] = stride[d] * full[d];
  int last = -1;  // the last dimension the box does not span whole
  for (size_t d = 0; d < nd; ++d)
    if (p.shape[d] != full[d]) last = static_cast<int>(d);
  const int64_t run = last < 0 ? shape_numel(full) : p.shape[last] * stride[last];
  const int64_t base = last < 0 ? 0 : p.full_offset[last] * stride[last];
  int64_t runs = 1;
  for (int d = 0; d < last; ++d) runs *= p.shape[d];
  std::vector<Segment> segs;
  segs.reserve(static_cast<size_t>(runs));
  std::vector<int64_t> idx(static_cast<size_t>(std::max(last, 0)), 0);
  for (int64_t r = 0; r < runs; ++r) {
    int64_t src = base;
    for (int d = 0; d < last; ++d) src += (p.full_offset[d] + idx[d]) * stride[d];
    segs.push_back({src, p.offset + r * run, run});
    for (int d = last - 1; d >= 0; --d) {  // next index of the leading dimensions
      if (++idx[d] < p.shape[d]) break;
      idx[d] = 0;
    }
  }
  return segs;
}

class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
  }
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  ~ReadOnlyFile() { ::close(fd_); }
  void read(void* dst, size_t n, uint64_t offset, const std::string& tensor) const {
    char* out = static_cast<char*>(dst);
    size_t done = 0;
    while (done < n) {
      const ssize_t r = ::pread(fd_, out + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0)
        throw std::runtime_error("'" + path_ + "': reading tensor '" + tensor + "' failed: " + std::strerror(errno));
      if (r == 0)
        throw std::runtime_error("'" + path_ + "': tensor '" + tensor +
                                 "' ends past the end of the file (truncated while reading?)");
      done += static_cast<size_t>(r);
    }
  }

 private:
  std::string path_;
  int fd_;
};

// Reads the segments of tensor t into flat, converting its dtype: runs closer
// than kGapBytes are read together, at most kSpanBytes at a time.
class BoxReader {
 public:
  void read(const HfTensor& t, const std::string& name, const std::vector<Segment>& segments, Tensor& flat) {
    constexpr int64_t kSpanBytes = 16 << 20, kGapBytes = 4096;
    const DType dtype = dtype_from_name(t.dtype);
    const int64_t esize = static_cast<int64_t>(dtype_size(dtype)), max_elems = kSpanBytes / esize;
    std::vector<Segment> pieces;  // no piece longer than one span
    for (const Segment& s : segments)
      for (int64_t i = 0; i < s.n; i += max_elems) pieces.push_back({s.src + i, s.dst + i, std::min(max_elems, s.n - i)});
    auto it = files_.find(t.file);
    if (it == files_.end()) it = files_.emplace(t.file, std::make_unique<ReadOnlyFile>(t.file)).first;
    const ReadOnlyFile& file = *it->second;
    for (size_t a = 0; a < pieces.size();) {
      const int64_t start = pieces[a].src;
      int64_t stop = start + pieces[a].n;
      size_t b = a + 1;
      while (b < pieces.size() && (pieces[b].src - stop) * esize <= kGapBytes &&
             (pieces[b].src + pieces[b].n - start) <= max_elems) {
        stop = pieces[b].src + pieces[b].n;
        ++b;
      }
      if (!buf_.defined() || buf_.dtype() != dtype || buf_.numel() < stop - start)
        buf_ = Tensor::empty({std::max<int64_t>(stop - start, std::min<int64_t>(max_elems, 1 << 16))}, dtype,
                             MemoryCategory::Workspace);
      file.read(buf_.raw(), static_cast<size_t>((stop - start) * esize), t.begin + static_cast<uint64_t>(start * esize),
                name);
      for (size_t i = a; i < b; ++i) {
        Tensor dst = flat.flat_view(pieces[i].dst, {pieces[i].n});
        dst.convert_from(buf_.flat_view(pieces[i].src - start, {pieces[i].n}));
      }
      a = b;
    }
  }

 private:
  std::map<std::string, std::unique_ptr<ReadOnlyFile>> files_;
  Tensor buf_;
};

}  // namespace

void load_hf_parameters(const std::string& dir, const ModelConfig& expected, const ParameterStore& params,
                        Tensor& flat, std::vector<std::string>* warnings) {
  if (!flat.defined() || !flat.device().is_cpu() || flat.numel() != params.padded_numel() ||
      flat.dtype() == DType::I32)
    throw std::invalid_argument("load_hf_parameters: " + (flat.defined() ? flat.str() : std::string("undefined")) +
                                " is not a floating host tensor laid out like the parameters (" +
                                std::to_string(params.padded_numel()) + " elements)");
  check_hf_config(dir, expected);
  const ModelConfig cfg = expected.resolved();
  const HfWeights w = open_hf_weights(dir);
  // Every tensor of the whole model is checked on every rank, so that all
  // ranks of a layout fail alike whichever part is wrong.
  std::set<std::string> known;
  for (const auto& [name, shape] : hf_llama_tensors(cfg)) {
    known.insert(name);
    const auto it = w.tensors.find(name);
    if (it == w.tensors.end()) throw missing_tensor(w, name);
    check_hf_tensor(it->second, name, shape, "config.json implies");
  }
  if (cfg.tie_embeddings) known.insert("lm_head.weight");  // transformers ties it to the embedding too
  for (const auto& [name, t] : w.tensors) {
    static const std::string kInvFreq = "rotary_emb.inv_freq";  // a buffer older transformers saved
    if (known.count(name) ||
        (name.size() >= kInvFreq.size() && name.compare(name.size() - kInvFreq.size(), kInvFreq.size(), kInvFreq) == 0))
      continue;
    const std::string msg = "'" + t.file + "' holds tensor '" + name + "' " + t.dtype + shape_str(t.shape) +
                            ", which a LlamaForCausalLM of this config does not have: ignored";
    if (warnings) warnings->push_back(msg);
    else std::fprintf(stderr, "warning: %s\n", msg.c_str());
  }
  BoxReader reader;
  for (const ParameterInfo& p : params.infos()) {
    const auto it = w.tensors.find(p.name);
    if (it == w.tensors.end()) throw missing_tensor(w, p.name);
    check_hf_tensor(it->second, p.name, p.full_shape, "the model's parameter has the full shape");
    reader.read(it->second, p.name, box_segments(p), flat);
  }
}

void load_hf_weights(const std::string& dir, LlamaModel& model) {
  ParameterStore& ps = model.params();
  load_hf_parameters(dir, model.config(), ps, ps.values());
}

InferenceModel load_for_inference(const std::string& dir) {
  InferenceModel m;
  if (fs::exists(fs::path(dir) / "config.json") && (fs::exists(fs::path(dir) / "model.safetensors") ||
                                                     fs::exists(fs::path(dir) / "model.safetensors.index.json"))) {
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
