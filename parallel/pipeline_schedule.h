// Pipeline-parallel schedules (non-interleaved), as in Megatron-LM:
//
//  - AllForwardAllBackward (GPipe): every micro-batch forward, then every
//    backward; keeps all micro-batches' activations.
//  - OneFOneB: (stages − stage − 1) warm-up forwards, then alternate one
//    forward and one backward, then the remaining backwards; keeps at most
//    `stages` micro-batches in flight. Bubble fraction (p − 1)/m for both.
//  - ForwardOnly: evaluation.
//
// The schedule knows nothing of the model: a stage supplies forward(m, input)
// returning the activation to send on, and backward(m, grad_output) returning
// the gradient to send back. Activations travel forward with tag 0, gradients
// backward with tag 1; a send and a receive between the same two stages are
// posted together, so neighbours never wait on each other's blocking send.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "core/tensor.h"
#include "parallel/communicator.h"

namespace llm {

enum class PipelineSchedule { AllForwardAllBackward, OneFOneB, ForwardOnly };
PipelineSchedule pipeline_schedule_from_name(const std::string& s);  // "1f1b" or "afab"
const char* pipeline_schedule_name(PipelineSchedule s);

struct PipelineStep {
  // Runs forward of micro-batch m; input is the received activation (undefined
  // on the first stage). Returns the activation to send (ignored on the last).
  std::function<Tensor(int64_t m, const Tensor& input)> forward;
  // Runs backward of micro-batch m; grad_output is the received gradient
  // (undefined on the last stage). Returns the input's gradient (ignored on the first).
  std::function<Tensor(int64_t m, const Tensor& grad_output)> backward;
  Shape activation_shape;  // of what travels between stages
  DType dtype = DType::F32;
};

// pp: the pipeline group (rank = stage). Runs num_micro micro-batches.
void run_pipeline(PipelineSchedule schedule, int64_t num_micro, Communicator& pp, const PipelineStep& step);

}  // namespace llm
