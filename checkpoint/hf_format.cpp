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
#include "checkpoint/json_checks.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/safetensors_header.h"
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
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j;
  try {
    j = json_checks::parse(text.str());
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + path + "' is not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw std::runtime_error("'" + path + "' is " + json_checks::brief(j) + ", not a JSON object");
  // A size: a positive JSON integer (a float, or an integer past int64, would
  // make nlohmann's conversion undefined; zero heads would divide by zero below).
  auto size_field = [&](const char* key, int64_t fallback, bool required) -> int64_t {
    const auto it = j.find(key);
    if (it == j.end()) {
      if (required) throw std::runtime_error(std::string("\"") + key + "\" is missing");
      return fallback;
    }
    const auto v = json_checks::as_int64(*it);
    if (!v || *v <= 0)
      throw std::runtime_error(std::string("\"") + key + "\" is " + json_checks::brief(*it) +
                               ", not a positive integer");
    return *v;
  };
  try {
    ModelConfig c;
    c.vocab_size = size_field("vocab_size", 0, true);
    c.hidden_size = size_field("hidden_size", 0, true);
    c.ffn_hidden_size = size_field("intermediate_size", 0, true);
    c.num_layers = size_field("num_hidden_layers", 0, true);
    c.num_attention_heads = size_field("num_attention_heads", 0, true);
    c.num_query_groups = size_field("num_key_value_heads", c.num_attention_heads, false);
    c.seq_length = size_field("max_position_embeddings", 2048, false);
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
    if (j.contains("head_dim") && size_field("head_dim", 0, true) != c.hidden_size / c.num_attention_heads)
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

// A tensor of an HF safetensors file, from its header. HF files may hold
// tensors of dtypes we never read (I64, U8, BOOL, F8_E4M3, ...), which must
// not make the whole file unreadable: the header is parsed with
// allow_unknown_dtypes, and only the tensors a model needs must be readable
// (check_hf_tensor). Partial reads need the absolute byte offsets.
struct HfTensor {
  std::string file;
  SafetensorsEntry entry;       // begin/end: within the data section
  uint64_t begin = 0, end = 0;  // absolute byte range in the file
};

bool readable_dtype(const SafetensorsEntry& e) {
  return e.known_dtype &&
         (e.dtype == DType::F32 || e.dtype == DType::F64 || e.dtype == DType::BF16 || e.dtype == DType::F16);
}

// The tensors of one safetensors file, checked by parse_safetensors_header
// (every byte range inside the file, no overlaps, byte counts matching dtype
// × shape wherever the dtype's size is known); errors name the file and the tensor.
std::map<std::string, HfTensor> read_safetensors_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open '" + path + "': file missing or unreadable");
  const std::streamoff end = in.tellg();
  if (end < 0) throw std::runtime_error("cannot read '" + path + "': its size is unknown");
  const uint64_t file_size = static_cast<uint64_t>(end);
  uint8_t len_le[8] = {};
  in.seekg(0);
  if (file_size >= 8) in.read(reinterpret_cast<char*>(len_le), 8);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  const uint64_t hlen = safetensors_header_length(len_le, file_size, path);  // at most kMaxSafetensorsHeaderBytes
  std::vector<uint8_t> head(static_cast<size_t>(8 + hlen));
  std::memcpy(head.data(), len_le, 8);
  in.read(reinterpret_cast<char*>(head.data() + 8), static_cast<std::streamsize>(hlen));
  if (!in) throw std::runtime_error("'" + path + "': short read of the safetensors header (file changed while read?)");
  SafetensorsParseOptions options;
  options.allow_unknown_dtypes = true;
  SafetensorsHeader h = parse_safetensors_header(head.data(), head.size(), file_size, path, options);
  std::map<std::string, HfTensor> out;
  for (auto& [name, e] : h.entries) {
    HfTensor t;
    t.file = path;
    t.begin = h.data_start + e.begin;  // <= file_size: the parser checked e.end against the data section
    t.end = h.data_start + e.end;
    t.entry = std::move(e);
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
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j;
  try {
    j = json_checks::parse(text.str());
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
  if (t.entry.shape != full_shape)
    throw std::runtime_error("'" + t.file + "': tensor '" + name + "' has shape " + shape_str(t.entry.shape) +
                             ", but " + what + " " + shape_str(full_shape));
  if (!readable_dtype(t.entry))
    throw std::runtime_error("'" + t.file + "': tensor '" + name + "' has dtype " + t.entry.dtype_str +
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
    if (!readable_dtype(t.entry)) throw std::logic_error("BoxReader: '" + name + "' was not checked");
    const DType dtype = t.entry.dtype;
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
    const std::string msg = "'" + t.file + "' holds tensor '" + name + "' " + t.entry.dtype_str + shape_str(t.entry.shape) +
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
