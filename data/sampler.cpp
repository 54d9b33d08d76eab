#include "data/sampler.h"

#include <cmath>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace llm::data {

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// splitmix64 (Steele, Lea, Flood 2014): a fixed sequence of 64-bit integers,
// identical on every platform.
struct SplitMix64 {
  uint64_t s;
  uint64_t next() { return mix64(s += kGolden); }
  // Uniform integer in [0, bound), bound > 0, without modulo bias (Lemire).
  uint64_t below(uint64_t bound) {
    unsigned __int128 m = static_cast<unsigned __int128>(next()) * bound;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next()) * bound;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }
};

void check_seq_length(int64_t seq_length) {
  if (seq_length < 1)
    throw std::runtime_error("--seq-length " + std::to_string(seq_length) +
                             " must be at least 1");
}

std::string hex(uint64_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

}  // namespace

DataSplit split_dataset(int64_t num_tokens, int64_t seq_length, const SplitSpec& spec,
                        bool separate_valid_data, const std::string& data_name) {
  check_seq_length(seq_length);
  if (!(spec.valid_fraction >= 0.0 && spec.valid_fraction < 1.0))
    throw std::runtime_error("validation split fraction " + std::to_string(spec.valid_fraction) +
                             " must be in [0, 1)");
  if (spec.min_valid_windows < 0)
    throw std::runtime_error("minimum number of validation windows " +
                             std::to_string(spec.min_valid_windows) + " must be >= 0");
  const int64_t window = seq_length + 1;
  DataSplit split;
  int64_t valid_tokens = 0;
  if (!separate_valid_data) {
    valid_tokens = static_cast<int64_t>(std::ceil(spec.valid_fraction * static_cast<double>(num_tokens)));
    valid_tokens = std::max(valid_tokens, spec.min_valid_windows * window);
  }
  const int64_t train_tokens = num_tokens - valid_tokens;
  if (train_tokens < window) {
    std::string msg = data_name + ": " + std::to_string(num_tokens) +
                      " tokens are too few for --seq-length " + std::to_string(seq_length) + ": ";
    if (separate_valid_data)
      msg += "one training window needs seq-length+1 = " + std::to_string(window) +
             " tokens; use more data or a smaller --seq-length";
    else
      msg += "the held-out validation split takes the last " + std::to_string(valid_tokens) +
             " tokens (the larger of " + std::to_string(spec.valid_fraction * 100.0) +
             "% of the data and " + std::to_string(spec.min_valid_windows) +
             " windows of seq-length+1), leaving " + std::to_string(std::max<int64_t>(train_tokens, 0)) +
             " for training, and one training window needs " + std::to_string(window) +
             "; use more data, a smaller --seq-length, or give separate validation data with "
             "--valid-data-path";
    throw std::runtime_error(msg);
  }
  split.train = {0, train_tokens};
  split.valid = {train_tokens, num_tokens};
  return split;
}

DataSplit split_dataset(const TokenDataset& data, int64_t seq_length, const SplitSpec& spec,
                        bool separate_valid_data) {
  return split_dataset(data.size(), seq_length, spec, separate_valid_data,
                       "data '" + data.prefix() + "'");
}

void to_json(nlohmann::json& j, const SamplerState& s) {
  j = nlohmann::json{{"seed", s.seed},
                     {"consumed_samples", s.consumed_samples},
                     {"num_windows", s.num_windows},
                     {"dataset_fingerprint", s.dataset_fingerprint},
                     {"seq_length", s.seq_length},
                     {"train_begin", s.train_begin},
                     {"train_end", s.train_end}};
}

void from_json(const nlohmann::json& j, SamplerState& s) {
  try {
    j.at("seed").get_to(s.seed);
    j.at("consumed_samples").get_to(s.consumed_samples);
    j.at("num_windows").get_to(s.num_windows);
    j.at("dataset_fingerprint").get_to(s.dataset_fingerprint);
    j.at("seq_length").get_to(s.seq_length);
    j.at("train_begin").get_to(s.train_begin);
    j.at("train_end").get_to(s.train_end);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("sampler state in checkpoint: ") + e.what() +
                             "; the checkpoint is incomplete or from another version");
  }
}

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  if (n < 0) throw std::invalid_argument("epoch_permutation: negative size");
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  SplitMix64 rng{mix64(seed + kGolden) ^ mix64(static_cast<uint64_t>(epoch) * 0xD1B54A32D192ED03ull + 1)};
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

// ---------------------------------------------------------------- train ----

TrainSampler::TrainSampler(const TokenDataset& data, int64_t seq_length, uint64_t seed,
                           TokenRange region)
    : data_(&data), seq_length_(seq_length), seed_(seed), region_(region) {
  check_seq_length(seq_length);
  if (region.begin < 0 || region.end > data.size() || region.begin > region.end)
    throw std::out_of_range("data '" + data.prefix() + "': training region [" +
                            std::to_string(region.begin) + ", " + std::to_string(region.end) +
                            ") is outside the " + std::to_string(data.size()) + " tokens");
  if (region.size() < seq_length + 1)
    throw std::runtime_error("data '" + data.prefix() + "': the training region holds " +
                             std::to_string(region.size()) + " tokens, fewer than one window of "
                             "--seq-length+1 = " + std::to_string(seq_length + 1) +
                             "; use more data or a smaller --seq-length");
  num_windows_ = (region.size() - 1) / seq_length;
}

