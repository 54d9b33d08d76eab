#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "checkpoint/safetensors.h"

namespace fs = std::filesystem;

namespace llm {

void to_json(nlohmann::json& j, const TrainingState& s) {
  j = {{"iteration", s.iteration},
       {"consumed_samples", s.consumed_samples},
       {"skipped_iterations", s.skipped_iterations},
       {"sampler", s.sampler},
       {"scheduler", s.scheduler},
       {"extra", s.extra}};
}

void from_json(const nlohmann::json& j, TrainingState& s) {
  s.iteration = j.at("iteration");
  s.consumed_samples = j.at("consumed_samples");
  s.skipped_iterations = j.value("skipped_iterations", int64_t{0});
  s.sampler = j.value("sampler", nlohmann::json());
  s.scheduler = j.value("scheduler", nlohmann::json());
  s.extra = j.value("extra", nlohmann::json());
}

static std::string iteration_dir_name(int64_t it) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "iter_%07lld", static_cast<long long>(it));
  return buf;
}

static std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

static std::string shard_name(int rank) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "shard_r%05d.safetensors", rank);
  return buf;
}

static fs::path tmp_dir_of(const std::string& root, int64_t iteration) {
  return fs::path(root) / (iteration_dir_name(iteration) + ".tmp");
}

void prepare_checkpoint_dir(const std::string& root, int64_t iteration) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw std::runtime_error("--save " + root + ": cannot create the directory (" + ec.message() + ")");
  const fs::path tmp_dir = tmp_dir_of(root, iteration);
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
}

// A parameter's full shape and its part's offset in it (defaults for stores
// that never set them: the whole tensor).
static Shape full_shape_of(const ParameterInfo& p) {
  return p.full_shape.size() == p.shape.size() ? p.full_shape : p.shape;
}
static std::vector<int64_t> full_offset_of(const ParameterInfo& p) {
  return p.full_offset.size() == p.shape.size() ? p.full_offset : std::vector<int64_t>(p.shape.size(), 0);
}

void write_checkpoint_shard(const std::string& root, int64_t iteration, int shard_rank, const ParameterStore& ps,
                            const AdamW* optimizer, const std::vector<std::string>& skip, const Tensor* values) {
  const int64_t n = ps.padded_numel();
  if (optimizer && (optimizer->exp_avg().numel() != n || optimizer->exp_avg_sq().numel() != n))
    throw std::logic_error("write_checkpoint_shard: the optimizer state is not laid out like the parameters");
  if (values && values->numel() != n)
    throw std::logic_error("write_checkpoint_shard: the values are not laid out like the parameters");
  const fs::path tmp_dir = tmp_dir_of(root, iteration);
  const std::string file = shard_name(shard_rank);
  nlohmann::json tensors = nlohmann::json::array();
  SafetensorsWriter shard;
  auto add = [&](const std::string& kind, const std::string& key_prefix, const Tensor& flat) {
    for (const auto& p : ps.infos()) {
      if (std::find(skip.begin(), skip.end(), p.name) != skip.end()) continue;
      const std::string key = key_prefix + p.name;
      shard.add(key, flat.flat_view(p.offset, p.shape));
      tensors.push_back(
          {{"name", p.name},
           {"kind", kind},
           {"shape", full_shape_of(p)},
           {"dtype", dtype_name(flat.dtype())},
           {"slices", {{{"file", file}, {"key", key}, {"offset", full_offset_of(p)}, {"shape", p.shape}}}}});
    }
  };
  add("param", "", values ? *values : ps.values());
  if (optimizer) {
    add("exp_avg", "optimizer.exp_avg.", optimizer->exp_avg());
    add("exp_avg_sq", "optimizer.exp_avg_sq.", optimizer->exp_avg_sq());
  }
  const fs::path shard_path = tmp_dir / file;
  const uint64_t digest = shard.write(shard_path.string());
  // This writer's part of the manifest; the committing rank merges the parts.
  const nlohmann::json part = {{"tensors", tensors},
                               {"files", {{file, {{"bytes", fs::file_size(shard_path)}, {"xxh64", digest}}}}}};
  write_file_atomic((tmp_dir / (file + ".part.json")).string(), part.dump());
}

