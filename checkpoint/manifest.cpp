#include "checkpoint/manifest.h"

#include <stdexcept>

#include "checkpoint/json_checks.h"
#include "core/dtype.h"

namespace llm {

namespace jc = json_checks;

bool is_plain_checkpoint_file_name(const std::string& name) {
  if (name.empty() || name == "." || name.find("..") != std::string::npos) return false;
  for (const char c : name)
    if (c == '/' || c == '\\' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  return true;
}

namespace {

// Errors inside the document; parse_manifest prefixes the file name.
struct Invalid : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const nlohmann::json& member(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end()) throw Invalid(where + " has no '" + key + "'");
  return *it;
}

std::string string_member(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto& v = member(obj, key, where);
  if (!v.is_string()) throw Invalid(where + ": '" + key + "' is " + jc::brief(v) + ", not a string");
  return v.get<std::string>();
}

int64_t count_member(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto& v = member(obj, key, where);
  const auto i = jc::as_int64(v);
  if (!i || *i < 0) throw Invalid(where + ": '" + key + "' is " + jc::brief(v) + ", not a non-negative integer");
  return *i;
}

std::vector<int64_t> dims_member(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto& v = member(obj, key, where);
  const auto d = jc::as_dims(v);
  if (!d) throw Invalid(where + ": '" + key + "' is " + jc::brief(v) + ", not an array of non-negative integers");
  return *d;
}

void object_or_null(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it != obj.end() && !it->is_null() && !it->is_object())
    throw Invalid(where + ": '" + key + "' is " + jc::brief(*it) + ", not an object");
}

// "model": what from_json(ModelConfig) reads, with the types it assumes (a
// float where an integer belongs would convert with undefined behaviour).
// Keep in step with layers/model_config.cpp.
void check_model(const nlohmann::json& m) {
  if (!m.is_object()) throw Invalid("'model' is " + jc::brief(m) + ", not an object");
  for (const char* key : {"vocab_size", "hidden_size", "ffn_hidden_size", "num_layers", "num_attention_heads",
                          "num_query_groups", "seq_length"})
    count_member(m, key, "'model'");
  for (const char* key : {"rope_theta", "norm_eps", "init_std"}) {
    const auto it = m.find(key);
    if (it == m.end() && std::string(key) == "init_std") continue;  // optional
    if (it == m.end()) throw Invalid(std::string("'model' has no '") + key + "'");
    if (!it->is_number()) throw Invalid(std::string("'model': '") + key + "' is " + jc::brief(*it) + ", not a number");
  }
  if (const auto& tie = member(m, "tie_embeddings", "'model'"); !tie.is_boolean())
    throw Invalid("'model': 'tie_embeddings' is " + jc::brief(tie) + ", not true or false");
}

// "training_state": what from_json(TrainingState) reads.
void check_training_state(const nlohmann::json& s) {
  if (!s.is_object()) throw Invalid("'training_state' is " + jc::brief(s) + ", not an object");
  count_member(s, "iteration", "'training_state'");
  count_member(s, "consumed_samples", "'training_state'");
  if (s.contains("skipped_iterations")) count_member(s, "skipped_iterations", "'training_state'");
  for (const char* key : {"sampler", "scheduler", "extra"}) object_or_null(s, key, "'training_state'");
}

std::map<std::string, ManifestFile> parse_files(const nlohmann::json& doc) {
  const auto& files = member(doc, "files", "the manifest");
  if (!files.is_object()) throw Invalid("'files' is " + jc::brief(files) + ", not an object");
  std::map<std::string, ManifestFile> r;
  for (const auto& [name, info] : files.items()) {
    if (!is_plain_checkpoint_file_name(name))
      throw Invalid("'files' names '" + name +
                    "', which is not a plain file name inside the checkpoint directory (no '/', '\\', '..' or "
                    "empty names)");
    const std::string where = "'files' entry '" + name + "'";
    if (!info.is_object()) throw Invalid(where + " is " + jc::brief(info) + ", not {bytes, xxh64}");
    ManifestFile f;
    for (const char* key : {"bytes", "xxh64"}) {
      const auto& v = member(info, key, where);
      const auto u = jc::as_uint64(v);
      if (!u) throw Invalid(where + ": '" + key + "' is " + jc::brief(v) + ", not a non-negative integer");
      (std::string(key) == "bytes" ? f.bytes : f.xxh64) = *u;
    }
    r[name] = f;
  }
  return r;
}

ManifestSlice parse_slice(const nlohmann::json& s, const ManifestTensor& t, int64_t numel,
                          const std::map<std::string, ManifestFile>& files, const std::string& where) {
  if (!s.is_object()) throw Invalid(where + " is " + jc::brief(s) + ", not an object");
  ManifestSlice sl;
  sl.file = string_member(s, "file", where);
  if (!files.count(sl.file))
    throw Invalid(where + " names file '" + sl.file + "', which 'files' does not list");
  sl.key = string_member(s, "key", where);
  if (s.contains("begin") || s.contains("end")) {  // format version 1: a flat range of the full tensor
    sl.flat = true;
    sl.begin = count_member(s, "begin", where);
    sl.end = count_member(s, "end", where);
    if (sl.begin > sl.end || sl.end > numel)
      throw Invalid(where + " [" + std::to_string(sl.begin) + ", " + std::to_string(sl.end) + ") in '" + sl.file +
                    "' lies outside its " + std::to_string(numel) + " elements");
    return sl;
  }
  sl.offset = dims_member(s, "offset", where);
  sl.shape = dims_member(s, "shape", where);
  bool ok = sl.offset.size() == t.shape.size() && sl.shape.size() == t.shape.size();
  // All non-negative: offset + shape <= full without forming the sum.
  for (size_t d = 0; ok && d < t.shape.size(); ++d) ok = sl.shape[d] <= t.shape[d] && sl.offset[d] <= t.shape[d] - sl.shape[d];
  if (!ok)
    throw Invalid(where + " at offset " + jc::dims_str(sl.offset) + " with shape " + jc::dims_str(sl.shape) + " in '" +
                  sl.file + "' lies outside its full shape " + jc::dims_str(t.shape));
  return sl;
}

std::vector<ManifestTensor> parse_tensors(const nlohmann::json& doc, const std::map<std::string, ManifestFile>& files) {
  const auto& tensors = member(doc, "tensors", "the manifest");
  if (!tensors.is_array()) throw Invalid("'tensors' is " + jc::brief(tensors) + ", not an array");
  std::vector<ManifestTensor> r;
  std::map<std::pair<std::string, std::string>, size_t> seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& j = tensors[i];
    std::string where = "tensor entry " + std::to_string(i);
    if (!j.is_object()) throw Invalid(where + " is " + jc::brief(j) + ", not an object");
    ManifestTensor t;
    t.name = string_member(j, "name", where);
    t.kind = string_member(j, "kind", where);
    where = t.kind + " '" + t.name + "'";
    if (!seen.emplace(std::make_pair(t.name, t.kind), i).second) throw Invalid(where + " is listed twice");
    t.shape = dims_member(j, "shape", where);
    const auto numel = jc::checked_numel(t.shape);
    if (!numel) throw Invalid(where + ": shape " + jc::dims_str(t.shape) + " has too many elements");
    if (j.contains("dtype")) {
      t.dtype = string_member(j, "dtype", where);
      try {
        dtype_from_name(t.dtype);
      } catch (const std::runtime_error& e) {
        throw Invalid(where + ": " + e.what());
      }
    }
    const auto& slices = member(j, "slices", where);
    if (!slices.is_array()) throw Invalid(where + ": 'slices' is " + jc::brief(slices) + ", not an array");
    for (size_t k = 0; k < slices.size(); ++k)
      t.slices.push_back(parse_slice(slices[k], t, *numel, files, where + " slice " + std::to_string(k)));
    r.push_back(std::move(t));
  }
  return r;
}

}  // namespace

