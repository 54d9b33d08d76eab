#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "data/tokenizer.h"

using namespace llm::data;
namespace fs = std::filesystem;

namespace {

// A few KB of English-like sentences, one per line (deterministic).
std::string english_text(int lines) {
  const char* subjects[] = {"The cat", "A small dog", "My neighbour", "The old farmer", "Every student",
                            "The quick brown fox", "Our teacher", "A tall stranger"};
  const char* verbs[] = {"jumps over", "looks at", "walks to", "thinks about", "writes to",
                         "runs past", "paints", "remembers"};
  const char* objects[] = {"the lazy dog", "a red house", "the river", "the morning train",
                           "a green garden", "the city library", "an empty room", "the market"};
  const char* tails[] = {" every day.", " before breakfast.", " in the rain!", " with great care.",
                         ", and then sleeps.", "? Nobody knows.", " at 7 o'clock.", " near the hill."};
  std::ostringstream out;
  uint64_t x = 12345;
  auto pick = [&](int n) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((x >> 33) % static_cast<uint64_t>(n));
  };
  for (int i = 0; i < lines; ++i) {
    out << subjects[pick(8)] << ' ' << verbs[pick(8)] << ' ' << objects[pick(8)] << tails[pick(8)];
    if (i % 5 == 0) out << " It costs " << (pick(900) + 100) << " dollars in " << (1900 + pick(120)) << ".";
    out << '\n';
  }
  return out.str();
}

// Trains one small tokenizer for the whole suite.
class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("llm_tokenizer_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream((dir_ / "a.txt").string()) << english_text(300);
    std::ofstream((dir_ / "b.txt").string()) << "%\n" << english_text(100) << "%\n";
    model_ = (dir_ / "sub" / "tok.model").string();
    TokenizerTrainOptions opt;
    opt.num_threads = 2;
    opt.skip_line = "%";
    Tokenizer::train({(dir_ / "a.txt").string(), (dir_ / "b.txt").string()}, model_, 400, opt);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static inline fs::path dir_;
  static inline std::string model_;
};

}  // namespace

TEST_F(TokenizerTest, TrainedModelHasLlamaSpecialIds) {
  Tokenizer tok(model_);
  EXPECT_EQ(tok.vocab_size(), 400);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.id_to_piece(3), "<0x00>");  // byte pieces follow the specials
  EXPECT_EQ(tok.id_to_piece(3 + 0x0A), "<0x0A>");
  EXPECT_EQ(tok.model_path(), model_);
  // No temporary files are left next to the model.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "sub"), fs::directory_iterator()), 1);
}

TEST_F(TokenizerTest, RoundTripsEnglishDigitsWhitespaceAndNonAscii) {
  Tokenizer tok(model_);
  const std::vector<std::string> texts = {
      "The quick brown fox jumps over the lazy dog every day.",
      "It costs 1234567 dollars in 2024.",
      "Line one\nLine two\n\n\tindented  with   spaces ",
      "  leading spaces and trailing  ",
      "Grüße aus München — naïve café, 東京, Ελληνικά, emoji 🙂!",
      "x",
      "",
  };
  for (const auto& s : texts) {
    const auto ids = tok.encode(s);
    for (int32_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, tok.vocab_size());
      EXPECT_NE(id, tok.unk_id()) << "byte fallback should make unk unnecessary in: " << s;
    }
    EXPECT_EQ(tok.decode(ids), s);
  }
  // Characters never seen in training go through byte pieces.
  bool saw_byte = false;
  for (int32_t id : tok.encode("東京")) saw_byte |= tok.id_to_piece(id).rfind("<0x", 0) == 0;
  EXPECT_TRUE(saw_byte);
  // Learned merges compress the training language.
  const std::string common = "The cat looks at the river before breakfast.";
  EXPECT_LT(tok.encode(common).size(), common.size() / 2);
}

TEST_F(TokenizerTest, DigitsAreSplit) {
  Tokenizer tok(model_);
  const auto ids = tok.encode("12345 1900");
  int digit_pieces = 0;
  for (int32_t id : ids) {
    const std::string p = tok.id_to_piece(id);
    int digits = 0;
    for (char c : p) digits += (c >= '0' && c <= '9');
    EXPECT_LE(digits, 1) << "piece '" << p << "' holds several digits";
    digit_pieces += digits;
  }
  EXPECT_EQ(digit_pieces, 9);
}

TEST_F(TokenizerTest, SeparatorLinesAreNotLearned) {
  Tokenizer tok(model_);
  // '%' never occurred in training text other than separator lines, so it is
  // not a piece: it falls back to its byte.
  const auto ids = tok.encode("%");
  bool byte = false;
  for (int32_t id : ids) byte |= tok.id_to_piece(id) == "<0x25>";
  EXPECT_TRUE(byte);
}

TEST_F(TokenizerTest, SerializedModelIsTheFileAndLoadsElsewhere) {
  Tokenizer tok(model_);
  const std::string bytes = tok.serialized_model();
  std::ifstream in(model_, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(bytes, file);
  const std::string copy = (dir_ / "copy.model").string();
  std::ofstream(copy, std::ios::binary) << bytes;
  Tokenizer again(copy);
  const std::string s = "A tall stranger paints the market at 7 o'clock.";
  EXPECT_EQ(again.encode(s), tok.encode(s));
}

TEST_F(TokenizerTest, TrainingIsReproducible) {
  const std::string m2 = (dir_ / "again.model").string();
  TokenizerTrainOptions opt;
  opt.num_threads = 2;
  opt.skip_line = "%";
  Tokenizer::train({(dir_ / "a.txt").string(), (dir_ / "b.txt").string()}, m2, 400, opt);
  EXPECT_EQ(Tokenizer(m2).serialized_model(), Tokenizer(model_).serialized_model());
}

TEST_F(TokenizerTest, DecodeRejectsIdsOutsideTheVocabulary) {
  Tokenizer tok(model_);
  EXPECT_THROW(tok.decode({1, 400}), std::runtime_error);
  EXPECT_THROW(tok.decode({-1}), std::runtime_error);
}

TEST(Tokenizer, MissingOrInvalidModelNamesTheFile) {
  const fs::path dir = fs::temp_directory_path() / ("llm_tokenizer_bad_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string missing = (dir / "missing.model").string();
  try {
    Tokenizer t(missing);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no such file"), std::string::npos) << e.what();
  }
  const std::string garbage = (dir / "garbage.model").string();
  std::ofstream(garbage) << "this is not a protobuf";
  try {
    Tokenizer t(garbage);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(garbage), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not a valid SentencePiece model"), std::string::npos)
        << e.what();
  }
  // Training: missing input file, too small a vocabulary.
  try {
    Tokenizer::train({(dir / "nope.txt").string()}, (dir / "t.model").string(), 400);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.txt"), std::string::npos) << e.what();
  }
  std::ofstream((dir / "small.txt").string()) << english_text(20);
  EXPECT_THROW(Tokenizer::train({(dir / "small.txt").string()}, (dir / "t.model").string(), 100),
               std::runtime_error);
  EXPECT_FALSE(fs::exists(dir / "t.model"));
  fs::remove_all(dir);
}