void write_checkpoint_shard(const std::string& root, int64_t iteration, int shard_rank, const LlamaModel& model,
                            const AdamW* optimizer, const std::vector<std::string>& skip) {
  write_checkpoint_shard(root, iteration, shard_rank, model.params(), optimizer, skip);
}

// A box [offset, offset + shape) of an n-dimensional tensor.
struct Box {
  std::vector<int64_t> offset;
  Shape shape;
  int64_t numel() const { return shape_numel(shape); }
  bool operator==(const Box&) const = default;
};

static std::string box_str(const Box& b) {
  std::string s = "[";
  for (size_t d = 0; d < b.shape.size(); ++d)
    s += (d ? ", " : "") + std::to_string(b.offset[d]) + ":" + std::to_string(b.offset[d] + b.shape[d]);
  return s + "]";
}

// The intersection of two boxes of the same rank; empty if any extent is 0.
static std::optional<Box> intersect(const Box& a, const Box& b) {
  Box r;
  for (size_t d = 0; d < a.shape.size(); ++d) {
    const int64_t lo = std::max(a.offset[d], b.offset[d]);
    const int64_t hi = std::min(a.offset[d] + a.shape[d], b.offset[d] + b.shape[d]);
    if (hi <= lo) return std::nullopt;
    r.offset.push_back(lo);
    r.shape.push_back(hi - lo);
  }
  return r;
}

// `parts` (each inside `target`) must cover every element of `target` exactly once.
static void check_cover(const std::string& name, const std::vector<Box>& parts, const Box& target,
                        const std::string& what) {
  int64_t covered = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    for (size_t j = 0; j < i; ++j)
      if (auto o = intersect(parts[i], parts[j]))
        throw std::runtime_error("the slices of '" + name + "' overlap at " + box_str(*o) + " (" + what + " " +
                                 box_str(target) + ")");
    covered += parts[i].numel();
  }
  if (covered != target.numel())
    throw std::runtime_error("the slices of '" + name + "' leave a gap: they cover " + std::to_string(covered) +
                             " of the " + std::to_string(target.numel()) + " elements of " + what + " " +
                             box_str(target));
}

// Reads a JSON array of integers, refusing floats and other types.
static std::vector<int64_t> json_ints(const nlohmann::json& j, const char* key) {
  const auto& v = j.at(key);
  if (!v.is_array()) throw std::runtime_error(std::string("'") + key + "' must be an array of integers");
  std::vector<int64_t> r;
  for (const auto& x : v) {
    if (!x.is_number_integer()) throw std::runtime_error(std::string("'") + key + "' must be an array of integers");
    r.push_back(x.get<int64_t>());
  }
  return r;
}

// A version-2 slice's box, checked to lie inside the full tensor.
static Box slice_box(const nlohmann::json& s, const Shape& full, const std::string& name) {
  Box b{json_ints(s, "offset"), json_ints(s, "shape")};
  bool ok = b.offset.size() == full.size() && b.shape.size() == full.size();
  for (size_t d = 0; ok && d < full.size(); ++d)
    ok = b.offset[d] >= 0 && b.shape[d] >= 0 && b.offset[d] <= full[d] - b.shape[d];
  if (!ok)
    throw std::runtime_error("slice at offset " + s.at("offset").dump() + " with shape " + s.at("shape").dump() +
                             " of '" + name + "' lies outside its full shape " + shape_str(full));
  return b;
}

// The iteration of a directory name iter_NNNNNNN (tmp: with ".tmp"), or −1.
static int64_t iteration_of_dir_name(const std::string& name, bool tmp) {
  const std::string suffix = tmp ? ".tmp" : "";
  if (name.size() != 12 + suffix.size() || name.rfind("iter_", 0) != 0 || !name.ends_with(suffix)) return -1;
  int64_t it = 0;
  for (size_t i = 5; i < 12; ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    it = it * 10 + (name[i] - '0');
  }
  return it;
}

