#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "data/sampler.h"
#include "data/token_file.h"

using namespace llm::data;
namespace fs = std::filesystem;

namespace {

// A dataset whose token i has the value i (uint32, vocab 70000), so a window's
// tokens tell where it was read from.
class SamplerTest : public ::testing::Test {
 protected:
  static constexpr int64_t N = 10000;
  static constexpr int64_t S = 16;

  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("llm_sampler_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    prefix_ = make(N, "d");
    ds_ = std::make_unique<TokenDataset>(prefix_);
  }
  void TearDown() override {
    ds_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string make(int64_t n, const std::string& name, int32_t offset = 0) {
    const std::string prefix = (dir_ / name).string();
    TokenFileWriter w(prefix, 70000);
    std::vector<int32_t> doc(static_cast<size_t>(n));
    std::iota(doc.begin(), doc.end(), offset);
    w.add_document(std::span<const int32_t>(doc.data(), doc.size() / 2));
    w.add_document(std::span<const int32_t>(doc.data() + doc.size() / 2, doc.size() - doc.size() / 2));
    w.finish();
    return prefix;
  }
  std::vector<int32_t> fill(TrainSampler& s, int64_t first, int64_t count) {
    std::vector<int32_t> out(static_cast<size_t>(count * (s.seq_length() + 1)));
    s.fill(first, count, out.data());
    return out;
  }

  fs::path dir_;
  std::string prefix_;
  std::unique_ptr<TokenDataset> ds_;
};

}  // namespace

TEST_F(SamplerTest, HeldOutSplitIsTheLastTokensAndDoesNotOverlapTraining) {
  // 1% of 10000 = 100 < 8 windows × 17 = 136 tokens.
  const DataSplit sp = split_dataset(*ds_, S, SplitSpec{}, false);
  EXPECT_EQ(sp.valid.end, N);
  EXPECT_EQ(sp.valid.size(), 136);
  EXPECT_EQ(sp.train.begin, 0);
  EXPECT_EQ(sp.train.end, sp.valid.begin);
  // A larger fraction wins over the minimum.
  EXPECT_EQ(split_dataset(N, S, SplitSpec{0.05, 8}, false).valid.size(), 500);
  // Separate validation data: everything trains.
  const DataSplit all = split_dataset(*ds_, S, SplitSpec{}, true);
  EXPECT_EQ(all.train.end, N);
  EXPECT_TRUE(all.valid.empty());

  TrainSampler s(*ds_, S, 1234, sp.train);
  EXPECT_EQ(s.num_windows(), (sp.train.size() - 1) / S);
  const auto rows = fill(s, 0, s.num_windows());
  for (int32_t t : rows) ASSERT_LT(t, sp.valid.begin) << "a training window reads a held-out token";
  EXPECT_EQ(*std::max_element(rows.begin(), rows.end()), S * s.num_windows());

  EvalWindows ev(*ds_, S, sp.valid);
  EXPECT_EQ(ev.count(), 8);
  std::vector<int32_t> e(static_cast<size_t>(ev.count() * (S + 1)));
  ev.fill(0, ev.count(), e.data());
  EXPECT_EQ(e.front(), sp.valid.begin);
  EXPECT_EQ(e.back(), N - 1);
}

TEST_F(SamplerTest, TooLittleDataNamesSeqLengthAndSize) {
  try {
    split_dataset(*ds_, 2000, SplitSpec{}, false);  // hold-out 8 × 2001 > 10000
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--seq-length 2000"), std::string::npos) << m;
    EXPECT_NE(m.find("10000 tokens"), std::string::npos) << m;
    EXPECT_NE(m.find(prefix_), std::string::npos) << m;
    EXPECT_NE(m.find("--valid-data-path"), std::string::npos) << m;
  }
  EXPECT_THROW(split_dataset(*ds_, 10000, SplitSpec{}, true), std::runtime_error);
  EXPECT_THROW(split_dataset(*ds_, 0, SplitSpec{}, true), std::runtime_error);
  EXPECT_NO_THROW(split_dataset(*ds_, 9999, SplitSpec{}, true));
}

TEST_F(SamplerTest, WindowsStartAtMultiplesOfSeqLengthAndOverlapByOneToken) {
  TrainSampler s(*ds_, S, 1, TokenRange{0, N});
  EXPECT_EQ(s.num_windows(), (N - 1) / S);
  const auto rows = fill(s, 0, s.num_windows());
  std::set<int32_t> starts;
  for (int64_t i = 0; i < s.num_windows(); ++i) {
    const int32_t* r = rows.data() + i * (S + 1);
    ASSERT_EQ(r[0] % S, 0);
    for (int64_t k = 1; k <= S; ++k) ASSERT_EQ(r[k], r[0] + k);
    starts.insert(r[0]);
  }
  // Every window exactly once per epoch: starts are 0, S, 2S, ...
  ASSERT_EQ(static_cast<int64_t>(starts.size()), s.num_windows());
  EXPECT_EQ(*starts.begin(), 0);
  EXPECT_EQ(*starts.rbegin(), S * (s.num_windows() - 1));
}

TEST_F(SamplerTest, EachEpochIsAPermutationWithItsOwnOrder) {
  TrainSampler s(*ds_, S, 42, TokenRange{0, N});
  const int64_t W = s.num_windows();
  std::vector<int64_t> e0, e1;
  for (int64_t g = 0; g < W; ++g) e0.push_back(s.window_of(g));
  for (int64_t g = W; g < 2 * W; ++g) e1.push_back(s.window_of(g));
  std::vector<int64_t> sorted0 = e0, sorted1 = e1, id(static_cast<size_t>(W));
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  std::iota(id.begin(), id.end(), 0);
  EXPECT_EQ(sorted0, id);
  EXPECT_EQ(sorted1, id);
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, id);  // shuffled
  // Going back to an earlier epoch gives the same order again.
  EXPECT_EQ(s.window_of(3), e0[3]);
}

