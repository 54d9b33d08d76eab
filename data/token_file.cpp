#include "data/token_file.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static_assert(std::endian::native == std::endian::little,
              "the token file format is little-endian; this reader assumes a little-endian host");

namespace llm::data {
namespace fs = std::filesystem;

namespace {

constexpr size_t kHeaderBytes = 48;  // magic .. bin checksum
constexpr size_t kWriteBuffer = 1 << 20;

std::string q(const std::string& s) { return "'" + s + "'"; }

const char* kRegenerate = "regenerate it with llm-prepare-data";

template <typename T>
void put(std::vector<unsigned char>& out, T v) {
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

template <typename T>
T get(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

TokenDType token_dtype_for_vocab(int64_t vocab_size) {
  return vocab_size <= 65536 ? TokenDType::U16 : TokenDType::U32;
}

size_t token_dtype_size(TokenDType dt) { return dt == TokenDType::U16 ? 2 : 4; }

const char* token_dtype_name(TokenDType dt) { return dt == TokenDType::U16 ? "uint16" : "uint32"; }

// ---------------------------------------------------------------- writer ----

TokenFileWriter::TokenFileWriter(const std::string& prefix, int64_t vocab_size)
    : prefix_(prefix), vocab_size_(vocab_size), dtype_(token_dtype_for_vocab(vocab_size)) {
  if (prefix.empty())
    throw std::runtime_error("token file output prefix is empty: pass --output-prefix PREFIX");
  if (vocab_size <= 0 || vocab_size > (int64_t{1} << 32))
    throw std::runtime_error("token file " + q(prefix + ".bin") + ": vocab size " +
                             std::to_string(vocab_size) + " is outside [1, 2^32]");
  const fs::path p(prefix);
  if (p.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    if (ec)
      throw std::runtime_error("token file " + q(prefix + ".bin") +
                               ": cannot create folder " + q(p.parent_path().string()) +
                               ": " + ec.message());
  }
  const std::string tag = ".tmp" + std::to_string(::getpid());
  bin_tmp_ = prefix + ".bin" + tag;
  idx_tmp_ = prefix + ".idx" + tag;
  bin_ = std::fopen(bin_tmp_.c_str(), "wb");
  if (!bin_)
    throw std::runtime_error("token file " + q(bin_tmp_) + ": cannot create it (" +
                             std::strerror(errno) + "); check that the folder is writable");
  auto* st = XXH64_createState();
  XXH64_reset(st, 0);
  hash_state_ = st;
  buffer_.reserve(kWriteBuffer + 4096);
}

TokenFileWriter::~TokenFileWriter() {
  if (!finished_) abandon();
  if (hash_state_) XXH64_freeState(static_cast<XXH64_state_t*>(hash_state_));
}

void TokenFileWriter::abandon() noexcept {
  if (bin_) {
    std::fclose(bin_);
    bin_ = nullptr;
  }
  std::error_code ec;
  fs::remove(bin_tmp_, ec);
  fs::remove(idx_tmp_, ec);
}

void TokenFileWriter::flush_buffer() {
  if (buffer_.empty()) return;
  XXH64_update(static_cast<XXH64_state_t*>(hash_state_), buffer_.data(), buffer_.size());
  if (std::fwrite(buffer_.data(), 1, buffer_.size(), bin_) != buffer_.size())
    throw std::runtime_error("token file " + q(bin_tmp_) + ": write failed (" +
                             std::strerror(errno) + "); check free disk space");
  buffer_.clear();
}

void TokenFileWriter::add_document(std::span<const int32_t> ids) {
  if (finished_)
    throw std::logic_error("TokenFileWriter::add_document after finish() for " +
                           q(prefix_ + ".bin"));
  for (int32_t id : ids)
    if (id < 0 || static_cast<int64_t>(id) >= vocab_size_)
      throw std::runtime_error("token file " + q(prefix_ + ".bin") + ": token id " +
                               std::to_string(id) + " in document " +
                               std::to_string(doc_starts_.size()) + " is outside the vocabulary [0, " +
                               std::to_string(vocab_size_) +
                               "); the tokenizer and the vocab size given to the writer disagree");
  doc_starts_.push_back(static_cast<uint64_t>(num_tokens_));
  if (dtype_ == TokenDType::U16) {
    for (int32_t id : ids) put<uint16_t>(buffer_, static_cast<uint16_t>(id));
  } else {
    for (int32_t id : ids) put<uint32_t>(buffer_, static_cast<uint32_t>(id));
  }
  num_tokens_ += static_cast<int64_t>(ids.size());
  if (buffer_.size() >= kWriteBuffer) flush_buffer();
}

void TokenFileWriter::finish() {
  if (finished_) return;
  try {
    flush_buffer();
    if (std::fflush(bin_) != 0 || ::fsync(::fileno(bin_)) != 0)
      throw std::runtime_error("token file " + q(bin_tmp_) + ": flush failed (" +
                               std::strerror(errno) + "); check free disk space");
    if (std::fclose(bin_) != 0) {
      bin_ = nullptr;
      throw std::runtime_error("token file " + q(bin_tmp_) + ": close failed (" +
                               std::strerror(errno) + ")");
    }
    bin_ = nullptr;
    const uint64_t bin_hash = XXH64_digest(static_cast<XXH64_state_t*>(hash_state_));

    std::vector<unsigned char> idx;
    idx.reserve(kHeaderBytes + 8 * doc_starts_.size() + 8);
    idx.insert(idx.end(), kTokenIndexMagic, kTokenIndexMagic + 8);
    put<uint32_t>(idx, kTokenIndexVersion);
    put<uint32_t>(idx, static_cast<uint32_t>(dtype_));
    put<uint64_t>(idx, static_cast<uint64_t>(vocab_size_));
    put<uint64_t>(idx, static_cast<uint64_t>(num_tokens_));
    put<uint64_t>(idx, static_cast<uint64_t>(doc_starts_.size()));
    put<uint64_t>(idx, bin_hash);
    for (uint64_t s : doc_starts_) put<uint64_t>(idx, s);
    put<uint64_t>(idx, XXH64(idx.data(), idx.size(), 0));

    std::FILE* f = std::fopen(idx_tmp_.c_str(), "wb");
    if (!f)
      throw std::runtime_error("token file " + q(idx_tmp_) + ": cannot create it (" +
                               std::strerror(errno) + ")");
    const bool ok = std::fwrite(idx.data(), 1, idx.size(), f) == idx.size() &&
                    std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
    const bool closed = std::fclose(f) == 0;
    if (!ok || !closed)
      throw std::runtime_error("token file " + q(idx_tmp_) + ": write failed (" +
                               std::strerror(errno) + "); check free disk space");

    std::error_code ec;
    fs::rename(bin_tmp_, prefix_ + ".bin", ec);
    if (ec)
      throw std::runtime_error("token file " + q(prefix_ + ".bin") + ": cannot rename " +
                               q(bin_tmp_) + " to it: " + ec.message());
    fs::rename(idx_tmp_, prefix_ + ".idx", ec);
    if (ec)
      throw std::runtime_error("token file " + q(prefix_ + ".idx") + ": cannot rename " +
                               q(idx_tmp_) + " to it: " + ec.message());
  } catch (...) {
    abandon();
    finished_ = true;
    throw;
  }
  finished_ = true;
}

// ---------------------------------------------------------------- reader ----

TokenDataset::TokenDataset(const std::string& prefix, bool verify_checksum) : prefix_(prefix) {
  const std::string bin = bin_path(), idx = idx_path();
  auto suffix_hint = [&]() -> std::string {
    if (prefix.size() > 4 && (prefix.ends_with(".bin") || prefix.ends_with(".idx")))
      return " (the data path is a prefix: drop the " + prefix.substr(prefix.size() - 4) +
             " suffix, e.g. --data-path " + prefix.substr(0, prefix.size() - 4) + ")";
    return "";
  };
  std::error_code ec;
  if (!fs::exists(idx, ec))
    throw std::runtime_error("data index " + q(idx) +
                             ": no such file; the data path PREFIX names PREFIX.bin and PREFIX.idx "
                             "written by llm-prepare-data --output-prefix PREFIX" +
                             suffix_hint());
  if (!fs::exists(bin, ec))
    throw std::runtime_error("data file " + q(bin) + ": no such file (its index " +
                             q(idx) + " exists); " + kRegenerate + suffix_hint());

  // ---- the index
  std::vector<unsigned char> h;
  {
    std::ifstream in(idx, std::ios::binary);
    if (!in)
      throw std::runtime_error("data index " + q(idx) + ": cannot open it (" +
                               std::strerror(errno) + ")");
    h.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad())
      throw std::runtime_error("data index " + q(idx) + ": read error");
  }
  if (h.size() < 8 || std::memcmp(h.data(), kTokenIndexMagic, 8) != 0)
    throw std::runtime_error("data index " + q(idx) +
                             ": wrong magic number, this is not a token index written by "
                             "llm-prepare-data (a foreign or corrupted file); " +
                             kRegenerate);
  if (h.size() < kHeaderBytes + 8)
    throw std::runtime_error("data index " + q(idx) + ": truncated (" +
                             std::to_string(h.size()) + " bytes); " + kRegenerate);
  const uint32_t version = get<uint32_t>(h.data() + 8);
  if (version != kTokenIndexVersion)
    throw std::runtime_error("data index " + q(idx) + ": format version " +
                             std::to_string(version) + " is not supported (this build reads version " +
                             std::to_string(kTokenIndexVersion) +
                             "); regenerate it with this build's llm-prepare-data");
  const uint32_t dt = get<uint32_t>(h.data() + 12);
  if (dt != static_cast<uint32_t>(TokenDType::U16) && dt != static_cast<uint32_t>(TokenDType::U32))
    throw std::runtime_error("data index " + q(idx) + ": unknown dtype code " +
                             std::to_string(dt) + " (1 = uint16, 2 = uint32); " + kRegenerate);
  dtype_ = static_cast<TokenDType>(dt);
  const uint64_t vocab = get<uint64_t>(h.data() + 16);
  const uint64_t ntok = get<uint64_t>(h.data() + 24);
  const uint64_t ndoc = get<uint64_t>(h.data() + 32);
  bin_hash_ = get<uint64_t>(h.data() + 40);
  if (ndoc > (h.size() - kHeaderBytes) / 8 || h.size() != kHeaderBytes + 8 * ndoc + 8)
    throw std::runtime_error("data index " + q(idx) + ": size " + std::to_string(h.size()) +
                             " bytes does not match its document count " + std::to_string(ndoc) +
                             " (truncated or corrupted); " + kRegenerate);
  const uint64_t idx_hash = get<uint64_t>(h.data() + h.size() - 8);
  if (XXH64(h.data(), h.size() - 8, 0) != idx_hash)
    throw std::runtime_error("data index " + q(idx) +
                             ": checksum mismatch, the index is corrupted; " + kRegenerate);
  if (vocab == 0 || vocab > (uint64_t{1} << 32) ||
      (dtype_ == TokenDType::U16) != (vocab <= 65536))
    throw std::runtime_error("data index " + q(idx) + ": vocab size " + std::to_string(vocab) +
                             " is inconsistent with dtype " + token_dtype_name(dtype_) + "; " +
                             kRegenerate);
  if (ntok > (uint64_t{1} << 62))
    throw std::runtime_error("data index " + q(idx) + ": implausible token count " +
                             std::to_string(ntok) + "; " + kRegenerate);
  vocab_size_ = static_cast<int64_t>(vocab);
  num_tokens_ = static_cast<int64_t>(ntok);
  doc_starts_.resize(ndoc);
  for (uint64_t i = 0; i < ndoc; ++i) {
    doc_starts_[i] = get<uint64_t>(h.data() + kHeaderBytes + 8 * i);
    if ((i == 0 && doc_starts_[0] != 0) || (i > 0 && doc_starts_[i] < doc_starts_[i - 1]) ||
        doc_starts_[i] > ntok)
      throw std::runtime_error("data index " + q(idx) + ": document start " +
                               std::to_string(doc_starts_[i]) + " of document " + std::to_string(i) +
                               " is out of order or beyond the token count; " + kRegenerate);
  }

  // ---- the tokens
  const size_t tsize = token_dtype_size(dtype_);
  const int fd = ::open(bin.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw std::runtime_error("data file " + q(bin) + ": cannot open it (" +
                             std::strerror(errno) + ")");
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error("data file " + q(bin) + ": not a regular file");
  }
  const uint64_t want = ntok * tsize;
  const uint64_t have = static_cast<uint64_t>(st.st_size);
  if (have != want) {
    ::close(fd);
    std::string why;
    if (have % tsize != 0)
      why = "size " + std::to_string(have) + " bytes is not a multiple of the token size " +
            std::to_string(tsize) + " (" + token_dtype_name(dtype_) + ")";
    else
      why = "size " + std::to_string(have) + " bytes holds " + std::to_string(have / tsize) +
            " tokens but its index " + q(idx) + " records " + std::to_string(ntok) + " (" +
            std::to_string(want) + " bytes)";
    throw std::runtime_error("data file " + q(bin) + ": " + why +
                             ": the file is truncated or does not belong to this index; " +
                             kRegenerate);
  }
  if (want > 0) {
    void* p = ::mmap(nullptr, want, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error("data file " + q(bin) + ": mmap failed (" +
                               std::strerror(err) + ")");
    }
    data_ = static_cast<const unsigned char*>(p);
    mapped_bytes_ = want;
  }
  ::close(fd);

  if (verify_checksum) {
    const uint64_t got = XXH64(data_, mapped_bytes_, 0);
    if (got != bin_hash_) {
      ::munmap(const_cast<unsigned char*>(data_), mapped_bytes_);
      data_ = nullptr;
      throw std::runtime_error("data file " + q(bin) +
                               ": checksum mismatch (xxHash64 of the file does not match the one "
                               "recorded in " + q(idx) +
                               "): the file is corrupted or was replaced; " + kRegenerate);
    }
  }
}

TokenDataset::~TokenDataset() {
  if (data_) ::munmap(const_cast<unsigned char*>(data_), mapped_bytes_);
}

TokenDataset::TokenDataset(TokenDataset&& o) noexcept
    : prefix_(std::move(o.prefix_)),
      num_tokens_(o.num_tokens_),
      vocab_size_(o.vocab_size_),
      dtype_(o.dtype_),
      bin_hash_(o.bin_hash_),
      doc_starts_(std::move(o.doc_starts_)),
      data_(std::exchange(o.data_, nullptr)),
      mapped_bytes_(std::exchange(o.mapped_bytes_, 0)),
      max_id_cache_(o.max_id_cache_.load()) {
  o.num_tokens_ = 0;
}

TokenDataset& TokenDataset::operator=(TokenDataset&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), mapped_bytes_);
    prefix_ = std::move(o.prefix_);
    num_tokens_ = std::exchange(o.num_tokens_, 0);
    vocab_size_ = o.vocab_size_;
    dtype_ = o.dtype_;
    bin_hash_ = o.bin_hash_;
    doc_starts_ = std::move(o.doc_starts_);
    data_ = std::exchange(o.data_, nullptr);
    mapped_bytes_ = std::exchange(o.mapped_bytes_, 0);
    max_id_cache_ = o.max_id_cache_.load();
  }
  return *this;
}