ParsedManifest parse_manifest(const std::string& json_text, const std::string& name) {
  ParsedManifest m;
  try {
    m.document = jc::parse(json_text);
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + name + "' is not a valid manifest: not JSON (" + e.what() + ")");
  }
  try {
    const auto& doc = m.document;
    if (!doc.is_object()) throw Invalid("not a JSON object");
    const auto format = doc.find("format");
    if (format == doc.end() || *format != "llm-checkpoint") throw Invalid("not an llm checkpoint manifest");
    const auto& version = member(doc, "format_version", "the manifest");
    const auto v = jc::as_int64(version);
    if (!v || *v < 1) throw Invalid("'format_version' is " + jc::brief(version) + ", not a positive integer");
    if (*v > kCheckpointFormatVersion)
      throw Invalid("format version " + std::to_string(*v) + " is newer than this build reads (" +
                    std::to_string(kCheckpointFormatVersion) + "): update the runtime");
    m.format_version = static_cast<int>(*v);
    check_model(member(doc, "model", "the manifest"));
    check_training_state(member(doc, "training_state", "the manifest"));
    if (!doc.contains("optimizer")) m.document["optimizer"] = nullptr;
    for (const char* key : {"optimizer", "layout", "args"}) object_or_null(doc, key, "the manifest");
    if (const auto& opt = member(doc, "optimizer", "the manifest"); opt.is_object())
      count_member(opt, "steps", "'optimizer'");
    m.files = parse_files(doc);
    m.tensors = parse_tensors(doc, m.files);
  } catch (const Invalid& e) {
    throw std::runtime_error("'" + name + "' is not a valid manifest: " + e.what());
  } catch (const nlohmann::json::exception& e) {  // not expected: every access above is checked
    throw std::runtime_error("'" + name + "' is not a valid manifest: " + e.what());
  }
  return m;
}

}  // namespace llm