TEST_F(SamplerTest, SameSeedSameSamplesOtherSeedOtherOrder) {
  TrainSampler a(*ds_, S, 7, TokenRange{0, N}), b(*ds_, S, 7, TokenRange{0, N}),
      c(*ds_, S, 8, TokenRange{0, N});
  const auto fa = fill(a, 0, 1500), fb = fill(b, 0, 1500), fc = fill(c, 0, 1500);
  EXPECT_EQ(fa, fb);
  EXPECT_NE(fa, fc);
}

TEST_F(SamplerTest, PermutationIsPinned) {
  // splitmix64 + Fisher–Yates: the order must not change between platforms,
  // compilers or versions, or resumed runs would read other samples.
  const std::vector<int64_t> p = epoch_permutation(10, 1234, 0);
  const std::vector<int64_t> expected = {3, 2, 5, 0, 7, 4, 6, 9, 1, 8};
  EXPECT_EQ(p, expected);
  EXPECT_EQ(epoch_permutation(1, 5, 3), std::vector<int64_t>{0});
  EXPECT_TRUE(epoch_permutation(0, 5, 3).empty());
}

TEST_F(SamplerTest, FillOfARangeEqualsTheConcatenationOfItsParts) {
  // As when 4 data-parallel ranks each read a quarter of a global batch, or a
  // run resumes in the middle; the range crosses an epoch boundary.
  TrainSampler whole(*ds_, S, 99, TokenRange{0, N});
  const int64_t W = whole.num_windows();
  const int64_t first = W - 10, count = 32;
  const auto ref = fill(whole, first, count);
  std::vector<int32_t> joined;
  for (int rank = 0; rank < 4; ++rank) {
    TrainSampler r(*ds_, S, 99, TokenRange{0, N});  // a separate process's sampler
    const auto part = fill(r, first + rank * (count / 4), count / 4);
    joined.insert(joined.end(), part.begin(), part.end());
  }
  EXPECT_EQ(joined, ref);
  // And uneven pieces through one sampler.
  std::vector<int32_t> pieces;
  for (auto [f, n] : std::vector<std::pair<int64_t, int64_t>>{{0, 3}, {3, 1}, {4, 20}, {24, 8}}) {
    const auto part = fill(whole, first + f, n);
    pieces.insert(pieces.end(), part.begin(), part.end());
  }
  EXPECT_EQ(pieces, ref);
}

TEST_F(SamplerTest, EvalWindowsAreNonOverlappingFromTheStart) {
  EvalWindows ev(*ds_, S);
  EXPECT_EQ(ev.count(), N / (S + 1));
  std::vector<int32_t> out(static_cast<size_t>(ev.count() * (S + 1)));
  ev.fill(0, ev.count(), out.data());
  for (int64_t i = 0; i < static_cast<int64_t>(out.size()); ++i) ASSERT_EQ(out[i], i);
  // Window k alone is tokens [k(S+1), (k+1)(S+1)).
  std::vector<int32_t> w(S + 1);
  ev.fill(5, 1, w.data());
  EXPECT_EQ(w.front(), 5 * (S + 1));
  EXPECT_EQ(w.back(), 6 * (S + 1) - 1);
  EXPECT_THROW(ev.fill(ev.count(), 1, w.data()), std::out_of_range);
}

TEST_F(SamplerTest, StateRoundTripsThroughJsonAndResumeChecksTheDataset) {
  TrainSampler s(*ds_, S, 5, split_dataset(*ds_, S, SplitSpec{}, false).train);
  const SamplerState st = s.state(12345);
  const nlohmann::json j = st;
  const SamplerState back = j.get<SamplerState>();
  EXPECT_EQ(back.seed, 5u);
  EXPECT_EQ(back.consumed_samples, 12345);
  EXPECT_EQ(back.num_windows, s.num_windows());
  EXPECT_EQ(back.dataset_fingerprint, ds_->fingerprint());
  EXPECT_NO_THROW(s.check_resume(back));

  // Same sizes, other tokens: the fingerprint tells them apart.
  TokenDataset other(make(N, "other", 1));
  TrainSampler so(other, S, 5, split_dataset(other, S, SplitSpec{}, false).train);
  EXPECT_EQ(so.num_windows(), s.num_windows());
  try {
    so.check_resume(back);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("other training data"), std::string::npos) << e.what();
  }
  TrainSampler seed6(*ds_, S, 6, split_dataset(*ds_, S, SplitSpec{}, false).train);
  EXPECT_THROW(seed6.check_resume(back), std::runtime_error);
  TrainSampler all(*ds_, S, 5, split_dataset(*ds_, S, SplitSpec{}, true).train);
  EXPECT_THROW(all.check_resume(back), std::runtime_error);
  EXPECT_THROW(nlohmann::json({{"seed", 1}}).get<SamplerState>(), std::runtime_error);
}
