// Runs build/bin/llm-prepare-data end to end in a temporary folder.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "data/token_file.h"
#include "data/tokenizer.h"

using namespace llm::data;
namespace fs = std::filesystem;

namespace {

const std::string kTool = std::string(LLM_BIN_DIR) + "/llm-prepare-data";

struct Result {
  int rc = -1;
  std::string output;  // stdout + stderr
};

Result run_tool(const std::string& args) {
  const std::string cmd = "'" + kTool + "' " + args + " 2>&1";
  Result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string sentence(uint64_t& x) {
  const char* words[] = {"the", "a", "cat", "dog", "runs", "sees", "house", "river", "old",
                         "new", "and", "with", "quickly", "green", "morning", "2024", "light"};
  std::string s;
  const int n = 5 + static_cast<int>((x >> 40) % 8);
  for (int i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    if (i) s += ' ';
    s += words[(x >> 33) % 17];
  }
  s[0] = static_cast<char>(std::toupper(s[0]));
  return s + ".";
}

class PrepareDataTool : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kTool)) << kTool << " is not built";
    dir_ = fs::temp_directory_path() / ("llm_prepare_tool_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "corpus" / "sub");
    // Two fortune-style files: documents separated by lines holding "%".
    uint64_t x = 99;
    for (const auto& [name, ndocs] : std::vector<std::pair<std::string, int>>{{"corpus/a", 60}, {"corpus/sub/b", 40}}) {
      std::ofstream f((dir_ / name).string());
      for (int d = 0; d < ndocs; ++d) {
        std::string doc;
        for (int l = 0; l < 1 + d % 3; ++l) doc += sentence(x) + "\n";
        if (d == 0 && name == "corpus/a") first_doc_ = doc.substr(0, doc.size() - 1);
        f << doc << "%\n";
      }
    }
    // What the fortunes package also holds: binary .dat indexes, .u8 symlinks.
    std::ofstream((dir_ / "corpus/a.dat").string(), std::ios::binary)
        << std::string("\0\0\0\2\0\0\0\x3c", 8);
    fs::create_symlink("a", dir_ / "corpus/a.u8");
    std::ofstream((dir_ / "corpus/.hidden").string()) << "not read\n";
    corpus_ = (dir_ / "corpus").string();
    out_ = (dir_ / "out").string();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string p(const std::string& rel) const { return (dir_ / rel).string(); }

  fs::path dir_;
  std::string corpus_, out_, first_doc_;
};

uint64_t idx_token_count(const std::string& idx) {
  std::ifstream in(idx, std::ios::binary);
  char h[32];
  in.read(h, 32);
  uint64_t n = 0;
  std::memcpy(&n, h + 24, 8);
  return n;
}

}  // namespace

