// Damaged and hostile checkpoints: a missing, truncated, extended or
// bit-flipped shard, a manifest from another model, a manifest whose slices or
// a shard whose offsets point outside their tensor or file, names that try to
// leave the checkpoint directory, and text that is not a manifest. Each gives a
// std::runtime_error that names the file (never a crash or an out-of-bounds
// read); checksums are verified lazily, once per file and only for files read.
// The parsers themselves are also fuzzed: tests/fuzz/.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/manifest.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/safetensors_header.h"
#include "layers/llama_model.h"
#include "optim/adamw.h"
#include "tests/support/run_tool.h"

using namespace llm;
namespace fs = std::filesystem;

namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 11;
  c.hidden_size = 8;
  c.ffn_hidden_size = 12;
  c.num_layers = 1;
  c.num_attention_heads = 2;
  c.num_query_groups = 1;
  c.seq_length = 5;
  return c;
}

// Runs f, expecting a std::runtime_error whose message contains every one of `needles`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no error (expected one mentioning '" << needles.front() << "')";
  } catch (const std::runtime_error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
  }
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A safetensors file from a header text and data bytes.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((uint64_t{header.size()} >> (8 * i)) & 0xff);
  return s + header + data;
}

class CheckpointIntegrity : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = std::make_unique<LlamaModel>(tiny_config());
    model_->initialize(3);
    opt_ = std::make_unique<AdamW>(model_->params(), AdamWConfig{});
    write_bytes(tmp_ / "tok.model", "not really a tokenizer, but a file to copy");
    CheckpointContents c;
    c.model = model_.get();
    c.optimizer = opt_.get();
    c.state.iteration = 4;
    c.tokenizer_model = tmp_ / "tok.model";
    dir_ = save_checkpoint(tmp_ / "ck", c);
    shard_ = dir_ + "/shard_r00000.safetensors";
    mpath_ = dir_ + "/manifest.json";
  }

  nlohmann::json manifest() const { return nlohmann::json::parse(read_bytes(mpath_)); }
  void write_manifest(const nlohmann::json& m) const { write_bytes(mpath_, m.dump(1)); }
  // Records a file's new size and checksum, so that what follows is checked
  // by the parsers rather than caught by the checksum.
  void bless(const std::string& file) const {
    nlohmann::json m = manifest();
    m["files"][file] = {{"bytes", fs::file_size(dir_ + "/" + file)}, {"xxh64", xxhash64_file(dir_ + "/" + file)}};
    write_manifest(m);
  }
  void load_into_fresh_model() const {
    LlamaModel target(tiny_config());
    load_model_weights(open_checkpoint(dir_), target);
  }

  test::TempDir tmp_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<AdamW> opt_;
  std::string dir_, shard_, mpath_;
};

}  // namespace

TEST_F(CheckpointIntegrity, IntactCheckpointLoads) {
  LlamaModel target(tiny_config());
  const CheckpointOnDisk ck = open_checkpoint(tmp_ / "ck");
  load_model_weights(ck, target);
  EXPECT_EQ(0, std::memcmp(target.params().values().raw(), model_->params().values().raw(),
                           model_->params().values().nbytes()));
  EXPECT_EQ(ck.tokenizer_model(), dir_ + "/tokenizer.model");
}

TEST_F(CheckpointIntegrity, MissingShardNamesTheFileAndTheDirectory) {
  fs::remove(shard_);
  expect_error([&] { open_checkpoint(dir_); }, {mpath_, shard_, "missing", "checkpoint directory " + dir_});
}

TEST_F(CheckpointIntegrity, TruncatedShardNamesTheFileAndBothSizes) {
  const auto size = fs::file_size(shard_);
  fs::resize_file(shard_, size - 7);
  expect_error([&] { open_checkpoint(dir_); },
               {shard_, "has " + std::to_string(size - 7) + " bytes", "the manifest says " + std::to_string(size)});
}

TEST_F(CheckpointIntegrity, ExtendedShardNamesTheFileAndBothSizes) {
  const auto size = fs::file_size(shard_);
  std::ofstream(shard_, std::ios::binary | std::ios::app) << "xx";
  expect_error([&] { open_checkpoint(dir_); },
               {shard_, "has " + std::to_string(size + 2) + " bytes", "the manifest says " + std::to_string(size)});
}

