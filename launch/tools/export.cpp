// llm-export: write a checkpoint as a Hugging Face LlamaForCausalLM directory.
#include "core/cpu/blas_runtime.h"
#include <cstdio>

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_format.h"
#include "launch/cli.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  llm::ensure_native_blas_kernels(argv);
  return llm::cli::run("llm-export", [&] {
    std::string load, output, dtype_name = "float32";
    po::options_description opts("llm-export: checkpoint -> Hugging Face format\n\nUsage: llm-export --load CKPT --output DIR");
    opts.add_options()("help,h", "print this help")
        ("load", po::value(&load), "checkpoint (--save root or iteration directory)")
        ("output", po::value(&output), "directory to write config.json, model.safetensors, tokenizer.model into")
        ("dtype", po::value(&dtype_name)->default_value(dtype_name), "weight dtype: float32 or bfloat16");
    po::variables_map vm;
    if (!llm::cli::parse(argc, argv, opts, vm, {"load", "output"})) return 0;
    llm::DType dtype;
    if (dtype_name == "float32") dtype = llm::DType::F32;
    else if (dtype_name == "bfloat16") dtype = llm::DType::BF16;
    else throw llm::UsageError("--dtype '" + dtype_name + "': expected float32 or bfloat16");
    llm::CheckpointOnDisk ck = llm::open_checkpoint(load);
    llm::LlamaModel model(ck.model);
    llm::load_model_weights(ck, model);
    llm::export_hf(model, ck.tokenizer_model(), output, dtype);
    std::printf("exported %s (iteration %lld, %.2fM parameters, %s) to %s\n", ck.dir.c_str(),
                static_cast<long long>(ck.state.iteration), model.config().num_parameters() / 1e6,
                dtype_name.c_str(), output.c_str());
    return 0;
  });
}