uint64_t TokenDataset::fingerprint() const {
  uint64_t h = mix64(bin_hash_);
  h = mix64(h ^ static_cast<uint64_t>(num_tokens_));
  h = mix64(h ^ static_cast<uint64_t>(vocab_size_));
  h = mix64(h ^ static_cast<uint64_t>(dtype_));
  return h;
}

int64_t TokenDataset::document_start(int64_t i) const {
  if (i < 0 || i >= num_documents())
    throw std::out_of_range("data file " + q(bin_path()) + ": document " + std::to_string(i) +
                            " out of range [0, " + std::to_string(num_documents()) + ")");
  return static_cast<int64_t>(doc_starts_[static_cast<size_t>(i)]);
}

int64_t TokenDataset::document_end(int64_t i) const {
  if (i < 0 || i >= num_documents())
    throw std::out_of_range("data file " + q(bin_path()) + ": document " + std::to_string(i) +
                            " out of range [0, " + std::to_string(num_documents()) + ")");
  return i + 1 < num_documents() ? static_cast<int64_t>(doc_starts_[static_cast<size_t>(i + 1)])
                                 : num_tokens_;
}

int32_t TokenDataset::token(int64_t i) const {
  if (i < 0 || i >= num_tokens_)
    throw std::out_of_range("data file " + q(bin_path()) + ": token index " +
                            std::to_string(i) + " out of range [0, " + std::to_string(num_tokens_) +
                            ")");
  if (dtype_ == TokenDType::U16) return get<uint16_t>(data_ + 2 * i);
  return static_cast<int32_t>(get<uint32_t>(data_ + 4 * i));
}