std::vector<std::string> remove_old_checkpoints(const std::string& root, int64_t keep_last) {
  std::vector<std::string> removed;
  std::error_code ec;
  std::string latest;
  if (fs::exists(fs::path(root) / "latest")) {
    latest = read_text((fs::path(root) / "latest").string());
    while (!latest.empty() && std::isspace(static_cast<unsigned char>(latest.back()))) latest.pop_back();
  }
  std::vector<std::pair<int64_t, fs::path>> done, unfinished;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (const int64_t it = iteration_of_dir_name(name, false); it >= 0 && fs::exists(e.path() / "manifest.json"))
      done.emplace_back(it, e.path());
    else if (const int64_t t = iteration_of_dir_name(name, true); t >= 0)
      unfinished.emplace_back(t, e.path());
  }
  std::sort(done.begin(), done.end());
  const int64_t newest = done.empty() ? -1 : done.back().first;
  auto remove = [&](const fs::path& d) {
    fs::remove_all(d, ec);
    if (!ec) removed.push_back(d.string());
  };
  if (keep_last > 0)
    for (size_t i = 0; i + static_cast<size_t>(keep_last) < done.size(); ++i)
      if (done[i].second.filename().string() != latest) remove(done[i].second);
  for (const auto& [it, d] : unfinished)
    if (it < newest) remove(d);
  return removed;
}

std::string commit_checkpoint(const std::string& root, const CheckpointContents& c) {
  const std::string name = iteration_dir_name(c.state.iteration);
  const fs::path final_dir = fs::path(root) / name, tmp_dir = tmp_dir_of(root, c.state.iteration);
  nlohmann::json tensors = nlohmann::json::array(), files = nlohmann::json::object();
  std::vector<fs::path> parts;
  for (const auto& e : fs::directory_iterator(tmp_dir))
    if (e.path().filename().string().ends_with(".part.json")) parts.push_back(e.path());
  std::sort(parts.begin(), parts.end());
  if (parts.empty()) throw std::runtime_error("checkpoint " + tmp_dir.string() + ": no shard was written");
  // Tensor-parallel writers each hold a part of a tensor: one entry per
  // (name, kind), listing every writer's slices.
  std::map<std::pair<std::string, std::string>, size_t> entry_of;
  std::vector<std::string> first_part;  // the part that introduced each entry
  for (const auto& part : parts) {
    const nlohmann::json j = nlohmann::json::parse(read_text(part.string()));
    for (const auto& t : j.at("tensors")) {
      const std::string tname = t.at("name"), kind = t.at("kind");
      auto [it, fresh] = entry_of.try_emplace({tname, kind}, tensors.size());
      if (fresh) {
        tensors.push_back(t);
        first_part.push_back(part.filename().string());
        continue;
      }
      auto& e = tensors[it->second];
      if (e.at("shape") != t.at("shape") || e.at("dtype") != t.at("dtype"))
        throw std::runtime_error("checkpoint " + tmp_dir.string() + ": the writers disagree on " + kind + " '" + tname +
                                 "': " + first_part[it->second] + " has full shape " + e.at("shape").dump() + " " +
                                 e.at("dtype").get<std::string>() + ", " + part.filename().string() + " has " +
                                 t.at("shape").dump() + " " + t.at("dtype").get<std::string>());
      for (const auto& sl : t.at("slices")) e["slices"].push_back(sl);
    }
    for (const auto& [f, info] : j.at("files").items()) files[f] = info;
  }
  // Every box of every tensor saved exactly once (a replicated tensor written
  // by two tensor-parallel ranks, or a missing part, is caught here rather
  // than at load time).
  for (const auto& t : tensors) {
    const std::string tname = t.at("name");
    const Box full{std::vector<int64_t>(t.at("shape").size(), 0), t.at("shape").get<Shape>()};
    std::vector<Box> boxes;
    try {
      for (const auto& sl : t.at("slices")) {
        Box b = slice_box(sl, full.shape, tname);  // written by this build: always boxes
        if (b.numel() > 0) boxes.push_back(std::move(b));
      }
      check_cover(tname, boxes, full, "the full tensor");
    } catch (const std::runtime_error& e) {
      throw std::runtime_error("checkpoint " + tmp_dir.string() + ": " + t.at("kind").get<std::string>() + " " +
                               e.what());
    }
  }
  for (const auto& part : parts) fs::remove(part);
  if (!c.tokenizer_model.empty()) {
    fs::copy_file(c.tokenizer_model, tmp_dir / "tokenizer.model", fs::copy_options::overwrite_existing);
    fsync_path((tmp_dir / "tokenizer.model").string());
    files["tokenizer.model"] = {{"bytes", fs::file_size(tmp_dir / "tokenizer.model")},
                                {"xxh64", xxhash64_file((tmp_dir / "tokenizer.model").string())}};
  }
  if (!c.model && !c.config) throw std::logic_error("commit_checkpoint: neither a model nor a model config");
  const ModelConfig config = c.model ? c.model->config() : *c.config;
  nlohmann::json optimizer = nullptr;
  if (c.optimizer)
    optimizer = {{"type", "adamw"},
                 {"steps", c.optimizer->steps_taken()},
                 {"beta1", c.optimizer->config().beta1},
                 {"beta2", c.optimizer->config().beta2},
                 {"eps", c.optimizer->config().eps},
                 {"weight_decay", c.optimizer->config().weight_decay}};
  nlohmann::json manifest = {{"format", "llm-checkpoint"},
                             {"format_version", kCheckpointFormatVersion},
                             {"model", config},
                             {"layout", c.layout},
                             {"tensors", tensors},
                             {"files", files},
                             {"optimizer", optimizer},
                             {"training_state", c.state},
                             {"args", c.args}};
  // The manifest is written last: a directory without one is incomplete.
  write_file_atomic((tmp_dir / "manifest.json").string(), manifest.dump(1));
  fsync_path(tmp_dir.string());
  // Saving an iteration that already exists (a run resumed from an older
  // checkpoint): move the old copy aside first, so `latest` never names a
  // directory that is missing, whatever moment a crash hits.
  const fs::path old_dir = fs::path(root) / (name + ".old");
  fs::remove_all(old_dir);
  if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
  fs::rename(tmp_dir, final_dir);
  fsync_path(root);
  write_file_atomic((fs::path(root) / "latest").string(), name + "\n");
  fsync_path(root);
  fs::remove_all(old_dir);
  return final_dir.string();
}

