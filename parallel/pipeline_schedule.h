// Pipeline-parallel schedules (non-interleaved), as in Megatron-LM:
//
//  - AllForwardAllBackward (GPipe): every micro-batch forward, then every
//    backward; keeps all micro-batches' activations.
//  - OneFOneB: (stages − stage − 1) warm-up forwards, then alternate one
//    forward and one backward, then the remaining backwards; keeps at most
//    `stages` micro-batches in flight. Bubble fraction (p − 1)/m for both.
//  - ForwardOnly: evaluation.
//  - Interleaved 1F1B (PipelineStep::chunks = v > 1, with OneFOneB or
//    ForwardOnly): each rank holds v model chunks, chunk c of rank r being
//    model stage c·p + r, so a micro-batch passes every rank v times. The
//    order of Megatron's interleaved schedule: forwards in groups of p
//    micro-batches per chunk, (p − r − 1)·2 + (v − 1)·p warm-up forwards,
//    then one forward and one backward, then the rest of the backwards.
//    Bubble (p − 1)/(v·m); needs m divisible by p. Messages carry a tag per
//    (micro-batch, chunk, direction) and are sent asynchronously.
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
  // Runs forward of micro-batch m on this rank's model chunk `chunk` (0
  // unless interleaved); input is the received activation (undefined on the
  // first model stage). Returns the activation to send (ignored on the last).
  std::function<Tensor(int64_t m, int chunk, const Tensor& input)> forward;
  // Runs backward of micro-batch m on chunk `chunk`; grad_output is the
  // received gradient (undefined on the last model stage). Returns the
  // input's gradient (ignored on the first).
  std::function<Tensor(int64_t m, int chunk, const Tensor& grad_output)> backward;
  Shape activation_shape;  // of what travels between stages
  DType dtype = DType::F32;
  int chunks = 1;  // model chunks per rank (virtual stages): > 1 runs the interleaved schedule
};

// pp: the pipeline group (rank = stage). Runs num_micro micro-batches.
void run_pipeline(PipelineSchedule schedule, int64_t num_micro, Communicator& pp, const PipelineStep& step);

}  // namespace llm
