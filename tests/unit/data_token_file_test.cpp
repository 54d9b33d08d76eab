#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "data/token_file.h"

using namespace llm::data;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("llm_token_file_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
  static inline int counter_ = 0;
};

std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<unsigned char>& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// Three documents with ids below `vocab`, including the largest id.
std::vector<std::vector<int32_t>> make_docs(int64_t vocab) {
  std::mt19937 gen(7);  // test data only; any values will do
  std::vector<std::vector<int32_t>> docs = {{1, 5, static_cast<int32_t>(vocab - 1), 2}, {}, {}};
  for (int i = 0; i < 1000; ++i) docs[1].push_back(static_cast<int32_t>(gen() % vocab));
  for (int i = 0; i < 37; ++i) docs[2].push_back(static_cast<int32_t>(gen() % vocab));
  return docs;
}

std::string write_dataset(const TempDir& dir, const std::string& name, int64_t vocab,
                          const std::vector<std::vector<int32_t>>& docs) {
  const std::string prefix = dir / name;
  TokenFileWriter w(prefix, vocab);
  for (const auto& d : docs) w.add_document(d);
  w.finish();
  return prefix;
}

// Expects `f` to throw std::runtime_error whose message contains every needle.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no exception thrown; expected one mentioning '" << needles.front() << "'";
  } catch (const std::runtime_error& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message lacks '" << n << "': " << e.what();
  }
}

}  // namespace

TEST(TokenFile, DtypeFollowsVocabSize) {
  EXPECT_EQ(token_dtype_for_vocab(4096), TokenDType::U16);
  EXPECT_EQ(token_dtype_for_vocab(65536), TokenDType::U16);
  EXPECT_EQ(token_dtype_for_vocab(65537), TokenDType::U32);
  EXPECT_EQ(token_dtype_for_vocab(128256), TokenDType::U32);
}

class TokenFileRoundTrip : public ::testing::TestWithParam<int64_t> {};

TEST_P(TokenFileRoundTrip, WriteThenReadGivesTheSameTokensAndDocuments) {
  const int64_t vocab = GetParam();
  TempDir dir;
  const auto docs = make_docs(vocab);
  const std::string prefix = write_dataset(dir, "sub/data", vocab, docs);  // creates sub/

  TokenDataset ds(prefix);
  const size_t tsize = vocab <= 65536 ? 2 : 4;
  EXPECT_EQ(ds.dtype(), vocab <= 65536 ? TokenDType::U16 : TokenDType::U32);
  EXPECT_EQ(ds.vocab_size(), vocab);
  ASSERT_EQ(ds.num_documents(), 3);
  std::vector<int32_t> all;
  for (const auto& d : docs) all.insert(all.end(), d.begin(), d.end());
  ASSERT_EQ(ds.size(), static_cast<int64_t>(all.size()));
  EXPECT_EQ(fs::file_size(prefix + ".bin"), all.size() * tsize);
  EXPECT_EQ(ds.document_start(0), 0);
  EXPECT_EQ(ds.document_start(1), 4);
  EXPECT_EQ(ds.document_start(2), 1004);
  EXPECT_EQ(ds.document_end(2), ds.size());

  std::vector<int32_t> got(all.size());
  ds.read(0, ds.size(), got.data());
  EXPECT_EQ(got, all);
  EXPECT_EQ(ds.token(2), vocab - 1);
  EXPECT_EQ(ds.max_token_id(), *std::max_element(all.begin(), all.end()));

  // The .bin is the raw little-endian array, nothing else.
  const auto raw = read_bytes(prefix + ".bin");
  for (size_t i = 0; i < all.size(); ++i) {
    uint32_t v = 0;
    for (size_t b = 0; b < tsize; ++b) v |= static_cast<uint32_t>(raw[i * tsize + b]) << (8 * b);
    ASSERT_EQ(static_cast<int32_t>(v), all[i]) << "token " << i;
  }
  // The .idx starts with the magic and records version, dtype, vocab, count.
  const auto idx = read_bytes(prefix + ".idx");
  ASSERT_GE(idx.size(), 48u);
  EXPECT_EQ(std::memcmp(idx.data(), "LLMTOKI\0", 8), 0);
  uint64_t count = 0;
  std::memcpy(&count, idx.data() + 24, 8);
  EXPECT_EQ(count, all.size());

  // Sub-range reads and bounds.
  std::vector<int32_t> part(10);
  ds.read(1000, 10, part.data());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), all.begin() + 1000));
  EXPECT_THROW(ds.read(ds.size() - 5, 6, part.data()), std::out_of_range);
  EXPECT_THROW(ds.read(-1, 2, part.data()), std::out_of_range);
  EXPECT_THROW(ds.token(ds.size()), std::out_of_range);
  EXPECT_THROW(ds.document_start(3), std::out_of_range);
  // No temporary files are left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir / "sub"), fs::directory_iterator()), 2);
}

INSTANTIATE_TEST_SUITE_P(Uint16AndUint32, TokenFileRoundTrip, ::testing::Values(1000, 70000));

TEST(TokenFile, FingerprintChangesWithContent) {
  TempDir dir;
  auto docs = make_docs(1000);
  TokenDataset a(write_dataset(dir, "a", 1000, docs));
  TokenDataset b(write_dataset(dir, "b", 1000, docs));
  docs[1][500] = (docs[1][500] + 1) % 1000;
  TokenDataset c(write_dataset(dir, "c", 1000, docs));
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  EXPECT_NE(a.fingerprint(), c.fingerprint());
}

