#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unistd.h>

// Exported by libsentencepiece but declared only in its private headers.
namespace sentencepiece {
void SetRandomGeneratorSeed(unsigned int seed);
namespace logging {
int GetMinLogLevel();
void SetMinLogLevel(int v);
}  // namespace logging
}  // namespace sentencepiece

namespace llm::data {
namespace fs = std::filesystem;

namespace {

// Feeds the lines of several files to the SentencePiece trainer, skipping
// empty lines and lines equal to `skip_line` (document separators).
class FileLineIterator : public sentencepiece::SentenceIterator {
 public:
  FileLineIterator(const std::vector<std::string>& files, std::string skip_line)
      : files_(files), skip_line_(std::move(skip_line)) {
    Next();
  }
  bool done() const override { return done_; }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return status_; }
  void Next() override {
    while (true) {
      if (in_.is_open() && std::getline(in_, line_)) {
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        if (line_.empty() || (!skip_line_.empty() && line_ == skip_line_)) continue;
        return;
      }
      if (in_.is_open()) {
        if (in_.bad()) {
          status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kDataLoss,
                                                "read error in '" + files_[next_ - 1] + "'");
          done_ = true;
          return;
        }
        in_.close();
      }
      if (next_ >= files_.size()) {
        done_ = true;
        return;
      }
      in_.clear();
      in_.open(files_[next_++], std::ios::binary);
      if (!in_) {
        status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kNotFound,
                                              "cannot open '" + files_[next_ - 1] + "'");
        done_ = true;
        return;
      }
    }
  }

 private:
  const std::vector<std::string>& files_;
  std::string skip_line_;
  size_t next_ = 0;
  std::ifstream in_;
  std::string line_;
  bool done_ = false;
  sentencepiece::util::Status status_;
};

std::mutex g_train_mutex;  // the trainer's log level and RNG seed are global

}  // namespace

void Tokenizer::train(const std::vector<std::string>& text_files, const std::string& model_path,
                      int vocab_size, const TokenizerTrainOptions& options) {
  const std::string what = "tokenizer model '" + model_path + "'";
  if (text_files.empty())
    throw std::runtime_error(what + ": no text files to train on; pass at least one input file");
  for (const auto& f : text_files) {
    std::error_code ec;
    if (!fs::is_regular_file(f, ec))
      throw std::runtime_error("tokenizer training input '" + f +
                               "': not a readable regular file; check the --input paths");
  }
  // 3 special pieces + 256 byte pieces are always in the vocabulary.
  if (vocab_size < 300)
    throw std::runtime_error(what + ": --vocab-size " + std::to_string(vocab_size) +
                             " is too small: the vocabulary holds 3 special and 256 byte pieces "
                             "before any learned piece; use at least 300 (e.g. 4096)");
  if (!(options.character_coverage > 0.0 && options.character_coverage <= 1.0))
    throw std::runtime_error(what + ": character_coverage must be in (0, 1]");
  const int threads = options.num_threads > 0
                          ? options.num_threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  const fs::path out(model_path);
  if (out.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(out.parent_path(), ec);
    if (ec)
      throw std::runtime_error(what + ": cannot create folder '" + out.parent_path().string() +
                               "': " + ec.message());
  }

  std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", std::to_string(options.character_coverage)},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"input_sentence_size", std::to_string(options.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(threads)},
      {"hard_vocab_limit", "false"},
      {"minloglevel", options.verbose ? "0" : "2"},
  };

  std::string serialized;
  {
    std::lock_guard<std::mutex> lock(g_train_mutex);
    const int old_level = sentencepiece::logging::GetMinLogLevel();
    sentencepiece::SetRandomGeneratorSeed(1234);  // reproducible sentence sampling
    FileLineIterator it(text_files, options.skip_line);
    const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &serialized);
    sentencepiece::logging::SetMinLogLevel(old_level);
    if (!status.ok())
      throw std::runtime_error(what + ": SentencePiece training failed: " + status.ToString() +
                               " (check that the inputs hold enough text for --vocab-size " +
                               std::to_string(vocab_size) + ")");
  }
  if (serialized.empty())
    throw std::runtime_error(what + ": SentencePiece training produced no model");

  const std::string tmp = model_path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(serialized.data(), static_cast<std::streamsize>(serialized.size()));
    f.close();
    if (!f) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw std::runtime_error(what + ": cannot write '" + tmp +
                               "': check the folder exists and is writable");
    }
  }
  std::error_code ec;
  fs::rename(tmp, model_path, ec);
  if (ec)
    throw std::runtime_error(what + ": cannot rename '" + tmp + "' to it: " + ec.message());
}

Tokenizer::Tokenizer(const std::string& model_path)
    : model_path_(model_path), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  std::error_code ec;
  if (!fs::exists(model_path, ec))
    throw std::runtime_error("tokenizer model '" + model_path +
                             "': no such file; pass the .model file written by llm-prepare-data "
                             "(--tokenizer-model), or train one with llm-prepare-data --vocab-size N");
  if (!fs::is_regular_file(model_path, ec))
    throw std::runtime_error("tokenizer model '" + model_path +
                             "': not a regular file; pass a SentencePiece .model file");
  const auto status = sp_->Load(model_path);
  if (!status.ok())
    throw std::runtime_error("tokenizer model '" + model_path +
                             "': not a valid SentencePiece model (" + status.ToString() +
                             "); pass the .model file written by llm-prepare-data");
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  if (!status.ok())
    throw std::runtime_error("tokenizer model '" + model_path_ + "': encode failed: " +
                             status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const int n = sp_->GetPieceSize();
  for (int32_t id : ids)
    if (id < 0 || id >= n)
      throw std::runtime_error("tokenizer model '" + model_path_ + "': cannot decode token id " +
                               std::to_string(id) + ": outside the vocabulary [0, " +
                               std::to_string(n) + ")");
  std::string text;
  const auto status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!status.ok())
    throw std::runtime_error("tokenizer model '" + model_path_ + "': decode failed: " +
                             status.ToString());
  return text;
}

std::string Tokenizer::id_to_piece(int32_t id) const {
  if (id < 0 || id >= sp_->GetPieceSize())
    throw std::runtime_error("tokenizer model '" + model_path_ + "': token id " +
                             std::to_string(id) + " is outside the vocabulary");
  return sp_->IdToPiece(id);
}

int32_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int32_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int32_t Tokenizer::eos_id() const { return sp_->eos_id(); }
int32_t Tokenizer::unk_id() const { return sp_->unk_id(); }

std::string Tokenizer::serialized_model() const { return sp_->serialized_model_proto(); }

}  // namespace llm::data
