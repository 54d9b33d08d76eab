// llm-eval: validation loss of a checkpoint or HF export over the first K
// non-overlapping windows of seq-length+1 tokens of a token file. Prints JSON.
#include "core/cpu/blas_runtime.h"
#include <cmath>
#include <cstdio>

#include "checkpoint/hf_format.h"
#include "data/sampler.h"
#include "data/token_file.h"
#include "launch/cli.h"
#include "launch/trainer.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  llm::ensure_native_blas_kernels(argv);
  return llm::cli::run("llm-eval", [&] {
    std::string load, data_path;
    int64_t samples = 0, micro = 8, seq = 0;
    po::options_description opts("llm-eval: validation loss of a model\n\nUsage: llm-eval --load DIR --data-path PREFIX --eval-samples K");
    opts.add_options()("help,h", "print this help")
        ("load", po::value(&load), "checkpoint (--save root or iteration directory) or HF export directory")
        ("data-path", po::value(&data_path), "token file prefix (PREFIX.bin/.idx from llm-prepare-data)")
        ("eval-samples", po::value(&samples), "number of windows of seq-length+1 tokens to evaluate, from the start")
        ("micro-batch-size", po::value(&micro)->default_value(8), "windows per forward pass")
        ("seq-length", po::value(&seq)->default_value(0), "window length (0: the model's)");
    po::variables_map vm;
    if (!llm::cli::parse(argc, argv, opts, vm, {"load", "data-path", "eval-samples"})) return 0;
    if (samples <= 0) throw llm::UsageError("--eval-samples must be positive");
    if (micro <= 0) throw llm::UsageError("--micro-batch-size must be positive");
    llm::InferenceModel m = llm::load_for_inference(load);
    if (seq == 0) seq = m.model->config().seq_length;
    llm::data::TokenDataset data(data_path);
    data.check_vocab(m.model->config().vocab_size);
    llm::data::EvalWindows windows(data, seq);
    if (samples > windows.count())
      throw llm::UsageError("--eval-samples " + std::to_string(samples) + ": " + data_path + " holds only " +
                            std::to_string(windows.count()) + " windows of " + std::to_string(seq + 1) +
                            " tokens; ask for at most that many");
    const llm::EvalResult r = llm::evaluate(*m.model, windows, 0, samples, micro);
    const nlohmann::json out = {{"val_loss", r.loss}, {"val_ppl", std::exp(r.loss)}, {"eval_samples", samples},
                                {"tokens", r.tokens}, {"seq_length", seq}, {"source", m.source}};
    std::printf("%s\n", out.dump().c_str());
    return 0;
  });
}