TEST_F(CheckpointIntegrity, FlippedDataByteFailsTheChecksumWhenRead) {
  std::string b = read_bytes(shard_);
  b[b.size() - 5] ^= 0x10;
  write_bytes(shard_, b);
  // Opening hashes nothing; the first read of the shard does.
  const CheckpointOnDisk ck = open_checkpoint(dir_);
  LlamaModel target(tiny_config());
  expect_error([&] { load_model_weights(ck, target); }, {shard_, "checksum", "corrupted"});
  AdamW opt(target.params(), {});
  expect_error([&] { load_optimizer_state(ck, opt); }, {shard_, "checksum"});
}

TEST_F(CheckpointIntegrity, FlippedHeaderByteFailsTheChecksumAndTheParser) {
  std::string b = read_bytes(shard_);
  b[8] = '!';  // the header's opening brace
  write_bytes(shard_, b);
  expect_error([&] { load_into_fresh_model(); }, {shard_, "checksum"});
  // With the checksum made to match, the header parser names the file.
  bless("shard_r00000.safetensors");
  expect_error([&] { load_into_fresh_model(); }, {mpath_, shard_, "not a valid safetensors file", "not JSON"});
}

TEST_F(CheckpointIntegrity, ChecksumsOnlyForFilesReadAndOncePerFile) {
  // A corrupted tokenizer does not stop the weights from loading (they never
  // read it), but asking for the tokenizer does.
  std::string tok = read_bytes(dir_ + "/tokenizer.model");
  tok[0] ^= 1;
  write_bytes(dir_ + "/tokenizer.model", tok);
  const CheckpointOnDisk ck = open_checkpoint(dir_);
  LlamaModel target(tiny_config());
  load_model_weights(ck, target);
  expect_error([&] { ck.tokenizer_model(); }, {dir_ + "/tokenizer.model", "checksum"});

  // A file verified once is not hashed again by the same checkpoint (or its
  // copies); a fresh open checks it again.
  const CheckpointOnDisk copy = ck;
  std::string b = read_bytes(shard_);
  b[b.size() - 1] ^= 0x01;
  write_bytes(shard_, b);
  AdamW opt(target.params(), {});
  load_optimizer_state(copy, opt);
  expect_error([&] { load_into_fresh_model(); }, {shard_, "checksum"});
}

TEST_F(CheckpointIntegrity, FileNamesThatLeaveTheDirectoryAreRefused) {
  const nlohmann::json good = manifest();
  for (const std::string bad : {"../x.safetensors", "/etc/passwd", "a/b", "..", "", "a\\b", "x/../../y"}) {
    nlohmann::json m = good;
    m["files"][bad] = {{"bytes", 10}, {"xxh64", 1}};
    for (auto& t : m["tensors"])
      if (t["name"] == "model.norm.weight") t["slices"][0]["file"] = bad;
    write_manifest(m);
    expect_error([&] { open_checkpoint(dir_); }, {mpath_, "'" + bad + "'", "not a plain file name"});
  }
  // Named by a slice only (the files table does not list it).
  nlohmann::json m = good;
  for (auto& t : m["tensors"])
    if (t["name"] == "model.norm.weight") t["slices"][0]["file"] = "../shard_r00000.safetensors";
  write_manifest(m);
  expect_error([&] { open_checkpoint(dir_); }, {mpath_, "model.norm.weight", "'files' does not list"});
  // And `latest` holding a path.
  write_manifest(good);
  write_bytes(tmp_ / "ck/latest", "../ck/iter_0000004\n");
  expect_error([&] { open_checkpoint(tmp_ / "ck"); }, {"latest", "invalid name"});
}