std::string save_checkpoint(const std::string& root, const CheckpointContents& c) {
  prepare_checkpoint_dir(root, c.state.iteration);
  write_checkpoint_shard(root, c.state.iteration, 0, *c.model, c.optimizer);
  return commit_checkpoint(root, c);
}

// Checks each file's size and xxHash64 against the manifest the first time
// its data is wanted, then remembers it: a rank hashes only what it reads,
// and each file once (copies of a CheckpointOnDisk share one verifier).
class CheckpointFileVerifier {
 public:
  std::string verify(const CheckpointOnDisk& ck, const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string path = (fs::path(ck.dir) / name).string();
    if (verified_.count(name)) return path;
    const auto it = ck.files.find(name);
    if (it == ck.files.end())
      throw std::runtime_error("checkpoint " + ck.dir + ": file '" + name + "' is not in the manifest's files table");
    check_size(ck.dir, name, it->second.bytes);
    const uint64_t digest = xxhash64_file(path);
    if (digest != it->second.xxh64) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " (xxh64 %016llx, the manifest says %016llx)",
                    static_cast<unsigned long long>(digest), static_cast<unsigned long long>(it->second.xxh64));
      throw std::runtime_error("checkpoint file '" + path + "' fails its xxHash64 checksum: corrupted" + buf);
    }
    verified_.insert(name);
    return path;
  }

  // The file exists and has the size the manifest records.
  static void check_size(const std::string& dir, const std::string& name, uint64_t want) {
    const fs::path f = fs::path(dir) / name;
    std::error_code ec;
    const bool regular = fs::is_regular_file(f, ec);
    if (!regular) {
      if (!fs::exists(f, ec))
        throw std::runtime_error("checkpoint file '" + f.string() + "' is missing from the checkpoint directory " + dir);
      throw std::runtime_error("checkpoint file '" + f.string() + "' is not a regular file");
    }
    const uint64_t have = fs::file_size(f, ec);
    if (ec) throw std::runtime_error("checkpoint file '" + f.string() + "': cannot read its size (" + ec.message() + ")");
    if (have != want)
      throw std::runtime_error("checkpoint file '" + f.string() + "' has " + std::to_string(have) +
                               " bytes, the manifest says " + std::to_string(want) + " (truncated or replaced)");
  }

 private:
  std::mutex mu_;
  std::set<std::string> verified_;
};

std::string CheckpointOnDisk::verified_file(const std::string& name) const {
  if (verifier) return verifier->verify(*this, name);
  return CheckpointFileVerifier().verify(*this, name);  // a hand-built object: check every time
}

