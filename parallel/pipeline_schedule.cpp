#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace llm {

PipelineSchedule pipeline_schedule_from_name(const std::string& s) {
  if (s == "1f1b") return PipelineSchedule::OneFOneB;
  if (s == "afab" || s == "gpipe") return PipelineSchedule::AllForwardAllBackward;
  throw std::invalid_argument("--pipeline-schedule '" + s + "': expected 1f1b or afab");
}

const char* pipeline_schedule_name(PipelineSchedule s) {
  switch (s) {
    case PipelineSchedule::AllForwardAllBackward: return "afab";
    case PipelineSchedule::OneFOneB: return "1f1b";
    case PipelineSchedule::ForwardOnly: return "forward-only";
  }
  return "?";
}

namespace {

constexpr int kActivationTag = 0, kGradientTag = 1;

class StageLinks {
 public:
  StageLinks(Communicator& pp, const PipelineStep& step) : pp_(pp), step_(step) {}
  bool first() const { return pp_.rank() == 0; }
  bool last() const { return pp_.rank() == pp_.size() - 1; }

  Tensor recv_forward() {
    if (first()) return {};
    Tensor t = buffer();
    pp_.recv(t, pp_.rank() - 1, kActivationTag);
    return t;
  }
  void send_forward(const Tensor& t) {
    if (!last()) pp_.send(t, pp_.rank() + 1, kActivationTag);
  }
  Tensor recv_backward() {
    if (last()) return {};
    Tensor t = buffer();
    pp_.recv(t, pp_.rank() + 1, kGradientTag);
    return t;
  }
  void send_backward(const Tensor& t) {
    if (!first()) pp_.send(t, pp_.rank() - 1, kGradientTag);
  }
  // Send an activation on and receive a gradient from the next stage, both posted at once.
  Tensor send_forward_recv_backward(const Tensor& out) {
    if (last()) return {};
    Tensor g = buffer();
    CommHandlePtr r = pp_.recv_async(g, pp_.rank() + 1, kGradientTag);
    CommHandlePtr s = pp_.send_async(out, pp_.rank() + 1, kActivationTag);
    s->wait();
    r->wait();
    return g;
  }
  // Send a gradient back and receive the next activation from the previous stage.
  Tensor send_backward_recv_forward(const Tensor& grad) {
    if (first()) return {};
    Tensor in = buffer();
    CommHandlePtr r = pp_.recv_async(in, pp_.rank() - 1, kActivationTag);
    CommHandlePtr s = pp_.send_async(grad, pp_.rank() - 1, kGradientTag);
    s->wait();
    r->wait();
    return in;
  }

 private:
  Tensor buffer() const { return Tensor::empty(step_.activation_shape, step_.dtype, MemoryCategory::Communication); }
  Communicator& pp_;
  const PipelineStep& step_;
};

}  // namespace

void run_pipeline(PipelineSchedule schedule, int64_t num_micro, Communicator& pp, const PipelineStep& step) {
  StageLinks link(pp, step);
  if (schedule == PipelineSchedule::ForwardOnly || schedule == PipelineSchedule::AllForwardAllBackward) {
    for (int64_t m = 0; m < num_micro; ++m) link.send_forward(step.forward(m, link.recv_forward()));
    if (schedule == PipelineSchedule::ForwardOnly) return;
    for (int64_t m = 0; m < num_micro; ++m) link.send_backward(step.backward(m, link.recv_backward()));
    return;
  }
  // 1F1B.
  const int64_t warmup = std::min<int64_t>(pp.size() - pp.rank() - 1, num_micro);
  const int64_t steady = num_micro - warmup;
  for (int64_t m = 0; m < warmup; ++m) link.send_forward(step.forward(m, link.recv_forward()));
  Tensor input = steady > 0 ? link.recv_forward() : Tensor();
  for (int64_t i = 0; i < steady; ++i) {
    const Tensor out = step.forward(warmup + i, input);
    const Tensor grad_out = link.send_forward_recv_backward(out);
    const Tensor grad_in = step.backward(i, grad_out);
    if (i + 1 == steady) link.send_backward(grad_in);
    else input = link.send_backward_recv_forward(grad_in);
  }
  for (int64_t m = steady; m < num_micro; ++m) link.send_backward(step.backward(m, link.recv_backward()));
}

}  // namespace llm