TEST(TokenFile, EmptyDatasetIsValid) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "empty", 300, {});
  TokenDataset ds(prefix);
  EXPECT_EQ(ds.size(), 0);
  EXPECT_EQ(ds.num_documents(), 0);
  EXPECT_EQ(ds.max_token_id(), -1);
}

TEST(TokenFile, WriterRejectsIdsOutsideTheVocabulary) {
  TempDir dir;
  TokenFileWriter w(dir / "x", 100);
  std::vector<int32_t> bad = {1, 100};
  expect_error([&] { w.add_document(bad); }, {dir / "x.bin", "100", "vocabulary"});
  std::vector<int32_t> neg = {-1};
  EXPECT_THROW(w.add_document(neg), std::runtime_error);
}

TEST(TokenFile, UnfinishedWriterLeavesNoFiles) {
  TempDir dir;
  {
    TokenFileWriter w(dir / "partial", 100);
    std::vector<int32_t> d = {1, 2, 3};
    w.add_document(d);
  }  // destroyed without finish(): as after a crash or an error
  EXPECT_FALSE(fs::exists(dir / "partial.bin"));
  EXPECT_FALSE(fs::exists(dir / "partial.idx"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir / ""), fs::directory_iterator()), 0);
}

TEST(TokenFile, MissingBinOrIdxNamesTheFile) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 1000, make_docs(1000));
  expect_error([&] { TokenDataset ds(dir / "nothing"); }, {dir / "nothing.idx", "no such file"});
  fs::remove(prefix + ".bin");
  expect_error([&] { TokenDataset ds(prefix); }, {prefix + ".bin", "no such file", "llm-prepare-data"});
  const std::string p2 = write_dataset(dir, "e", 1000, make_docs(1000));
  fs::remove(p2 + ".idx");
  expect_error([&] { TokenDataset ds(p2); }, {p2 + ".idx", "no such file"});
  // A prefix given with the .bin suffix gets a hint.
  const std::string p3 = write_dataset(dir, "f", 1000, make_docs(1000));
  expect_error([&] { TokenDataset ds(p3 + ".bin"); }, {"drop the .bin suffix"});
}

TEST(TokenFile, TruncatedBinIsReported) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 1000, make_docs(1000));
  const auto size = fs::file_size(prefix + ".bin");
  fs::resize_file(prefix + ".bin", size - 1);  // half a token
  expect_error([&] { TokenDataset ds(prefix); },
               {prefix + ".bin", "not a multiple of the token size 2", "truncated"});
  fs::resize_file(prefix + ".bin", size - 20);  // whole tokens missing
  expect_error([&] { TokenDataset ds(prefix); }, {prefix + ".bin", "truncated", "1041"});
  expect_error([&] { TokenDataset ds(prefix, /*verify_checksum=*/false); }, {"truncated"});
}

TEST(TokenFile, ForeignIndexFileIsReported) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 1000, make_docs(1000));
  std::ofstream(prefix + ".idx", std::ios::trunc) << "this is some other file, not a token index\n";
  expect_error([&] { TokenDataset ds(prefix); }, {prefix + ".idx", "magic"});
  std::ofstream(prefix + ".idx", std::ios::trunc) << "LLM";
  expect_error([&] { TokenDataset ds(prefix); }, {prefix + ".idx", "magic"});
}

TEST(TokenFile, UnsupportedVersionAndCorruptIndexAreReported) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 1000, make_docs(1000));
  const auto good = read_bytes(prefix + ".idx");
  auto idx = good;
  idx[8] = 99;  // version
  write_bytes(prefix + ".idx", idx);
  expect_error([&] { TokenDataset ds(prefix); }, {prefix + ".idx", "version 99", "not supported"});
  idx = good;
  idx[50] ^= 0x01;  // a document start
  write_bytes(prefix + ".idx", idx);
  expect_error([&] { TokenDataset ds(prefix); }, {prefix + ".idx", "checksum"});
  idx = good;
  idx.resize(idx.size() - 8);
  write_bytes(prefix + ".idx", idx);
  expect_error([&] { TokenDataset ds(prefix); }, {prefix + ".idx"});
}

TEST(TokenFile, BitFlipInBinFailsTheChecksum) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 1000, make_docs(1000));
  auto bin = read_bytes(prefix + ".bin");
  bin[777] ^= 0x10;
  write_bytes(prefix + ".bin", bin);
  expect_error([&] { TokenDataset ds(prefix); }, {prefix + ".bin", "checksum mismatch"});
  TokenDataset unchecked(prefix, /*verify_checksum=*/false);  // opt-out still opens
  EXPECT_EQ(unchecked.size(), 1041);
}

TEST(TokenFile, CheckVocabRejectsTokensBeyondTheModelVocabulary) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 1000, make_docs(1000));
  TokenDataset ds(prefix);
  EXPECT_NO_THROW(ds.check_vocab(1000));
  EXPECT_NO_THROW(ds.check_vocab(4096, /*full_scan=*/true));
  expect_error([&] { ds.check_vocab(500); }, {prefix + ".bin", "1000", "500", "--vocab-size"});
  EXPECT_EQ(ds.max_token_id(), 999);
}

TEST(TokenFile, DatasetIsMovable) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 1000, make_docs(1000));
  TokenDataset a(prefix);
  TokenDataset b(std::move(a));
  EXPECT_EQ(b.size(), 1041);
  EXPECT_EQ(b.token(2), 999);
}