std::string CheckpointOnDisk::tokenizer_model() const {
  if (files.count("tokenizer.model")) return verified_file("tokenizer.model");
  const fs::path p = fs::path(dir) / "tokenizer.model";  // not listed (never written so): unchecked
  return fs::exists(p) ? p.string() : "";
}

CheckpointOnDisk open_checkpoint(const std::string& path) {
  fs::path dir = path;
  if (!fs::exists(dir)) throw std::runtime_error("--load " + path + ": no such directory");
  if (!fs::exists(dir / "manifest.json")) {
    if (!fs::exists(dir / "latest"))
      throw std::runtime_error("--load " + path + ": neither a checkpoint (no manifest.json) nor a --save directory (no 'latest' file)");
    std::string name = read_text((dir / "latest").string());
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    if (!is_plain_checkpoint_file_name(name))
      throw std::runtime_error("--load " + path + ": 'latest' holds an invalid name '" + name +
                               "' (a directory name inside " + path + " was expected)");
    dir /= name;
    if (!fs::exists(dir / "manifest.json"))
      throw std::runtime_error("--load " + path + ": 'latest' points at " + dir.string() + ", which has no manifest.json");
  }
  CheckpointOnDisk ck;
  ck.dir = dir.string();
  const std::string mpath = (dir / "manifest.json").string();
  // Structure, types, names and boxes (parse_manifest); errors name mpath.
  ParsedManifest parsed = parse_manifest(read_text(mpath), mpath);
  ck.format_version = parsed.format_version;
  ck.tensors = std::move(parsed.tensors);
  ck.files = std::move(parsed.files);
  ck.manifest = std::move(parsed.document);
  try {
    ck.model = ck.manifest.at("model").get<ModelConfig>();
    ck.state = ck.manifest.at("training_state").get<TrainingState>();
  } catch (const nlohmann::json::exception& e) {  // parse_manifest checked the types these read
    throw std::runtime_error("'" + mpath + "' is not a valid manifest: " + e.what());
  }
  // Every file present with its recorded size: cheap (no reading), and every
  // rank refuses a damaged checkpoint up front. Checksums are left to the
  // first read of each file (CheckpointFileVerifier).
  try {
    for (const auto& [fname, info] : ck.files) CheckpointFileVerifier::check_size(ck.dir, fname, info.bytes);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("'" + mpath + "': " + e.what());
  }
  ck.verifier = std::make_shared<CheckpointFileVerifier>();
  return ck;
}

static Shape row_major_strides(const Shape& shape) {
  Shape st(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) st[d - 1] = st[d] * shape[d];
  return st;
}

// A part of a slice's data that is a box of the full tensor: its elements sit
// row-major from element `data_offset` of the slice's data. A version-2 slice
// is one piece; a version-1 flat range [begin, end) is split into boxes that
// are contiguous in the full tensor.
struct Piece {
  Box box;
  int64_t data_offset = 0;
};

static void split_flat_range(const Shape& full, const Shape& strides, size_t d, std::vector<int64_t>& prefix,
                             int64_t lo, int64_t hi, int64_t base, int64_t begin, std::vector<Piece>& out) {
  // [lo, hi): flat offsets within the sub-tensor of dims d.. at `prefix`, whose first element is `base`.
  auto emit = [&](int64_t i0, int64_t i1) {  // indices [i0, i1) along d, the dims after it whole
    Piece p;
    p.box.offset = prefix;
    p.box.offset.push_back(i0);
    p.box.shape.assign(prefix.size(), 1);
    p.box.shape.push_back(i1 - i0);
    for (size_t e = d + 1; e < full.size(); ++e) {
      p.box.offset.push_back(0);
      p.box.shape.push_back(full[e]);
    }
    p.data_offset = base + i0 * strides[d] - begin;
    out.push_back(std::move(p));
  };
  const int64_t s = strides[d];
  if (lo % s == 0 && hi % s == 0) return emit(lo / s, hi / s);
  const int64_t i0 = lo / s, i1 = (hi - 1) / s;
  auto recurse = [&](int64_t i, int64_t l, int64_t h) {
    prefix.push_back(i);
    split_flat_range(full, strides, d + 1, prefix, l, h, base + i * s, begin, out);
    prefix.pop_back();
  };
  if (i0 == i1) return recurse(i0, lo - i0 * s, hi - i0 * s);
  int64_t a = i0, b = i1 + 1;
  if (lo % s != 0) {  // the partial first row
    recurse(i0, lo % s, s);
    a = i0 + 1;
  }
  if (hi % s != 0) {  // the partial last row
    recurse(i1, 0, hi % s);
    b = i1;
  }
  if (a < b) emit(a, b);
}