TrainSampler::TrainSampler(const TokenDataset& data, int64_t seq_length, uint64_t seed,
                           const SplitSpec& spec, bool separate_valid_data)
    : TrainSampler(data, seq_length, seed,
                   split_dataset(data, seq_length, spec, separate_valid_data).train) {}

const std::vector<int64_t>& TrainSampler::permutation(int64_t epoch) {
  if (epoch != cached_epoch_) {
    perm_ = epoch_permutation(num_windows_, seed_, epoch);
    cached_epoch_ = epoch;
  }
  return perm_;
}

int64_t TrainSampler::window_of(int64_t g) {
  if (g < 0) throw std::out_of_range("TrainSampler: negative sample index " + std::to_string(g));
  return permutation(g / num_windows_)[static_cast<size_t>(g % num_windows_)];
}

void TrainSampler::fill(int64_t first_sample, int64_t count, int32_t* out) {
  if (first_sample < 0 || count < 0)
    throw std::out_of_range("TrainSampler::fill: negative sample range [" +
                            std::to_string(first_sample) + ", +" + std::to_string(count) + ")");
  const int64_t row = seq_length_ + 1;
  for (int64_t i = 0; i < count; ++i)
    data_->read(sample_start(first_sample + i), row, out + i * row);
}

SamplerState TrainSampler::state(int64_t consumed_samples) const {
  SamplerState s;
  s.seed = seed_;
  s.consumed_samples = consumed_samples;
  s.num_windows = num_windows_;
  s.dataset_fingerprint = data_->fingerprint();
  s.seq_length = seq_length_;
  s.train_begin = region_.begin;
  s.train_end = region_.end;
  return s;
}

void TrainSampler::check_resume(const SamplerState& saved) const {
  const std::string head = "resume: the checkpoint's data position was saved ";
  const std::string fix = "; resume with the same --data-path, --seq-length, --seed and "
                          "validation split it was saved with, or start a new run without --load";
  if (saved.dataset_fingerprint != data_->fingerprint())
    throw std::runtime_error(head + "for other training data (fingerprint " +
                             hex(saved.dataset_fingerprint) + ") than '" + data_->prefix() +
                             "' (fingerprint " + hex(data_->fingerprint()) + ")" + fix);
  if (saved.seq_length != seq_length_)
    throw std::runtime_error(head + "with --seq-length " + std::to_string(saved.seq_length) +
                             " but this run has --seq-length " + std::to_string(seq_length_) + fix);
  if (saved.train_begin != region_.begin || saved.train_end != region_.end)
    throw std::runtime_error(head + "with the training region [" + std::to_string(saved.train_begin) +
                             ", " + std::to_string(saved.train_end) + ") but this run's is [" +
                             std::to_string(region_.begin) + ", " + std::to_string(region_.end) +
                             ") (a different validation split or --valid-data-path)" + fix);
  if (saved.num_windows != num_windows_)
    throw std::runtime_error(head + "with " + std::to_string(saved.num_windows) +
                             " windows per epoch but this run has " + std::to_string(num_windows_) + fix);
  if (saved.seed != seed_)
    throw std::runtime_error(head + "with --seed " + std::to_string(saved.seed) +
                             " but this run has --seed " + std::to_string(seed_) + fix);
  if (saved.consumed_samples < 0)
    throw std::runtime_error(head + "with a negative sample count " +
                             std::to_string(saved.consumed_samples) + ": the checkpoint is corrupted");
}

// ----------------------------------------------------------------- eval ----

EvalWindows::EvalWindows(const TokenDataset& data, int64_t seq_length, TokenRange region)
    : data_(&data), seq_length_(seq_length), region_(region) {
  check_seq_length(seq_length);
  if (region.begin < 0 || region.end > data.size() || region.begin > region.end)
    throw std::out_of_range("data '" + data.prefix() + "': evaluation region [" +
                            std::to_string(region.begin) + ", " + std::to_string(region.end) +
                            ") is outside the " + std::to_string(data.size()) + " tokens");
  count_ = region.size() / (seq_length + 1);
}

EvalWindows::EvalWindows(const TokenDataset& data, int64_t seq_length)
    : EvalWindows(data, seq_length, TokenRange{0, data.size()}) {}

void EvalWindows::fill(int64_t first, int64_t n, int32_t* out) const {
  if (first < 0 || n < 0 || first > count_ || n > count_ - first)
    throw std::out_of_range("data '" + data_->prefix() + "': evaluation windows [" +
                            std::to_string(first) + ", " + std::to_string(first + n) +
                            ") requested but only " + std::to_string(count_) + " windows of " +
                            std::to_string(seq_length_ + 1) + " tokens exist");
  const int64_t row = seq_length_ + 1;
  data_->read(region_.begin + first * row, n * row, out);
}

}  // namespace llm::data