TEST_F(CheckpointIntegrity, SliceOutsideTheFullShapeIsRefused) {
  const nlohmann::json good = manifest();
  const int64_t big = std::numeric_limits<int64_t>::max();
  // model.embed_tokens.weight is [11, 8]: offset + shape past it, including sums that overflow int64.
  for (const auto& [offset, shape] : std::vector<std::pair<nlohmann::json, nlohmann::json>>{
           {{1, 0}, {11, 8}}, {{0, 0}, {11, 9}}, {{big, 0}, {11, 8}}, {{0, big}, {11, big}}, {{0}, {11}}}) {
    nlohmann::json m = good;
    for (auto& t : m["tensors"])
      if (t["name"] == "model.embed_tokens.weight" && t["kind"] == "param") {
        t["slices"][0]["offset"] = offset;
        t["slices"][0]["shape"] = shape;
      }
    write_manifest(m);
    expect_error([&] { open_checkpoint(dir_); }, {mpath_, "model.embed_tokens.weight", "lies outside its full shape [11, 8]"});
  }
  // A version-1 flat range past the element count.
  nlohmann::json m = good;
  for (auto& t : m["tensors"])
    if (t["name"] == "model.norm.weight" && t["kind"] == "param") t["slices"][0] = {{"file", "shard_r00000.safetensors"}, {"key", "model.norm.weight"}, {"begin", 0}, {"end", 9}};
  write_manifest(m);
  expect_error([&] { open_checkpoint(dir_); }, {mpath_, "model.norm.weight", "outside its 8 elements"});
}

TEST_F(CheckpointIntegrity, SliceThatDisagreesWithItsShardIsRefused) {
  const nlohmann::json good = manifest();
  // A key the shard does not hold.
  nlohmann::json m = good;
  for (auto& t : m["tensors"])
    if (t["name"] == "model.norm.weight" && t["kind"] == "param") t["slices"][0]["key"] = "no.such.tensor";
  write_manifest(m);
  expect_error([&] { load_into_fresh_model(); }, {mpath_, shard_, "no.such.tensor"});
  // Two slices covering the tensor exactly, but each pointing at the whole
  // [8] tensor in the shard: the shapes disagree.
  m = good;
  for (auto& t : m["tensors"])
    if (t["name"] == "model.norm.weight" && t["kind"] == "param") {
      auto s = t["slices"][0];
      s["offset"] = {0};
      s["shape"] = {3};
      auto s2 = s;
      s2["offset"] = {3};
      s2["shape"] = {5};
      t["slices"] = {s, s2};
    }
  write_manifest(m);
  expect_error([&] { load_into_fresh_model(); }, {mpath_, shard_, "model.norm.weight", "has shape [8]", "says [3]"});
  // A dtype the shard does not hold.
  m = good;
  for (auto& t : m["tensors"])
    if (t["name"] == "model.norm.weight" && t["kind"] == "param") t["dtype"] = "BF16";
  write_manifest(m);
  expect_error([&] { load_into_fresh_model(); }, {shard_, "model.norm.weight", "is F32, the manifest says BF16"});
}

TEST_F(CheckpointIntegrity, HeaderOffsetsPastTheFileAreRefused) {
  // The shard rewritten with model.norm.weight's range ending past the data.
  const std::string b = read_bytes(shard_);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= static_cast<uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
  nlohmann::json header = nlohmann::json::parse(b.substr(8, hlen));
  const std::string data = b.substr(8 + hlen);
  header["model.norm.weight"]["data_offsets"] = {data.size() - 16, data.size() + 16};
  write_bytes(shard_, safetensors_bytes(header.dump(), data));
  bless("shard_r00000.safetensors");
  expect_error([&] { load_into_fresh_model(); },
               {mpath_, shard_, "model.norm.weight", "lies outside the data section of " + std::to_string(data.size())});
  // ... and an in-file range whose size does not match the shape.
  header["model.norm.weight"]["data_offsets"] = {0, 8};
  write_bytes(shard_, safetensors_bytes(header.dump(), data));
  bless("shard_r00000.safetensors");
  expect_error([&] { load_into_fresh_model(); }, {shard_, "model.norm.weight", "has 8 bytes but shape [8] of F32 needs 32"});
}

