// The token file pair written by llm-prepare-data and read by llm-train/llm-eval.
//
// PREFIX.bin: the token ids of all documents, concatenated, as a raw
//   little-endian array with no header: uint16 when vocab_size <= 65536,
//   else uint32.
// PREFIX.idx: the metadata, all integers little-endian:
//     offset  size  field
//          0     8  magic "LLMTOKI\0"
//          8     4  uint32 format version (1)
//         12     4  uint32 dtype code: 1 = uint16, 2 = uint32
//         16     8  uint64 vocab size (of the tokenizer the data was made with)
//         24     8  uint64 token count (the .bin holds count × token size bytes)
//         32     8  uint64 number of documents D
//         40     8  uint64 xxHash64 (seed 0) of the .bin file's bytes
//         48   8·D  uint64 document start offsets, in tokens (first is 0, non-decreasing)
//     48+8·D     8  uint64 xxHash64 (seed 0) of the .idx bytes before it
//
// Both files are written under temporary names and renamed when complete
// (.bin first, then .idx), so a crash never leaves a half-written file under
// the final name; a stale .idx next to a new .bin is caught by the checksum.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

namespace llm::data {

enum class TokenDType : uint32_t { U16 = 1, U32 = 2 };

// uint16 when every id of a vocabulary of this size fits (<= 65536), else uint32.
TokenDType token_dtype_for_vocab(int64_t vocab_size);
size_t token_dtype_size(TokenDType dt);
const char* token_dtype_name(TokenDType dt);  // "uint16" / "uint32"

inline constexpr char kTokenIndexMagic[8] = {'L', 'L', 'M', 'T', 'O', 'K', 'I', '\0'};
inline constexpr uint32_t kTokenIndexVersion = 1;

// Writes PREFIX.bin and PREFIX.idx. Documents are appended in order; finish()
// makes the files appear. Destroying an unfinished writer removes its
// temporary files (nothing appears under the final names).
class TokenFileWriter {
 public:
  // vocab_size: size of the tokenizer's vocabulary; every id must be < it.
  // The parent folder of the prefix is created.
  TokenFileWriter(const std::string& prefix, int64_t vocab_size);
  ~TokenFileWriter();
  TokenFileWriter(const TokenFileWriter&) = delete;
  TokenFileWriter& operator=(const TokenFileWriter&) = delete;

  // Appends one document. Throws if an id is outside [0, vocab_size).
  void add_document(std::span<const int32_t> ids);
  // Writes the index, renames both files into place. No more documents after.
  void finish();

  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_documents() const { return static_cast<int64_t>(doc_starts_.size()); }
  TokenDType dtype() const { return dtype_; }
  int64_t vocab_size() const { return vocab_size_; }
  std::string bin_path() const { return prefix_ + ".bin"; }
  std::string idx_path() const { return prefix_ + ".idx"; }

 private:
  void flush_buffer();
  void abandon() noexcept;

  std::string prefix_;
  int64_t vocab_size_;
  TokenDType dtype_;
  std::FILE* bin_ = nullptr;
  std::string bin_tmp_, idx_tmp_;
  std::vector<unsigned char> buffer_;
  void* hash_state_ = nullptr;  // XXH64_state_t*
  int64_t num_tokens_ = 0;
  std::vector<uint64_t> doc_starts_;
  bool finished_ = false;
};

// Read-only view of a token file pair; the .bin is memory-mapped. Thread-safe
// for concurrent reads.
class TokenDataset {
 public:
  // Opens PREFIX.bin / PREFIX.idx and checks them; each problem throws
  // std::runtime_error naming the file: missing file, wrong magic (not a token
  // index), unsupported version or dtype, inconsistent index, .bin size not
  // token count × token size (truncated or from another run), and with
  // verify_checksum the xxHash64 of the .bin (corruption).
  explicit TokenDataset(const std::string& prefix, bool verify_checksum = true);
  ~TokenDataset();
  TokenDataset(TokenDataset&&) noexcept;
  TokenDataset& operator=(TokenDataset&&) noexcept;
  TokenDataset(const TokenDataset&) = delete;
  TokenDataset& operator=(const TokenDataset&) = delete;

  int64_t size() const { return num_tokens_; }  // tokens
  int64_t vocab_size() const { return vocab_size_; }
  TokenDType dtype() const { return dtype_; }
  int64_t num_documents() const { return static_cast<int64_t>(doc_starts_.size()); }
  int64_t document_start(int64_t i) const;  // in tokens
  int64_t document_end(int64_t i) const;    // start of i+1, or size()
  const std::string& prefix() const { return prefix_; }
  std::string bin_path() const { return prefix_ + ".bin"; }
  std::string idx_path() const { return prefix_ + ".idx"; }
  uint64_t checksum() const { return bin_hash_; }  // xxHash64 of the .bin, from the index
  // Identity of the data: a hash of the token count, vocab size, dtype and
  // .bin checksum. Equal fingerprints mean the same tokens.
  uint64_t fingerprint() const;

  int32_t token(int64_t i) const;  // bounds-checked
  // Copies tokens [begin, begin+count) into out; throws std::out_of_range
  // (naming the file) if the range is not inside [0, size()).
  void read(int64_t begin, int64_t count, int32_t* out) const;

  // Largest token id in the file (a full scan; cached). -1 when empty.
  int64_t max_token_id() const;
  // Throws if the file's tokens may lie beyond a model vocabulary of
  // `model_vocab` ids: the recorded tokenizer vocab size exceeds it.
  // With full_scan, also scans the tokens (catches ids >= model_vocab even
  // when the index claims a small vocabulary).
  void check_vocab(int64_t model_vocab, bool full_scan = false) const;

 private:
  std::string prefix_;
  int64_t num_tokens_ = 0;
  int64_t vocab_size_ = 0;
  TokenDType dtype_ = TokenDType::U16;
  uint64_t bin_hash_ = 0;
  std::vector<uint64_t> doc_starts_;
  const unsigned char* data_ = nullptr;
  size_t mapped_bytes_ = 0;
  mutable std::atomic<int64_t> max_id_cache_{-2};  // -2: not computed yet
};

}  // namespace llm::data
