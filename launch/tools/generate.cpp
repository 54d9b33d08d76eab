// llm-generate: continue a prompt with a trained model (KV cache; greedy,
// temperature, top-k and top-p sampling).
#include "core/cpu/blas_runtime.h"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "checkpoint/hf_format.h"
#include "core/random.h"
#include "data/tokenizer.h"
#include "launch/cli.h"

namespace po = boost::program_options;

namespace {

struct SamplingOptions {
  double temperature = 0.8, top_p = 0.95;
  int64_t top_k = 40;
  uint64_t seed = 1;
};

// Picks the next token from logits: greedy at temperature 0, else samples
// from the temperature-scaled distribution restricted to top-k and top-p.
int32_t pick(const std::vector<float>& logits, const SamplingOptions& o, uint64_t step) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (o.temperature <= 0.0) return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  // NaN ranks last (a strict weak order even when the model produced NaN).
  auto key = [&](int32_t i) { return std::isnan(logits[i]) ? -INFINITY : logits[i]; };
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return key(a) > key(b); });
  const int64_t k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::vector<double> p(k);
  const double mx = logits[idx[0]];
  double sum = 0.0;
  for (int64_t i = 0; i < k; ++i) sum += p[i] = std::exp((logits[idx[i]] - mx) / o.temperature);
  int64_t keep = 0;
  double cum = 0.0;
  while (keep < k) {  // nucleus: the smallest prefix with mass >= top_p
    cum += p[keep++] / sum;
    if (cum >= o.top_p) break;
  }
  double total = 0.0;
  for (int64_t i = 0; i < keep; ++i) total += p[i];
  double u = llm::uniform_at(llm::parameter_key(o.seed, "generate"), step) * total;
  for (int64_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u <= 0) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace

int main(int argc, char** argv) {
  llm::ensure_native_blas_kernels(argv);
  return llm::cli::run("llm-generate", [&] {
    std::string load, prompt, tokenizer_model;
    int64_t max_new = 100;
    SamplingOptions o;
    po::options_description opts("llm-generate: continue a prompt\n\nUsage: llm-generate --load DIR --prompt TEXT");
    opts.add_options()("help,h", "print this help")
        ("load", po::value(&load), "checkpoint (--save root or iteration directory) or HF export directory")
        ("prompt", po::value(&prompt)->default_value(""), "text to continue")
        ("max-new-tokens", po::value(&max_new)->default_value(max_new), "tokens to generate (stops early at end of text)")
        ("temperature", po::value(&o.temperature)->default_value(o.temperature), "0 for greedy decoding")
        ("top-k", po::value(&o.top_k)->default_value(o.top_k), "sample among the k most likely tokens (0: all)")
        ("top-p", po::value(&o.top_p)->default_value(o.top_p), "nucleus sampling mass (1: off)")
        ("seed", po::value(&o.seed)->default_value(o.seed), "sampling seed")
        ("tokenizer-model", po::value(&tokenizer_model), "SentencePiece model (default: the one in --load)");
    po::variables_map vm;
    if (!llm::cli::parse(argc, argv, opts, vm, {"load"})) return 0;
    if (max_new < 0) throw llm::UsageError("--max-new-tokens must be non-negative");
    if (o.top_p <= 0 || o.top_p > 1) throw llm::UsageError("--top-p must be in (0, 1]");
    if (o.temperature < 0) throw llm::UsageError("--temperature must be non-negative");
    llm::InferenceModel m = llm::load_for_inference(load);
    if (tokenizer_model.empty()) tokenizer_model = m.tokenizer_model;
    if (tokenizer_model.empty())
      throw llm::UsageError("--load " + load + " holds no tokenizer.model: pass --tokenizer-model");
    llm::data::Tokenizer tok(tokenizer_model);
    std::vector<int32_t> ids = {tok.bos_id()};
    for (int32_t t : tok.encode(prompt)) ids.push_back(t);
    const int64_t max_len = m.model->config().seq_length;
    if (static_cast<int64_t>(ids.size()) >= max_len)
      throw llm::UsageError("--prompt is " + std::to_string(ids.size()) + " tokens; the model's context is " +
                            std::to_string(max_len));
    max_new = std::min<int64_t>(max_new, max_len - static_cast<int64_t>(ids.size()));
    auto state = m.model->new_decode_state(max_len);
    std::vector<float> logits = m.model->decode(ids, state);
    std::vector<int32_t> out;
    for (int64_t step = 0; step < max_new; ++step) {
      const int32_t next = pick(logits, o, static_cast<uint64_t>(step));
      if (next == tok.eos_id()) break;
      out.push_back(next);
      if (step + 1 < max_new) logits = m.model->decode({next}, state);
    }
    // Decode prompt and continuation together so the joining space is kept.
    std::vector<int32_t> text(ids.begin() + 1, ids.end());
    text.insert(text.end(), out.begin(), out.end());
    std::printf("%s\n", tok.decode(text).c_str());
    return 0;
  });
}