TEST_F(CheckpointIntegrity, HeaderLengthPastTheFileIsRefused) {
  std::string b = read_bytes(shard_);
  const uint64_t huge = uint64_t{1} << 40;
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((huge >> (8 * i)) & 0xff);
  write_bytes(shard_, b);
  bless("shard_r00000.safetensors");
  expect_error([&] { load_into_fresh_model(); },
               {mpath_, shard_, "header length " + std::to_string(huge) + " exceeds the file's " + std::to_string(b.size())});
  // A file too short to hold the length itself.
  write_bytes(shard_, "abc");
  bless("shard_r00000.safetensors");
  expect_error([&] { load_into_fresh_model(); }, {shard_, "shorter than its 8-byte header length"});
}

TEST_F(CheckpointIntegrity, ManifestOfAnotherModelNamesBothConfigs) {
  ModelConfig other = tiny_config();
  other.hidden_size = 16;
  LlamaModel wrong(other);
  expect_error([&] { load_model_weights(open_checkpoint(dir_), wrong); },
               {mpath_, "another model", "\"hidden_size\":8", "\"hidden_size\":16"});
  // Parameters of another model (no config to compare): the tensors are named.
  ParameterStore ps(DType::F32, Device::cpu());
  ps.add("model.norm.weight", {16}, InitRule::Ones, 0, true);
  ps.allocate();
  expect_error([&] { load_parameters(open_checkpoint(dir_), ps); }, {mpath_, "model.norm.weight", "[8]", "[16]"});
  ParameterStore ps2(DType::F32, Device::cpu());
  ps2.add("model.layers.7.mlp.w", {4}, InitRule::Ones, 0, true);
  ps2.allocate();
  expect_error([&] { load_parameters(open_checkpoint(dir_), ps2); }, {mpath_, "model.layers.7.mlp.w", "different model"});
}

TEST_F(CheckpointIntegrity, ManifestThatIsNotJsonIsRefused) {
  write_bytes(mpath_, "{\"format\": \"llm-checkpoint\", oops");
  expect_error([&] { open_checkpoint(dir_); }, {mpath_, "not a valid manifest", "not JSON"});
  write_bytes(mpath_, "");
  expect_error([&] { open_checkpoint(dir_); }, {mpath_, "not JSON"});
  write_bytes(mpath_, std::string(1000, '[') + std::string(1000, ']'));  // nested past the limit
  expect_error([&] { open_checkpoint(dir_); }, {mpath_, "not JSON", "nested deeper"});
}

TEST_F(CheckpointIntegrity, ManifestWithWrongTypesIsRefused) {
  const nlohmann::json good = manifest();
  struct Case {
    std::string pointer;
    nlohmann::json value;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"/format", "other", "not an llm checkpoint manifest"},
      {"/format_version", "2", "'format_version'"},
      {"/format_version", 99, "newer than this build reads"},
      {"/files/shard_r00000.safetensors/bytes", "12", "'bytes'"},
      {"/files/shard_r00000.safetensors/xxh64", -1, "'xxh64'"},
      {"/files/shard_r00000.safetensors", nullptr, "not {bytes, xxh64}"},
      {"/files", nlohmann::json::array(), "'files'"},
      {"/tensors/0/shape", {1.5, 8}, "'shape'"},
      {"/tensors/0/shape", {-1, 8}, "'shape'"},
      {"/tensors/0/shape", {int64_t{1} << 40, int64_t{1} << 40}, "too many elements"},
      {"/tensors/0/dtype", "Q4", "unknown dtype name 'Q4'"},
      {"/tensors/0/slices", "all", "'slices'"},
      {"/tensors/0/slices/0/offset", {0, "0"}, "'offset'"},
      {"/tensors/0/name", 7, "'name'"},
      {"/tensors/1/name", good["tensors"][0]["name"], "listed twice"},
      {"/tensors", nlohmann::json::object(), "'tensors'"},
      {"/model/hidden_size", 8.5, "'hidden_size'"},
      {"/model/hidden_size", 1e300, "'hidden_size'"},
      {"/model/tie_embeddings", 0, "'tie_embeddings'"},
      {"/training_state/iteration", 1e300, "'iteration'"},
      {"/training_state/extra", "x", "'extra'"},
      {"/optimizer/steps", -3, "'steps'"},
  };
  for (const auto& c : cases) {
    nlohmann::json m = good;
    m[nlohmann::json::json_pointer(c.pointer)] = c.value;
    write_manifest(m);
    SCOPED_TRACE(c.pointer + " = " + c.value.dump());
    expect_error([&] { open_checkpoint(dir_); }, {mpath_, c.needle});
  }
  for (const char* key : {"model", "training_state", "tensors", "files", "format_version"}) {
    nlohmann::json m = good;
    m.erase(key);
    write_manifest(m);
    expect_error([&] { open_checkpoint(dir_); }, {mpath_, std::string("'") + key + "'"});
  }
  write_bytes(mpath_, "[1, 2]");
  expect_error([&] { open_checkpoint(dir_); }, {mpath_, "not a JSON object"});
}

