// llm-prepare-data: tokenizes text files (or folders of them) into the token
// file pair PREFIX.bin / PREFIX.idx (see data/token_file.h), training a
// SentencePiece BPE tokenizer first when asked to.
#include <boost/program_options.hpp>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fnmatch.h>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "core/random.h"
#include "data/token_file.h"
#include "data/tokenizer.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using llm::data::TokenFileWriter;
using llm::data::Tokenizer;

namespace {

const char* kProg = "llm-prepare-data";

const char* kDescription = R"(Usage: llm-prepare-data --input PATH [PATH ...] --tokenizer-model FILE --output-prefix PREFIX [options]

Tokenizes UTF-8 text into PREFIX.bin (token ids, raw little-endian uint16 when
the vocabulary has <= 65536 ids, else uint32) and PREFIX.idx (magic, version,
dtype, vocab size, token count, document starts, xxHash64 of the .bin).

Inputs: each --input is a text file or a folder. Folders are walked
recursively in sorted path order; inside folders these are skipped (and
counted in the summary):
  - hidden files and folders (names starting with '.'),
  - anything that is not a regular file after following symlinks,
  - files whose name does not match --include (when given) or matches --exclude,
  - binary files (a NUL byte in the first 64 KiB, e.g. fortune's .dat indexes),
  - duplicates: a file whose resolved path or whose content equals one already
    taken (e.g. fortune's .u8 symlinks), unless --keep-duplicates.
Files named directly are always read (an error if binary).

Documents: a whole file, or with --document-separator LINE the text between
lines equal to LINE (fortune files use "%"). Trailing newlines are stripped,
empty documents dropped. Each document is written as BOS + ids (+ EOS).
Text should be UTF-8: invalid byte sequences are encoded as U+FFFD.

Tokenizer: if --tokenizer-model does not exist and --vocab-size is given, a
SentencePiece BPE model with byte fallback (LLaMA style: unk 0, bos 1, eos 2,
digits split, identity normalisation) is first trained on the inputs
(separator lines left out) and written there.

Example (the Debian 'fortunes' package):
  llm-prepare-data --input /usr/share/games/fortunes --document-separator % \
      --tokenizer-model runs/data/fortunes.model --vocab-size 4096 \
      --output-prefix runs/data/fortunes

Options)";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::vector<std::string> inputs;
  std::string tokenizer_model;
  std::string output_prefix;
  int64_t vocab_size = 0;  // 0: not given
  std::string separator;
  bool append_eos = true;
  int threads = 1;
  std::vector<std::string> include, exclude;
  bool keep_duplicates = false;
  double character_coverage = 0.9995;
  int64_t train_sentences = 2'000'000;
  bool verbose = false;
  int64_t random_tokens = 0;  // > 0: write this many uniform random ids instead (benchmarks)
  uint64_t seed = 1234;
};

struct InputFile {
  std::string path;
  uint64_t bytes = 0;
};

struct Skipped {
  int64_t hidden = 0, not_regular = 0, filtered = 0, binary = 0, duplicate = 0;
  int64_t total() const { return hidden + not_regular + filtered + binary + duplicate; }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string mb(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f MB", bytes / 1e6);
  return b;
}

bool glob_any(const std::vector<std::string>& globs, const std::string& name) {
  for (const auto& g : globs)
    if (::fnmatch(g.c_str(), name.c_str(), 0) == 0) return true;
  return false;
}

// True if the first 64 KiB hold a NUL byte; also hashes the whole file when
// `hash` is non-null.
bool looks_binary(const std::string& path, uint64_t* hash) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("--input file '" + path + "': cannot open it");
  std::vector<char> buf(1 << 16);
  XXH64_state_t* st = hash ? XXH64_createState() : nullptr;
  if (st) XXH64_reset(st, 0);
  bool first = true, binary = false;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<size_t>(in.gcount());
    if (first && std::find(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n), '\0') !=
                     buf.begin() + static_cast<std::ptrdiff_t>(n))
      binary = true;
    first = false;
    if (!st) break;
    XXH64_update(st, buf.data(), n);
  }
  if (in.bad()) {
    if (st) XXH64_freeState(st);
    throw std::runtime_error("--input file '" + path + "': read error");
  }
  if (st) {
    *hash = XXH64_digest(st);
    XXH64_freeState(st);
  }
  return binary;
}