// Copies the elements of `inter` from `src` (laid out row-major as src_box)
// to `dst` (laid out as dst_box); inter lies inside both.
static void copy_box(const char* src, const Box& src_box, char* dst, const Box& dst_box, const Box& inter,
                     size_t elem) {
  const size_t n = inter.shape.size();
  if (n == 0) {
    std::memcpy(dst, src, elem);
    return;
  }
  const Shape ss = row_major_strides(src_box.shape), ds = row_major_strides(dst_box.shape);
  const size_t run = static_cast<size_t>(inter.shape[n - 1]) * elem;
  std::vector<int64_t> idx(n, 0);  // position within inter; the last dimension is copied as one run
  while (true) {
    int64_t so = 0, dso = 0;
    for (size_t d = 0; d < n; ++d) {
      so += (inter.offset[d] + idx[d] - src_box.offset[d]) * ss[d];
      dso += (inter.offset[d] + idx[d] - dst_box.offset[d]) * ds[d];
    }
    std::memcpy(dst + dso * elem, src + so * elem, run);
    size_t d = n - 1;
    while (d-- > 0) {
      if (++idx[d] < inter.shape[d]) break;
      idx[d] = 0;
    }
    if (d == static_cast<size_t>(-1)) return;
  }
}

// Fills `flat` (a flat buffer laid out like the store's parameters) from the
// manifest entries of one kind: each parameter's part (the box [full_offset,
// full_offset + shape) of its full tensor) from the slices that intersect it.
// open_checkpoint checked the entries (every slice inside its full shape, from
// a listed file); here each entry's full shape must be the parameter's, the
// slices that meet a part must cover each of its elements exactly once, and
// each slice's tensor in its shard must have the slice's shape and dtype.
// Only the files of slices that meet a part are read, each checksummed first.
static void load_kind(const CheckpointOnDisk& ck, const ParameterStore& ps, const std::string& kind, Tensor& flat) {
  const std::string mpath = (fs::path(ck.dir) / "manifest.json").string();
  std::map<std::string, std::unique_ptr<SafetensorsReader>> readers;
  std::map<std::string, const ManifestTensor*> by_name;
  const size_t elem = dtype_size(flat.dtype());
  try {
    for (const auto& t : ck.tensors)
      if (t.kind == kind) by_name[t.name] = &t;
    for (const auto& p : ps.infos()) {
      auto it = by_name.find(p.name);
      if (it == by_name.end())
        throw std::runtime_error("has no " + kind + " for '" + p.name + "': it was saved from a different model");
      const ManifestTensor& t = *it->second;
      const Shape full = full_shape_of(p);
      if (t.shape != full)
        throw std::runtime_error("'" + p.name + "' has shape " + shape_str(t.shape) + ", the model expects " +
                                 shape_str(full) + (full == p.shape ? "" : " (the full tensor)"));
      const Box local{full_offset_of(p), p.shape};
      const Shape strides = row_major_strides(full);

      // Each slice's pieces that meet the local part, and what they cover of it.
      struct Hit {
        const ManifestSlice* slice;
        Shape data_shape;  // how the slice's data is stored
        std::vector<std::pair<Piece, Box>> pieces;  // piece, its intersection with `local`
      };
      std::vector<Hit> hits;
      std::vector<Box> covered;
      for (const auto& s : t.slices) {
        std::vector<Piece> pieces;
        Hit h{&s, {}, {}};
        if (s.flat) {  // format version 1: a flat range of the full tensor (inside it: parse_manifest)
          h.data_shape = {s.end - s.begin};
          if (s.begin < s.end) {
            if (full.empty()) {
              pieces.push_back({Box{}, 0});
            } else {
              std::vector<int64_t> prefix;
              split_flat_range(full, strides, 0, prefix, s.begin, s.end, 0, s.begin, pieces);
            }
          }
        } else {  // a box inside the full shape (parse_manifest)
          Box b{s.offset, s.shape};
          h.data_shape = b.shape;
          if (b.numel() > 0) pieces.push_back({std::move(b), 0});
        }
        for (auto& pc : pieces)
          if (auto in = intersect(pc.box, local)) {
            covered.push_back(*in);
            h.pieces.emplace_back(std::move(pc), std::move(*in));
          }
        if (!h.pieces.empty()) hits.push_back(std::move(h));
      }
      check_cover(p.name, covered, local, full == p.shape ? "the tensor" : "the part");

      // Read: straight into place when a slice is exactly the local part.
      Tensor dst = flat.flat_view(p.offset, p.shape);
      Tensor host = flat.device().is_cpu() ? dst : Tensor::empty(p.shape, flat.dtype(), MemoryCategory::Workspace);
      for (const auto& h : hits) {
        const ManifestSlice& s = *h.slice;
        auto& r = readers[s.file];
        if (!r) r = std::make_unique<SafetensorsReader>(ck.verified_file(s.file));  // checksum, once per file
        const SafetensorsEntry& e = r->entry(s.key);  // names the file when the key is missing
        if (s.flat ? shape_numel(e.shape) != s.end - s.begin : e.shape != s.shape)
          throw std::runtime_error("'" + r->path() + "': tensor '" + s.key + "' has shape " + shape_str(e.shape) +
                                   ", the manifest's slice of " + kind + " '" + p.name + "' says " +
                                   shape_str(h.data_shape));
        if (!t.dtype.empty() && t.dtype != dtype_name(e.dtype))
          throw std::runtime_error("'" + r->path() + "': tensor '" + s.key + "' is " + dtype_name(e.dtype) +
                                   ", the manifest says " + t.dtype);
        const auto& [piece, in] = h.pieces.front();
        if (h.pieces.size() == 1 && piece.box == local && piece.data_offset == 0 &&
            shape_numel(h.data_shape) == local.numel()) {
          r->read_into(s.key, host);
          continue;
        }
        Tensor tmp = Tensor::empty(h.data_shape, flat.dtype(), MemoryCategory::Workspace);
        r->read_into(s.key, tmp);
        for (const auto& [pc, inter] : h.pieces)
          copy_box(static_cast<const char*>(tmp.raw()) + pc.data_offset * static_cast<int64_t>(elem), pc.box,
                   static_cast<char*>(host.raw()), local, inter, elem);
      }
      if (!flat.device().is_cpu()) dst.copy_from(host);
    }
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("checkpoint '" + mpath + "': " + e.what());
  } catch (const std::invalid_argument& e) {  // shapes the tensor code refuses
    throw std::runtime_error("checkpoint '" + mpath + "': " + e.what());
  }
}

