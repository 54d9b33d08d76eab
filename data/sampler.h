// Training and evaluation samples from a TokenDataset.
//
// A sample is a window of seq_length+1 consecutive tokens: the first S are the
// input, the last S (shifted by one) the targets.
//
// Held-out split (used when no separate validation data is given): the LAST
// part of the token stream is the validation region,
//     valid_tokens = max(ceil(valid_fraction × N), min_valid_windows × (S+1))
// (defaults: 1% of the tokens, at least 8 windows), and the training region is
// the tokens before it, [0, N − valid_tokens). The split is by tokens, not
// documents, so it is the same whatever the document lengths; no training
// window reads a validation token. With separate validation data the whole
// file is training data.
//
// Training windows: window w covers tokens [w·S, w·S+S+1) of the training
// region (consecutive windows share one token, as in Megatron), w < W =
// ⌊(T−1)/S⌋ for a training region of T tokens. Each epoch visits all W
// windows once, in a Fisher–Yates permutation driven by splitmix64 seeded with
// (seed, epoch): identical on every platform and compiler. Sample number g
// (global, counted from the start of training) is window perm_{g / W}[g % W],
// so any data-parallel rank can read any share of a batch and resuming only
// needs the number of samples consumed.
//
// Evaluation windows: the validation region (or a whole separate dataset) cut
// into non-overlapping windows of S+1 tokens, window k = [k(S+1), (k+1)(S+1)).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "data/token_file.h"

namespace llm::data {

struct TokenRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool empty() const { return end <= begin; }
};

struct SplitSpec {
  double valid_fraction = 0.01;   // share of the tokens held out (the last ones)
  int64_t min_valid_windows = 8;  // at least this many eval windows of S+1 tokens
};

struct DataSplit {
  TokenRange train;
  TokenRange valid;  // empty when separate validation data is used
};

// The split described above for a dataset of num_tokens tokens. With
// separate_valid_data the whole dataset is training data. Throws
// std::runtime_error (naming `data_name`, --seq-length and the data size) when
// fewer than S+1 tokens would be left for training.
DataSplit split_dataset(int64_t num_tokens, int64_t seq_length, const SplitSpec& spec,
                        bool separate_valid_data, const std::string& data_name = "data");
DataSplit split_dataset(const TokenDataset& data, int64_t seq_length, const SplitSpec& spec,
                        bool separate_valid_data);

// Saved in checkpoints; check_resume() tells whether a resumed run reads the
// same sample sequence.
struct SamplerState {
  uint64_t seed = 0;
  int64_t consumed_samples = 0;
  int64_t num_windows = 0;
  uint64_t dataset_fingerprint = 0;  // TokenDataset::fingerprint() of the training data
  int64_t seq_length = 0;
  int64_t train_begin = 0;  // the training region, in tokens
  int64_t train_end = 0;
};
void to_json(nlohmann::json& j, const SamplerState& s);
void from_json(const nlohmann::json& j, SamplerState& s);

// Deterministic, platform-independent permutation of [0, n) for (seed, epoch).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

class TrainSampler {
 public:
  // Samples from `region` of `data` (e.g. split_dataset(...).train). The
  // dataset must outlive the sampler. Throws if the region holds no window.
  TrainSampler(const TokenDataset& data, int64_t seq_length, uint64_t seed, TokenRange region);
  // Convenience: the training region of split_dataset(data, seq_length, spec, separate_valid_data).
  TrainSampler(const TokenDataset& data, int64_t seq_length, uint64_t seed, const SplitSpec& spec,
               bool separate_valid_data);

  int64_t seq_length() const { return seq_length_; }
  int64_t num_windows() const { return num_windows_; }  // W: samples per epoch
  uint64_t seed() const { return seed_; }
  TokenRange region() const { return region_; }
  // Window (0 ≤ w < W) read for global sample g ≥ 0.
  int64_t window_of(int64_t g);
  // First token (absolute index in the dataset) of global sample g.
  int64_t sample_start(int64_t g) { return region_.begin + window_of(g) * seq_length_; }

  // Writes samples [first_sample, first_sample + count) to out, row by row:
  // count × (seq_length + 1) tokens. Not thread-safe (caches one epoch's
  // permutation); use one sampler per thread.
  void fill(int64_t first_sample, int64_t count, int32_t* out);

  SamplerState state(int64_t consumed_samples) const;
  // Throws std::runtime_error naming the differing field if `saved` (from a
  // checkpoint) was made for a different dataset, region, seq-length or seed.
  void check_resume(const SamplerState& saved) const;

 private:
  const std::vector<int64_t>& permutation(int64_t epoch);

  const TokenDataset* data_;
  int64_t seq_length_;
  uint64_t seed_;
  TokenRange region_;
  int64_t num_windows_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> perm_;
};

class EvalWindows {
 public:
  // Non-overlapping windows of seq_length+1 tokens in `region` of `data`.
  EvalWindows(const TokenDataset& data, int64_t seq_length, TokenRange region);
  // Over the whole dataset (e.g. --valid-data-path, or llm-eval).
  EvalWindows(const TokenDataset& data, int64_t seq_length);

  int64_t count() const { return count_; }
  int64_t seq_length() const { return seq_length_; }
  TokenRange region() const { return region_; }
  // Writes windows [first, first + n) to out: n × (seq_length + 1) tokens.
  // Throws std::out_of_range if first + n > count().
  void fill(int64_t first, int64_t n, int32_t* out) const;

 private:
  const TokenDataset* data_;
  int64_t seq_length_;
  TokenRange region_;
  int64_t count_;
};

}  // namespace llm::data