std::vector<InputFile> collect_inputs(const Options& o, Skipped& skipped) {
  std::vector<InputFile> files;
  std::set<std::string> seen_paths;
  std::unordered_set<uint64_t> seen_content;

  auto take = [&](const fs::path& p, bool explicit_file) {
    std::error_code ec;
    const std::string canon = fs::weakly_canonical(p, ec).string();
    const std::string key = ec ? p.string() : canon;
    if (!o.keep_duplicates && seen_paths.count(key)) {
      ++skipped.duplicate;
      return;
    }
    uint64_t h = 0;
    const bool binary = looks_binary(p.string(), o.keep_duplicates ? nullptr : &h);
    if (binary) {
      if (explicit_file)
        throw std::runtime_error("--input '" + p.string() +
                                 "': looks like a binary file (it contains NUL bytes); pass text "
                                 "files (UTF-8)");
      ++skipped.binary;
      return;
    }
    const uint64_t size = fs::file_size(p, ec);
    if (!o.keep_duplicates) {
      const uint64_t content_key = h ^ (size * 0x9E3779B97F4A7C15ull);
      if (!seen_content.insert(content_key).second) {
        ++skipped.duplicate;
        return;
      }
      seen_paths.insert(key);
    }
    files.push_back({p.string(), size});
  };

  for (const auto& in : o.inputs) {
    std::error_code ec;
    const fs::path p(in);
    const auto st = fs::status(p, ec);
    if (!fs::exists(st))
      throw std::runtime_error("--input '" + in + "': no such file or folder");
    if (fs::is_regular_file(st)) {
      take(p, true);
      continue;
    }
    if (!fs::is_directory(st))
      throw std::runtime_error("--input '" + in + "': not a regular file or folder");
    std::vector<fs::path> found;
    fs::recursive_directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end;
    if (ec) throw std::runtime_error("--input '" + in + "': cannot list the folder: " + ec.message());
    for (; it != end; it.increment(ec)) {
      if (ec) throw std::runtime_error("--input '" + in + "': cannot list the folder: " + ec.message());
      const std::string name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {
        if (it->is_directory(ec)) it.disable_recursion_pending();
        ++skipped.hidden;
        continue;
      }
      if (it->is_directory(ec)) continue;
      if (!it->is_regular_file(ec)) {  // follows symlinks
        ++skipped.not_regular;
        continue;
      }
      if ((!o.include.empty() && !glob_any(o.include, name)) || glob_any(o.exclude, name)) {
        ++skipped.filtered;
        continue;
      }
      found.push_back(it->path());
    }
    std::sort(found.begin(), found.end());
    for (const auto& f : found) take(f, false);
  }
  if (files.empty())
    throw std::runtime_error("--input: no text files found in " + std::to_string(o.inputs.size()) +
                             " input path(s) (" + std::to_string(skipped.total()) +
                             " skipped: binary, hidden, filtered, duplicate or not regular); "
                             "check the paths and --include/--exclude");
  return files;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("--input file '" + path + "': cannot open it");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error("--input file '" + path + "': read error");
  return std::move(ss).str();
}

void strip_and_add(std::string doc, std::vector<std::string>& docs) {
  while (!doc.empty() && (doc.back() == '\n' || doc.back() == '\r')) doc.pop_back();
  if (doc.find_first_not_of(" \t\r\n\f\v") == std::string::npos) return;
  docs.push_back(std::move(doc));
}

// Splits a file's text into documents.
void split_documents(const std::string& text, const std::string& sep, std::vector<std::string>& docs) {
  if (sep.empty()) {
    strip_and_add(text, docs);
    return;
  }
  std::string cur;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string::npos ? text.size() : nl + 1;
    std::string_view line(text.data() + pos, (nl == std::string::npos ? text.size() : nl) - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == sep) {
      strip_and_add(std::move(cur), docs);
      cur.clear();
    } else {
      cur.append(text, pos, end - pos);
    }
    pos = end;
  }
  strip_and_add(std::move(cur), docs);
}

