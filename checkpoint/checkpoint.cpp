#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
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

void write_checkpoint_shard(const std::string& root, int64_t iteration, int shard_rank, const LlamaModel& model,
                            const AdamW* optimizer, const std::vector<std::string>& skip) {
  const fs::path tmp_dir = tmp_dir_of(root, iteration);
  const std::string file = shard_name(shard_rank);
  nlohmann::json tensors = nlohmann::json::array();
  SafetensorsWriter shard;
  const ParameterStore& ps = model.params();
  auto add = [&](const std::string& kind, const std::string& key_prefix, const Tensor& flat) {
    for (const auto& p : ps.infos()) {
      if (std::find(skip.begin(), skip.end(), p.name) != skip.end()) continue;
      const std::string key = key_prefix + p.name;
      shard.add(key, flat.flat_view(p.offset, p.shape));
      tensors.push_back({{"name", p.name},
                         {"kind", kind},
                         {"shape", p.shape},
                         {"dtype", dtype_name(flat.dtype())},
                         {"slices", {{{"file", file}, {"key", key}, {"begin", 0}, {"end", p.numel}}}}});
    }
  };
  add("param", "", ps.values());
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

std::string commit_checkpoint(const std::string& root, const CheckpointContents& c) {
  const std::string name = iteration_dir_name(c.state.iteration);
  const fs::path final_dir = fs::path(root) / name, tmp_dir = tmp_dir_of(root, c.state.iteration);
  nlohmann::json tensors = nlohmann::json::array(), files = nlohmann::json::object();
  std::vector<fs::path> parts;
  for (const auto& e : fs::directory_iterator(tmp_dir))
    if (e.path().filename().string().ends_with(".part.json")) parts.push_back(e.path());
  std::sort(parts.begin(), parts.end());
  if (parts.empty()) throw std::runtime_error("checkpoint " + tmp_dir.string() + ": no shard was written");
  for (const auto& part : parts) {
    const nlohmann::json j = nlohmann::json::parse(read_text(part.string()));
    for (const auto& t : j.at("tensors")) tensors.push_back(t);
    for (const auto& [f, info] : j.at("files").items()) files[f] = info;
    fs::remove(part);
  }
  if (!c.tokenizer_model.empty()) {
    fs::copy_file(c.tokenizer_model, tmp_dir / "tokenizer.model", fs::copy_options::overwrite_existing);
    fsync_path((tmp_dir / "tokenizer.model").string());
    files["tokenizer.model"] = {{"bytes", fs::file_size(tmp_dir / "tokenizer.model")},
                                {"xxh64", xxhash64_file((tmp_dir / "tokenizer.model").string())}};
  }
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
                             {"model", c.model->config()},
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

std::string CheckpointOnDisk::tokenizer_model() const {
  const fs::path p = fs::path(dir) / "tokenizer.model";
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
    if (name.empty() || name.find('/') != std::string::npos || name.find("..") != std::string::npos)
      throw std::runtime_error("--load " + path + ": 'latest' holds an invalid name '" + name + "'");
    dir /= name;
    if (!fs::exists(dir / "manifest.json"))
      throw std::runtime_error("--load " + path + ": 'latest' points at " + dir.string() + ", which has no manifest.json");
  }
  CheckpointOnDisk ck;
  ck.dir = dir.string();
  const std::string mpath = (dir / "manifest.json").string();
  try {
    ck.manifest = nlohmann::json::parse(read_text(mpath));
    if (ck.manifest.at("format") != "llm-checkpoint")
      throw std::runtime_error("not an llm checkpoint manifest");
    const int version = ck.manifest.at("format_version");
    if (version > kCheckpointFormatVersion)
      throw std::runtime_error("format version " + std::to_string(version) + " is newer than this build reads (" +
                               std::to_string(kCheckpointFormatVersion) + "): update the runtime");
    ck.model = ck.manifest.at("model").get<ModelConfig>();
    ck.state = ck.manifest.at("training_state").get<TrainingState>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("'" + mpath + "' is not a valid manifest: " + e.what());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("'" + mpath + "': " + e.what());
  }
  try {
    for (auto& [fname, info] : ck.manifest.at("files").items()) {
      if (fname.empty() || fname.find('/') != std::string::npos || fname.find("..") != std::string::npos)
        throw std::runtime_error("names a file outside the checkpoint: '" + fname + "'");
      const fs::path f = dir / fname;
      if (!fs::exists(f)) throw std::runtime_error("checkpoint file '" + f.string() + "' is missing");
      const uint64_t want_bytes = info.at("bytes").get<uint64_t>();
      if (fs::file_size(f) != want_bytes)
        throw std::runtime_error("checkpoint file '" + f.string() + "' has " + std::to_string(fs::file_size(f)) +
                                 " bytes, the manifest says " + std::to_string(want_bytes) + " (truncated or replaced)");
      if (xxhash64_file(f.string()) != info.at("xxh64").get<uint64_t>())
        throw std::runtime_error("checkpoint file '" + f.string() + "' fails its xxHash64 checksum (corrupted)");
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("'" + mpath + "': invalid 'files' entry: " + e.what());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("'" + mpath + "': " + e.what());
  }
  return ck;
}

// Fills `flat` (a flat buffer laid out like the model's parameters) from the
// manifest entries of one kind.
// Reads a JSON integer, refusing floats and other types (a float would convert with UB).
static int64_t json_int(const nlohmann::json& j, const char* key) {
  const auto& v = j.at(key);
  if (!v.is_number_integer()) throw std::runtime_error(std::string("'") + key + "' must be an integer");
  return v.get<int64_t>();
}

// Fills `flat` (a flat buffer laid out like the model's parameters) from the
// manifest entries of one kind. Every slice must come from a file the manifest
// lists (and so was checksummed), and the slices of a tensor must cover each
// of its elements exactly once.
static void load_kind(const CheckpointOnDisk& ck, const ParameterStore& ps, const std::string& kind, Tensor& flat) {
  const std::string mpath = (fs::path(ck.dir) / "manifest.json").string();
  std::map<std::string, std::unique_ptr<SafetensorsReader>> readers;
  std::map<std::string, const nlohmann::json*> by_name;
  try {
    for (const auto& t : ck.manifest.at("tensors"))
      if (t.at("kind") == kind) by_name[t.at("name").get<std::string>()] = &t;
    const auto& files = ck.manifest.at("files");
    for (const auto& p : ps.infos()) {
      auto it = by_name.find(p.name);
      if (it == by_name.end())
        throw std::runtime_error("has no " + kind + " for '" + p.name + "': it was saved from a different model");
      const auto& t = *it->second;
      if (t.at("shape").get<Shape>() != p.shape)
        throw std::runtime_error("'" + p.name + "' has shape " + shape_str(t.at("shape").get<Shape>()) +
                                 ", the model expects " + shape_str(p.shape));
      std::vector<std::pair<int64_t, int64_t>> ranges;
      for (const auto& s : t.at("slices")) {
        const std::string file = s.at("file");
        if (!files.contains(file))
          throw std::runtime_error("slice of '" + p.name + "' names file '" + file + "', which 'files' does not list");
        const int64_t begin = json_int(s, "begin"), end = json_int(s, "end");
        if (begin < 0 || end > p.numel || begin > end)
          throw std::runtime_error("slice [" + std::to_string(begin) + ", " + std::to_string(end) + ") of '" + p.name +
                                   "' lies outside its " + std::to_string(p.numel) + " elements");
        ranges.emplace_back(begin, end);
        auto& r = readers[file];
        if (!r) r = std::make_unique<SafetensorsReader>((fs::path(ck.dir) / file).string());
        Tensor dst = flat.flat_view(p.offset + begin, {end - begin});
        r->read_into(s.at("key").get<std::string>(), dst);
      }
      std::sort(ranges.begin(), ranges.end());
      int64_t covered = 0;
      for (const auto& [b, e] : ranges) {
        if (b != covered)
          throw std::runtime_error("the slices of '" + p.name + "' " + (b < covered ? "overlap" : "leave a gap") +
                                   " at element " + std::to_string(std::min(b, covered)));
        covered = e;
      }
      if (covered != p.numel)
        throw std::runtime_error("the slices of '" + p.name + "' cover " + std::to_string(covered) + " of its " +
                                 std::to_string(p.numel) + " elements");
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("'" + mpath + "': invalid tensor entry: " + e.what());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("checkpoint '" + mpath + "': " + e.what());
  }
}

void load_model_weights(const CheckpointOnDisk& ck, LlamaModel& model) {
  load_kind(ck, model.params(), "param", model.params().values());
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
