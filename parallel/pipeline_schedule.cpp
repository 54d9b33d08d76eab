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

// Interleaved 1F1B over step.chunks model chunks per rank (see the header).
static void run_interleaved(PipelineSchedule schedule, int64_t num_micro, Communicator& pp, const PipelineStep& step) {
  const int64_t p = pp.size(), r = pp.rank(), v = step.chunks, total = num_micro * v;
  if (schedule == PipelineSchedule::AllForwardAllBackward)
    throw std::invalid_argument("the interleaved schedule (virtual pipeline stages) runs with --pipeline-schedule 1f1b");
  if (num_micro % p != 0)
    throw std::invalid_argument("the interleaved schedule needs the micro-batches per step (" +
                                std::to_string(num_micro) + ") to be a multiple of the pipeline size " +
                                std::to_string(p));
  // The k-th forward (backward) of this rank: micro-batch and chunk.
  auto micro = [&](int64_t k) { return (k / (p * v)) * p + k % p; };
  auto forward_chunk = [&](int64_t k) { return static_cast<int>((k / p) % v); };
  auto backward_chunk = [&](int64_t k) { return static_cast<int>(v - 1 - (k / p) % v); };
  auto first_stage = [&](int c) { return r == 0 && c == 0; };
  auto last_stage = [&](int c) { return r == p - 1 && c == v - 1; };
  // One tag per message: the receiver's (micro-batch, chunk) and direction.
  auto tag = [&](int64_t m, int c, int dir) { return static_cast<int>(2 * (m * v + c) + dir); };
  std::vector<std::pair<CommHandlePtr, Tensor>> sends;  // in flight; buffers kept alive until done
  auto buffer = [&] { return Tensor::empty(step.activation_shape, step.dtype, MemoryCategory::Communication); };
  auto do_forward = [&](int64_t k) {
    const int64_t m = micro(k);
    const int c = forward_chunk(k);
    Tensor in;
    if (!first_stage(c)) {
      in = buffer();
      pp.recv(in, static_cast<int>((r + p - 1) % p), tag(m, c, 0));
    }
    Tensor out = step.forward(m, c, in);
    if (!last_stage(c)) {  // to the next rank; from the last rank on to the first one's next chunk
      const int to_chunk = r == p - 1 ? c + 1 : c;
      sends.emplace_back(pp.send_async(out, static_cast<int>((r + 1) % p), tag(m, to_chunk, 0)), out);
    }
  };
  auto do_backward = [&](int64_t k) {
    const int64_t m = micro(k);
    const int c = backward_chunk(k);
    Tensor grad;
    if (!last_stage(c)) {
      grad = buffer();
      pp.recv(grad, static_cast<int>((r + 1) % p), tag(m, c, 1));
    }
    Tensor grad_in = step.backward(m, c, grad);
    if (!first_stage(c)) {
      const int to_chunk = r == 0 ? c - 1 : c;
      sends.emplace_back(pp.send_async(grad_in, static_cast<int>((r + p - 1) % p), tag(m, to_chunk, 1)), grad_in);
    }
  };
  int64_t warmup = total;
  if (schedule == PipelineSchedule::OneFOneB && num_micro != p)
    warmup = std::min<int64_t>(total, (p - r - 1) * 2 + (v - 1) * p);
  for (int64_t k = 0; k < warmup; ++k) do_forward(k);
  if (schedule == PipelineSchedule::ForwardOnly) {
    for (auto& s : sends) s.first->wait();
    return;
  }
  const int64_t steady = total - warmup;
  for (int64_t i = 0; i < steady; ++i) {
    do_forward(warmup + i);
    do_backward(i);
  }
  for (int64_t k = steady; k < total; ++k) do_backward(k);
  for (auto& s : sends) s.first->wait();
}

void run_pipeline(PipelineSchedule schedule, int64_t num_micro, Communicator& pp, const PipelineStep& step) {
  if (step.chunks > 1) return run_interleaved(schedule, num_micro, pp, step);
  StageLinks link(pp, step);
  if (schedule == PipelineSchedule::ForwardOnly || schedule == PipelineSchedule::AllForwardAllBackward) {
    for (int64_t m = 0; m < num_micro; ++m) link.send_forward(step.forward(m, 0, link.recv_forward()));
    if (schedule == PipelineSchedule::ForwardOnly) return;
    for (int64_t m = 0; m < num_micro; ++m) link.send_backward(step.backward(m, 0, link.recv_backward()));
    return;
  }
  // 1F1B.
  const int64_t warmup = std::min<int64_t>(pp.size() - pp.rank() - 1, num_micro);
  const int64_t steady = num_micro - warmup;
  for (int64_t m = 0; m < warmup; ++m) link.send_forward(step.forward(m, 0, link.recv_forward()));
  Tensor input = steady > 0 ? link.recv_forward() : Tensor();
  for (int64_t i = 0; i < steady; ++i) {
    const Tensor out = step.forward(warmup + i, 0, input);
    const Tensor grad_out = link.send_forward_recv_backward(out);
    const Tensor grad_in = step.backward(i, 0, grad_out);
    if (i + 1 == steady) link.send_backward(grad_in);
    else input = link.send_backward_recv_forward(grad_in);
  }
  for (int64_t m = steady; m < num_micro; ++m) link.send_backward(step.backward(m, 0, link.recv_backward()));
}

}  // namespace llm