void TokenDataset::read(int64_t begin, int64_t count, int32_t* out) const {
  if (begin < 0 || count < 0 || begin > num_tokens_ || count > num_tokens_ - begin)
    throw std::out_of_range("data file " + q(bin_path()) + ": read of tokens [" +
                            std::to_string(begin) + ", " + std::to_string(begin + count) +
                            ") is outside [0, " + std::to_string(num_tokens_) + ")");
  if (dtype_ == TokenDType::U16) {
    const unsigned char* p = data_ + 2 * begin;
    for (int64_t i = 0; i < count; ++i) out[i] = get<uint16_t>(p + 2 * i);
  } else {
    const unsigned char* p = data_ + 4 * begin;
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<int32_t>(get<uint32_t>(p + 4 * i));
  }
}

int64_t TokenDataset::max_token_id() const {
  int64_t cached = max_id_cache_.load(std::memory_order_relaxed);
  if (cached != -2) return cached;
  int64_t m = -1;
  if (dtype_ == TokenDType::U16) {
    uint16_t mx = 0;
    for (int64_t i = 0; i < num_tokens_; ++i) mx = std::max(mx, get<uint16_t>(data_ + 2 * i));
    if (num_tokens_ > 0) m = mx;
  } else {
    uint32_t mx = 0;
    for (int64_t i = 0; i < num_tokens_; ++i) mx = std::max(mx, get<uint32_t>(data_ + 4 * i));
    if (num_tokens_ > 0) m = mx;
  }
  max_id_cache_.store(m, std::memory_order_relaxed);
  return m;
}

void TokenDataset::check_vocab(int64_t model_vocab, bool full_scan) const {
  if (vocab_size_ > model_vocab)
    throw std::runtime_error(
        "data file " + q(bin_path()) + ": it was tokenized with a vocabulary of " +
        std::to_string(vocab_size_) + " ids but the model's vocabulary has " +
        std::to_string(model_vocab) + ": token ids up to " + std::to_string(vocab_size_ - 1) +
        " would index past the embedding; set --vocab-size to at least " +
        std::to_string(vocab_size_) + " or use the tokenizer (--tokenizer-model) the data was "
        "prepared with");
  if (full_scan) {
    const int64_t m = max_token_id();
    if (m >= model_vocab)
      throw std::runtime_error("data file " + q(bin_path()) + ": holds token id " +
                               std::to_string(m) + " but the model's vocabulary has " +
                               std::to_string(model_vocab) + " ids; set --vocab-size to at least " +
                               std::to_string(m + 1) + " or regenerate the data with the model's "
                               "tokenizer (--tokenizer-model)");
  }
}

}  // namespace llm::data