// The header parser on bytes in memory (what the fuzzer drives).
TEST(SafetensorsHeaderParser, RefusesEachKindOfBadHeaderNamingTheTensor) {
  const std::string data(64, '\0');
  auto parse = [&](const std::string& header) {
    const std::string f = safetensors_bytes(header, data);
    return parse_safetensors_header(reinterpret_cast<const uint8_t*>(f.data()), f.size(), "mem.safetensors");
  };
  const auto h = parse(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[0],"data_offsets":[24,24]},"__metadata__":{"k":"v"}})");
  EXPECT_EQ(h.entries.size(), 2u);
  EXPECT_EQ(h.entries.at("a").end, 24u);
  EXPECT_EQ(h.metadata.at("k"), "v");
  EXPECT_EQ(h.data_size, 64u);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", "unknown dtype name 'Q4'"},
      {R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "non-negative integers"},
      {R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", "non-negative integers"},
      {R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", "too many elements"},
      {R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", "too many elements"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", "data_offsets [8, 0] that end before they begin"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[60,68]}})", "outside the data section of 64 bytes"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", "two non-negative integers"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", "data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", "has 12 bytes but shape [2] of F32 needs 8"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", "overlap"},
      {R"({"a":{"shape":[2],"data_offsets":[0,8]}})", "no dtype"},
      {R"({"a":[1,2]})", "not an object"},
      {R"({"__metadata__":[1]})", "__metadata__"},
      {R"([1,2])", "not a JSON object"},
      {R"({"a":)", "not JSON"},
  };
  for (const auto& [header, needle] : cases)
    expect_error([&] { parse(header); }, {"'mem.safetensors' is not a valid safetensors file", needle});
  // Lengths: past the file, and files too short for the length itself.
  std::string f = safetensors_bytes("{}", "");
  f[0] = 3;
  expect_error([&] { parse_safetensors_header(reinterpret_cast<const uint8_t*>(f.data()), f.size(), "m"); },
               {"'m'", "header length 3 exceeds the file's 10 bytes"});
  expect_error([&] { parse_safetensors_header(reinterpret_cast<const uint8_t*>(f.data()), 5, "m"); },
               {"'m'", "shorter than its 8-byte header length"});
}