// Encodes documents with `threads` threads; out[i] = BOS + ids(docs[i]) (+ EOS).
std::vector<std::vector<int32_t>> encode_all(const Tokenizer& tok, const std::vector<std::string>& docs,
                                             int threads, bool append_eos) {
  std::vector<std::vector<int32_t>> out(docs.size());
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    try {
      for (size_t i; (i = next.fetch_add(1)) < docs.size();) {
        auto ids = tok.encode(docs[i]);
        auto& o = out[i];
        o.reserve(ids.size() + 2);
        o.push_back(tok.bos_id());
        o.insert(o.end(), ids.begin(), ids.end());
        if (append_eos) o.push_back(tok.eos_id());
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = docs.size();
    }
  };
  const int n = std::max(1, std::min<int>(threads, static_cast<int>(docs.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

Options parse(int argc, char** argv, bool& help) {
  Options o;
  po::options_description desc(kDescription, 100);
  const int hw = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("input", po::value<std::vector<std::string>>(&o.inputs)->multitoken()->composing(),
     "text files or folders to tokenize (repeatable; several paths may follow one --input)")
    ("tokenizer-model", po::value<std::string>(&o.tokenizer_model),
     "SentencePiece model file; trained here first when missing and --vocab-size is given")
    ("output-prefix", po::value<std::string>(&o.output_prefix),
     "writes PREFIX.bin and PREFIX.idx (the parent folder is created)")
    ("vocab-size", po::value<int64_t>(&o.vocab_size),
     "vocabulary size of the tokenizer to train when --tokenizer-model does not exist "
     "(>= 300, e.g. 4096); with an existing model it must equal the model's size")
    ("document-separator", po::value<std::string>(&o.separator),
     "a line equal to this string ends a document (e.g. % for fortune files); default: one document per file")
    ("append-eos", po::value<bool>(&o.append_eos)->default_value(true)->implicit_value(true),
     "end each document with EOS (--append-eos=false or --no-append-eos to disable)")
    ("no-append-eos", po::bool_switch(), "do not end documents with EOS")
    ("threads", po::value<int>(&o.threads)->default_value(hw),
     "encoding and tokenizer-training threads")
    ("include", po::value<std::vector<std::string>>(&o.include)->composing(),
     "inside folders, take only files whose name matches this glob (repeatable, e.g. '*.txt')")
    ("exclude", po::value<std::vector<std::string>>(&o.exclude)->composing(),
     "inside folders, skip files whose name matches this glob (repeatable, e.g. '*.u8')")
    ("keep-duplicates", po::bool_switch(&o.keep_duplicates),
     "do not skip files whose path or content repeats an earlier file")
    ("character-coverage", po::value<double>(&o.character_coverage)->default_value(0.9995, "0.9995"),
     "tokenizer training: share of characters covered by pieces; the rest use byte fallback")
    ("train-sentences", po::value<int64_t>(&o.train_sentences)->default_value(2'000'000),
     "tokenizer training: at most this many lines, sampled from the inputs (0 = all)")
    ("verbose", po::bool_switch(&o.verbose), "show SentencePiece's training log")
    ("random-tokens", po::value<int64_t>(&o.random_tokens)->default_value(0),
     "instead of tokenizing: write N uniformly random ids below --vocab-size (no --input or tokenizer; like "
     "Megatron's --mock-data, for throughput benchmarks)")
    ("seed", po::value<uint64_t>(&o.seed)->default_value(1234), "seed of --random-tokens");
  // clang-format on
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    help = true;
    return o;
  }
  po::notify(vm);
  if (o.random_tokens < 0) throw UsageError("--random-tokens must be >= 0");
  if (o.random_tokens > 0) {
    if (o.output_prefix.empty()) throw UsageError("the option '--output-prefix' is required but missing");
    if (o.vocab_size < 2) throw UsageError("--random-tokens needs --vocab-size (at least 2)");
    if (!o.inputs.empty() || !o.tokenizer_model.empty())
      throw UsageError("--random-tokens writes random ids: drop --input and --tokenizer-model");
    return o;
  }
  if (o.inputs.empty()) throw UsageError("the option '--input' is required but missing");
  if (o.tokenizer_model.empty())
    throw UsageError("the option '--tokenizer-model' is required but missing");
  if (o.output_prefix.empty()) throw UsageError("the option '--output-prefix' is required but missing");
  if (vm["no-append-eos"].as<bool>()) {
    if (!vm["append-eos"].defaulted() && o.append_eos)
      throw UsageError("--append-eos and --no-append-eos contradict each other; give one");
    o.append_eos = false;
  }
  if (vm.count("vocab-size") && (o.vocab_size < 300 || o.vocab_size > (int64_t{1} << 31)))
    throw UsageError("--vocab-size " + std::to_string(o.vocab_size) +
                     " is out of range: use at least 300 (3 special + 256 byte pieces + merges), e.g. 4096");
  if (o.threads < 1) throw UsageError("--threads " + std::to_string(o.threads) + " must be >= 1");
  if (!(o.character_coverage > 0.0 && o.character_coverage <= 1.0))
    throw UsageError("--character-coverage must be in (0, 1]");
  if (o.train_sentences < 0) throw UsageError("--train-sentences must be >= 0");
  if (o.separator.find('\n') != std::string::npos)
    throw UsageError("--document-separator must be a single line (no newline)");
  return o;
}

// --random-tokens: ids from the counter-based generator (seed, index), one document.
int write_random_tokens(const Options& o) {
  TokenFileWriter writer(o.output_prefix, o.vocab_size);
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < o.random_tokens; i += 4) {
    uint32_t r[4];
    llm::Philox4x32::generate(o.seed, static_cast<uint64_t>(i / 4), 0, r);
    for (int64_t k = 0; k < 4 && i + k < o.random_tokens; ++k)
      ids.push_back(static_cast<int32_t>(r[k] % static_cast<uint64_t>(o.vocab_size)));
  }
  writer.add_document(ids);
  writer.finish();
  std::fprintf(stderr, "%s: wrote %lld random tokens (vocab %lld) to %s\n", kProg,
               static_cast<long long>(o.random_tokens), static_cast<long long>(o.vocab_size),
               writer.bin_path().c_str());
  return 0;
}

int run(const Options& o) {
  if (o.random_tokens > 0) return write_random_tokens(o);
  const auto t0 = std::chrono::steady_clock::now();
  std::error_code ec;
  const bool have_model = fs::exists(o.tokenizer_model, ec);
  if (!have_model && o.vocab_size == 0)
    throw std::runtime_error("--tokenizer-model '" + o.tokenizer_model +
                             "' does not exist: pass --vocab-size N to train a new SentencePiece "
                             "model there, or point --tokenizer-model at an existing .model file");
  Skipped skipped;
  const auto files = collect_inputs(o, skipped);
  uint64_t total_bytes = 0;
  for (const auto& f : files) total_bytes += f.bytes;
  std::fprintf(stderr, "%s: %zu input files (%s), %lld skipped\n", kProg, files.size(),
               mb(static_cast<double>(total_bytes)).c_str(), static_cast<long long>(skipped.total()));

  // ---- tokenizer
  bool trained = false;
  if (!have_model) {
    std::fprintf(stderr, "%s: training a SentencePiece BPE tokenizer (vocab %lld) on %zu files...\n",
                 kProg, static_cast<long long>(o.vocab_size), files.size());
    const auto tt = std::chrono::steady_clock::now();
    std::vector<std::string> paths;
    for (const auto& f : files) paths.push_back(f.path);
    llm::data::TokenizerTrainOptions topt;
    topt.num_threads = o.threads;
    topt.character_coverage = o.character_coverage;
    topt.input_sentence_size = o.train_sentences;
    topt.skip_line = o.separator;
    topt.verbose = o.verbose;
    Tokenizer::train(paths, o.tokenizer_model, static_cast<int>(o.vocab_size), topt);
    std::fprintf(stderr, "%s: tokenizer written to %s (%.1f s)\n", kProg, o.tokenizer_model.c_str(),
                 seconds_since(tt));
    trained = true;
  }
  Tokenizer tok(o.tokenizer_model);
  if (o.vocab_size != 0 && tok.vocab_size() != o.vocab_size) {
    if (trained)
      std::fprintf(stderr,
                   "%s: note: the inputs support only %d pieces, fewer than --vocab-size %lld; the "
                   "tokenizer has %d\n",
                   kProg, tok.vocab_size(), static_cast<long long>(o.vocab_size), tok.vocab_size());
    else
      throw std::runtime_error("--vocab-size " + std::to_string(o.vocab_size) +
                               " does not match the existing --tokenizer-model '" + o.tokenizer_model +
                               "' (" + std::to_string(tok.vocab_size()) +
                               " pieces): drop --vocab-size to use the model, or delete the model "
                               "file to train a new one");
  }

  // ---- encode, in batches of documents, keeping the input order
  TokenFileWriter writer(o.output_prefix, tok.vocab_size());
  const auto te = std::chrono::steady_clock::now();
  const uint64_t batch_bytes = 8u << 20;
  std::vector<std::string> docs;
  uint64_t pending = 0, done_bytes = 0;
  size_t done_files = 0;
  auto last_print = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  auto flush = [&](bool last) {
    if (!docs.empty()) {
      for (const auto& ids : encode_all(tok, docs, o.threads, o.append_eos)) writer.add_document(ids);
      docs.clear();
    }
    done_bytes += pending;
    pending = 0;
    if (last || seconds_since(last_print) >= 1.0) {
      const double s = std::max(seconds_since(te), 1e-9);
      std::fprintf(stderr, "%s: %zu/%zu files, %s, %lld documents, %lld tokens, %.0f tokens/s\n", kProg,
                   done_files, files.size(), mb(static_cast<double>(done_bytes)).c_str(),
                   static_cast<long long>(writer.num_documents()),
                   static_cast<long long>(writer.num_tokens()), static_cast<double>(writer.num_tokens()) / s);
      last_print = std::chrono::steady_clock::now();
    }
  };
  for (const auto& f : files) {
    const std::string text = read_file(f.path);
    split_documents(text, o.separator, docs);
    pending += text.size();
    ++done_files;
    if (pending >= batch_bytes) flush(false);
  }
  flush(true);
  if (writer.num_documents() == 0)
    throw std::runtime_error("--input: the " + std::to_string(files.size()) +
                             " input files hold no non-empty document; nothing to write to '" +
                             o.output_prefix + ".bin'");
  writer.finish();
  const double encode_s = seconds_since(te);

  std::printf(
      "%s: done in %.1f s (encoding %.1f s)\n"
      "  inputs:     %zu files, %s (skipped %lld: %lld binary, %lld duplicate, %lld filtered, "
      "%lld hidden, %lld not regular)\n"
      "  documents:  %lld\n"
      "  tokens:     %lld (%s, vocab size %lld, %s EOS)\n"
      "  tokenizer:  %s%s\n"
      "  output:     %s, %s\n",
      kProg, seconds_since(t0), encode_s, files.size(), mb(static_cast<double>(total_bytes)).c_str(),
      static_cast<long long>(skipped.total()), static_cast<long long>(skipped.binary),
      static_cast<long long>(skipped.duplicate), static_cast<long long>(skipped.filtered),
      static_cast<long long>(skipped.hidden), static_cast<long long>(skipped.not_regular),
      static_cast<long long>(writer.num_documents()), static_cast<long long>(writer.num_tokens()),
      llm::data::token_dtype_name(writer.dtype()), static_cast<long long>(writer.vocab_size()),
      o.append_eos ? "with" : "without", o.tokenizer_model.c_str(), trained ? " (trained now)" : "",
      writer.bin_path().c_str(), writer.idx_path().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    bool help = false;
    o = parse(argc, argv, help);
    if (help) return 0;
  } catch (const po::error& e) {
    std::fprintf(stderr, "%s: error: %s (see %s --help)\n", kProg, e.what(), kProg);
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: error: %s (see %s --help)\n", kProg, e.what(), kProg);
    return 2;
  }
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", kProg, e.what());
    return 1;
  }
}