void load_parameters(const CheckpointOnDisk& ck, ParameterStore& params) {
  load_kind(ck, params, "param", params.values());
}

void load_parameters(const CheckpointOnDisk& ck, const ParameterStore& params, Tensor& flat) {
  if (flat.numel() != params.padded_numel())
    throw std::logic_error("load_parameters: " + flat.str() + " is not laid out like the parameters");
  load_kind(ck, params, "param", flat);
}

void load_model_weights(const CheckpointOnDisk& ck, LlamaModel& model) {
  const nlohmann::json saved = ck.model, mine = model.config();
  if (saved != mine)
    throw std::runtime_error("checkpoint '" + (fs::path(ck.dir) / "manifest.json").string() +
                             "' holds another model: " + saved.dump() + ", this model is " + mine.dump());
  load_parameters(ck, model.params());
}

void load_optimizer_state(const CheckpointOnDisk& ck, AdamW& opt) {
  if (ck.manifest.at("optimizer").is_null())
    throw std::runtime_error("checkpoint " + ck.dir + " holds no optimizer state (it cannot resume training)");
  // The optimizer's flat buffers are laid out like the parameters.
  const auto& steps = ck.manifest.at("optimizer").at("steps");
  if (!steps.is_number_integer() || steps.get<int64_t>() < 0 || steps.get<int64_t>() > ck.state.iteration)
    throw std::runtime_error("checkpoint " + ck.dir + ": optimizer step count " + steps.dump() +
                             " is not between 0 and the iteration " + std::to_string(ck.state.iteration));
  opt.set_steps_taken(steps.get<int64_t>());
  load_kind(ck, opt.params(), "exp_avg", opt.exp_avg());
  load_kind(ck, opt.params(), "exp_avg_sq", opt.exp_avg_sq());
}

}  // namespace llm