// allow_unknown_dtypes (the Hugging Face reader's mode): tensors of dtypes
// core/dtype.h lacks are kept, marked unknown, with every check that does not
// need to convert them: range, overlap, shape, and size where the element
// size is known.
TEST(SafetensorsHeaderParser, AllowUnknownDtypesKeepsThemChecked) {
  const std::string data(64, '\0');
  SafetensorsParseOptions hf;
  hf.allow_unknown_dtypes = true;
  auto parse = [&](const std::string& header, const SafetensorsParseOptions& options) {
    const std::string f = safetensors_bytes(header, data);
    return parse_safetensors_header(reinterpret_cast<const uint8_t*>(f.data()), f.size(), "mem.safetensors", options);
  };
  const std::string mixed =
      R"({"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},)"
      R"("ids":{"dtype":"I64","shape":[1,3],"data_offsets":[8,32]},)"
      R"("mask":{"dtype":"U8","shape":[3],"data_offsets":[32,35]},)"
      R"("flag":{"dtype":"BOOL","shape":[],"data_offsets":[35,36]},)"
      R"("fp8":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[36,40]},)"
      R"("packed":{"dtype":"F4","shape":[2,3],"data_offsets":[40,43]},)"
      R"("none":{"dtype":"F4","shape":[0],"data_offsets":[43,43]}})";
  const auto h = parse(mixed, hf);
  ASSERT_EQ(h.entries.size(), 7u);
  EXPECT_TRUE(h.entries.at("w").known_dtype);
  EXPECT_EQ(h.entries.at("w").dtype, DType::BF16);
  EXPECT_EQ(h.entries.at("w").dtype_str, "BF16");
  for (const char* n : {"ids", "mask", "flag", "fp8", "packed", "none"}) EXPECT_FALSE(h.entries.at(n).known_dtype) << n;
  EXPECT_EQ(h.entries.at("ids").dtype_str, "I64");
  EXPECT_EQ(h.entries.at("ids").shape, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(h.entries.at("ids").begin, 8u);
  EXPECT_EQ(h.entries.at("ids").end, 32u);
  EXPECT_EQ(h.entries.at("packed").dtype_str, "F4");
  // Strictly, the same file is refused at its first unknown dtype.
  expect_error([&] { parse(mixed, {}); }, {"'mem.safetensors'", "unsupported dtype", "unknown dtype name"});

  EXPECT_EQ(safetensors_dtype_size("I64"), 8u);
  EXPECT_EQ(safetensors_dtype_size("U8"), 1u);
  EXPECT_EQ(safetensors_dtype_size("BOOL"), 1u);
  EXPECT_EQ(safetensors_dtype_size("F8_E5M2"), 1u);
  EXPECT_EQ(safetensors_dtype_size("I16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("F4"), 0u);
  for (DType d : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32})
    EXPECT_EQ(safetensors_dtype_size(dtype_name(d)), dtype_size(d)) << dtype_name(d);

  const std::vector<std::pair<std::string, std::string>> cases = {
      // Overflowing shapes, with a known element size or none.
      {R"({"a":{"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,8]}})", "too many elements"},
      {R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", "too many elements"},
      {R"({"a":{"dtype":"F4","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", "too many elements"},
      // Sizes that do not match a known element size.
      {R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,4]}})", "has 4 bytes but shape [3] of U8 needs 3"},
      {R"({"a":{"dtype":"I64","shape":[2],"data_offsets":[0,8]}})", "has 8 bytes but shape [2] of I64 needs 16"},
      // Unknown element size: empty iff no bytes.
      {R"({"a":{"dtype":"F4","shape":[0],"data_offsets":[0,4]}})", "has 4 bytes for shape [0] of F4"},
      {R"({"a":{"dtype":"F4","shape":[4],"data_offsets":[4,4]}})", "has 0 bytes for shape [4] of F4"},
      // Ranges and overlaps, whatever the dtype.
      {R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[60,68]}})", "outside the data section of 64 bytes"},
      {R"({"a":{"dtype":"F4","shape":[8],"data_offsets":[8,4]}})", "end before they begin"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", "overlap"},
      {R"({"a":{"dtype":"F4","shape":[16],"data_offsets":[0,8]},"b":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[7,10]}})", "overlap"},
      // Untrusted numbers: floats and negatives are never converted.
      {R"({"a":{"dtype":"I64","shape":[1e300],"data_offsets":[0,8]}})", "non-negative integers"},
      {R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8.0]}})", "two non-negative integers"},
      {R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[-1e300,8]}})", "two non-negative integers"},
      // Names that are no dtype.
      {R"({"a":{"dtype":"","shape":[1],"data_offsets":[0,1]}})", "not a safetensors dtype name"},
      {R"({"a":{"dtype":"i64","shape":[1],"data_offsets":[0,8]}})", "not a safetensors dtype name"},
      {R"({"a":{"dtype":"U8\u0000","shape":[1],"data_offsets":[0,1]}})", "not a safetensors dtype name"},
      {R"({"a":{"dtype":"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789","shape":[1],"data_offsets":[0,1]}})", "not a safetensors dtype name"},
      {R"({"a":{"dtype":8,"shape":[1],"data_offsets":[0,8]}})", "no dtype string"},
  };
  for (const auto& [header, needle] : cases) {
    SCOPED_TRACE(header);
    expect_error([&] { parse(header, hf); }, {"'mem.safetensors' is not a valid safetensors file", "'a'", needle});
  }
}
