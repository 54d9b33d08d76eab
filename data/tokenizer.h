// SentencePiece tokenizer: training (BPE with byte fallback, as LLaMA) and
// encode/decode.
//
//   Tokenizer::train({"corpus.txt"}, "tok.model", 4096);
//   Tokenizer tok("tok.model");
//   std::vector<int32_t> ids = tok.encode("Hello");   // no BOS/EOS added
//   std::string text = tok.decode(ids);               // == "Hello"
//
// Ids: unk 0, bos 1, eos 2, no pad piece; then the 256 byte pieces <0x00>..<0xFF>
// (byte fallback: any UTF-8 text, including characters never seen in training,
// encodes and decodes losslessly), then the learned merges. The normaliser is
// the identity (no NFKC, no whitespace folding), so decode(encode(s)) == s for
// valid UTF-8 s; SentencePiece's dummy prefix (a "▁" in front of the text, as
// LLaMA) is removed again by decode.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace llm::data {

struct TokenizerTrainOptions {
  // Number of trainer threads; 0 = hardware concurrency.
  int num_threads = 0;
  // At most this many sentences (lines) are sampled from the input for
  // training (SentencePiece input_sentence_size); 0 = all.
  int64_t input_sentence_size = 2'000'000;
  // Fraction of characters the vocabulary must cover; the rest go through
  // byte fallback. 0.9995 is LLaMA's value for multilingual text, 1.0 for
  // small corpora.
  double character_coverage = 0.9995;
  // Lines equal to this string (e.g. the fortune separator "%") are not used
  // for training; empty = none.
  std::string skip_line;
  // Print SentencePiece's training log to stderr.
  bool verbose = false;
};

class Tokenizer {
 public:
  // Trains a SentencePiece BPE model on the lines of `text_files` and writes it
  // to `model_path` (written to a temporary name, then renamed, so a crash
  // leaves no half model; the parent folder is created). Throws
  // std::runtime_error naming the file on a failure.
  static void train(const std::vector<std::string>& text_files, const std::string& model_path,
                    int vocab_size, const TokenizerTrainOptions& options = {});

  // Loads a model file. Throws std::runtime_error naming the file if it is
  // missing or not a SentencePiece model.
  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Thread-safe (const): several threads may encode at once.
  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  // The piece string of one id (e.g. "▁the", "<0x0A>").
  std::string id_to_piece(int32_t id) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t unk_id() const;
  const std::string& model_path() const { return model_path_; }
  // The model file's bytes (a serialized ModelProto), for checkpoints and
  // exports to copy: writing them to a file gives a loadable model.
  std::string serialized_model() const;

 private:
  std::string model_path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace llm::data