TEST_F(PrepareDataTool, TrainsATokenizerAndWritesConsistentTokenFiles) {
  const Result r = run_tool("--input " + corpus_ + " --document-separator % --tokenizer-model " + out_ +
                            "/tok.model --vocab-size 400 --output-prefix " + out_ + "/data --threads 2");
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("documents:  100"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 binary, 1 duplicate"), std::string::npos) << r.output;
  ASSERT_TRUE(fs::exists(out_ + "/tok.model"));

  const uint64_t n = idx_token_count(out_ + "/data.idx");
  EXPECT_EQ(fs::file_size(out_ + "/data.bin"), 2 * n);  // uint16: vocab 400

  TokenDataset ds(out_ + "/data");
  Tokenizer tok(out_ + "/tok.model");
  EXPECT_EQ(ds.vocab_size(), tok.vocab_size());
  EXPECT_EQ(ds.size(), static_cast<int64_t>(n));
  ASSERT_EQ(ds.num_documents(), 100);  // 60 + 40; separators, .dat, .u8 and hidden left out
  for (int64_t d = 0; d < ds.num_documents(); ++d) {
    EXPECT_EQ(ds.token(ds.document_start(d)), tok.bos_id());
    EXPECT_EQ(ds.token(ds.document_end(d) - 1), tok.eos_id());
  }
  // The first document decodes back to its text.
  const int64_t b = ds.document_start(0) + 1, e = ds.document_end(0) - 1;
  std::vector<int32_t> ids(static_cast<size_t>(e - b));
  ds.read(b, e - b, ids.data());
  EXPECT_EQ(tok.decode(ids), first_doc_);

  // The existing model is reused; the output does not depend on the thread count.
  const Result r2 = run_tool("--input " + corpus_ + " --document-separator % --tokenizer-model " + out_ +
                             "/tok.model --output-prefix " + out_ + "/again --threads 1");
  ASSERT_EQ(r2.rc, 0) << r2.output;
  std::ifstream a(out_ + "/data.bin", std::ios::binary), c(out_ + "/again.bin", std::ios::binary);
  const std::string sa((std::istreambuf_iterator<char>(a)), {}), sc((std::istreambuf_iterator<char>(c)), {});
  EXPECT_EQ(sa, sc);

  // Whole files as documents, without EOS, named explicitly.
  const Result r3 = run_tool("--input " + p("corpus/a") + " " + p("corpus/sub/b") +
                             " --no-append-eos --tokenizer-model " + out_ + "/tok.model --output-prefix " +
                             out_ + "/whole");
  ASSERT_EQ(r3.rc, 0) << r3.output;
  TokenDataset whole(out_ + "/whole");
  EXPECT_EQ(whole.num_documents(), 2);
  EXPECT_NE(whole.token(whole.document_end(0) - 1), tok.eos_id());

  // --vocab-size that contradicts an existing model is an error.
  const Result r4 = run_tool("--input " + corpus_ + " --tokenizer-model " + out_ +
                             "/tok.model --vocab-size 500 --output-prefix " + out_ + "/x");
  EXPECT_EQ(r4.rc, 1) << r4.output;
  EXPECT_NE(r4.output.find("--vocab-size 500"), std::string::npos) << r4.output;
  EXPECT_FALSE(fs::exists(out_ + "/x.bin"));
}

TEST_F(PrepareDataTool, BadInvocationsFailWithAMessage) {
  // Missing input path.
  Result r = run_tool("--input " + p("no/such/dir") + " --tokenizer-model " + out_ +
                      "/tok.model --vocab-size 400 --output-prefix " + out_ + "/d");
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_NE(r.output.find("llm-prepare-data: error:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(p("no/such/dir")), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out_ + "/d.bin"));
  EXPECT_FALSE(fs::exists(out_ + "/tok.model"));

  // Unknown flag: usage error, exit code 2.
  r = run_tool("--input " + corpus_ + " --tokenizer-model t.model --output-prefix d --frobnicate 3");
  EXPECT_EQ(r.rc, 2) << r.output;
  EXPECT_NE(r.output.find("frobnicate"), std::string::npos) << r.output;

  // Required flag missing.
  r = run_tool("--input " + corpus_ + " --tokenizer-model t.model");
  EXPECT_EQ(r.rc, 2) << r.output;
  EXPECT_NE(r.output.find("--output-prefix"), std::string::npos) << r.output;

  // No model and no --vocab-size: names both flags.
  r = run_tool("--input " + corpus_ + " --tokenizer-model " + out_ + "/none.model --output-prefix " + out_ + "/d");
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_NE(r.output.find("--vocab-size"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--tokenizer-model"), std::string::npos) << r.output;

  // A binary file named directly.
  r = run_tool("--input " + p("corpus/a.dat") + " --tokenizer-model " + out_ +
               "/t.model --vocab-size 400 --output-prefix " + out_ + "/d");
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_NE(r.output.find("binary"), std::string::npos) << r.output;

  // --help works and documents the folder rules.
  r = run_tool("--help");
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("--document-separator"), std::string::npos);
  EXPECT_NE(r.output.find(".dat"), std::string::npos);
}
