#include "optim/distributed_optimizer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/ops.h"

namespace llm {

DistributedOptimizer::DistributedOptimizer(LlamaModel& model, Communicator& dp, const DistributedOptimizerConfig& cfg)
    : model_(model), store_(model.params()), dp_(dp), cfg_(cfg), dtype_(store_.dtype()) {
  if (cfg_.zero_stage < 0 || cfg_.zero_stage > 3) throw std::invalid_argument("--zero-stage must be 0, 1, 2 or 3");
  if (cfg_.bucket_elems <= 0) throw std::invalid_argument("--ddp-bucket-size must be positive");
  stage_ = dp_.size() > 1 ? cfg_.zero_stage : 0;
  shards_ = stage_ >= 1 ? dp_.size() : 1;
  rank_ = stage_ >= 1 ? dp_.rank() : 0;
  master_dtype_ = dtype_ == DType::F64 ? DType::F64 : DType::F32;

  // Buckets: from stage 2 on one per layer (its gradients are freed as soon
  // as it is reduced, its values gathered as one); before that runs of
  // layers of one chunk up to bucket_elems. Tied weights stand alone so that
  // their slices line up with their twin's on the other stage.
  const auto& units = model_.units();
  std::vector<size_t> starts;
  unit_bucket_.resize(units.size());
  int64_t size = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    int64_t n = 0;
    for (size_t i = units[u].first_param; i < units[u].end_param; ++i) n += store_.infos()[i].numel;
    const bool join = u > 0 && stage_ < 2 && !units[u].standalone && !units[u - 1].standalone &&
                      units[u].chunk == units[u - 1].chunk && size + n <= cfg_.bucket_elems;
    if (join) {
      size += n;
    } else {
      starts.push_back(units[u].first_param);
      size = n;
    }
    unit_bucket_[u] = starts.size() - 1;
  }
  if (starts.empty()) starts.push_back(0);
  store_.set_buckets(starts, shards_);
  buckets_.resize(store_.buckets().size());
  for (size_t u = 0; u < units.size(); ++u) ++buckets_[unit_bucket_[u]].units;

  // Each bucket's own slice and its place in shard space; the parameters' parts in it.
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const ParamBucket& sb = store_.buckets()[b];
    Bucket& bk = buckets_[b];
    bk.begin = sb.begin;
    bk.numel = sb.numel();
    bk.own = sb.begin + rank_ * slice(bk);
    bk.shard = shard_numel_;
    shard_numel_ += slice(bk);
    for (size_t i = sb.first_param; i < sb.end_param; ++i) {
      const ParameterInfo& p = store_.infos()[i];
      const int64_t lo = std::max(bk.own, p.offset), hi = std::min(bk.own + slice(bk), p.offset + p.numel);
      if (lo >= hi) continue;
      pieces_.push_back({i, lo, bk.shard + (lo - bk.own), owned_, hi - lo});
      owned_ += hi - lo;
    }
  }
  const Device dev = store_.device();
  if (stage_ >= 2) {
    grad_shard_ = Tensor::zeros({shard_numel_}, dtype_, MemoryCategory::Gradients, dev);
    store_.drop_grads();
  }
  if (stage_ == 3) param_shard_ = Tensor::zeros({shard_numel_}, dtype_, MemoryCategory::Parameters, dev);
  if (is_half_dtype(dtype_)) master_ = Tensor::zeros({shard_numel_}, DType::F32, MemoryCategory::MasterWeights, dev);

  std::vector<AdamWSegment> segments;
  for (const Piece& p : pieces_) {
    Tensor param = master_.defined() ? master_.flat_view(p.shard, {p.numel}) : value_of(p);
    // 16-bit models: the update writes the rounded copy the model computes with in the same pass.
    segments.push_back({param, grad_of(p), p.state, store_.infos()[p.param].weight_decay,
                        master_.defined() ? value_of(p) : Tensor()});
  }
  adam_ = std::make_unique<AdamW>(cfg_.adam, std::move(segments), owned_, master_dtype_, dev);
  model_.set_parameter_hooks(this);
}

DistributedOptimizer::~DistributedOptimizer() {
  model_.set_parameter_hooks(nullptr);
  for (auto& b : buckets_) {  // never leave a transfer writing into freed memory
    if (b.gather) b.gather->wait();
    if (b.reduce) b.reduce->wait();
  }
}

Tensor DistributedOptimizer::grad_of(const Piece& p) const {
  return stage_ >= 2 ? grad_shard_.flat_view(p.shard, {p.numel}) : store_.grads().flat_view(p.flat, {p.numel});
}

Tensor DistributedOptimizer::value_of(const Piece& p) const {
  return stage_ == 3 ? param_shard_.flat_view(p.shard, {p.numel}) : store_.values().flat_view(p.flat, {p.numel});
}

void DistributedOptimizer::set_values(const Tensor& flat) {
  if (flat.numel() != store_.padded_numel())
    throw std::logic_error("set_values: " + flat.str() + " is not laid out like the parameters");
  auto put = [](Tensor dst, const Tensor& src) { dst.convert_from(src); };  // a plain copy when the dtypes agree
  if (master_.defined())
    for (const Bucket& b : buckets_)
      put(master_.flat_view(b.shard, {slice(b)}), flat.flat_view(b.own, {slice(b)}));
  if (stage_ == 3) {
    for (const Bucket& b : buckets_)
      put(param_shard_.flat_view(b.shard, {slice(b)}), flat.flat_view(b.own, {slice(b)}));
    store_.drop_values();  // from now on a bucket's values exist while it is in use
  } else if (flat.raw() != store_.values().raw()) {
    put(store_.values(), flat);
  }
}

void DistributedOptimizer::begin_step() {
  if (stage_ >= 2) grad_shard_.zero_();
  else store_.zero_grads();
  for (auto& b : buckets_) {
    b.launched = false;
    b.units_done = 0;
  }
}

void DistributedOptimizer::start_gather(size_t b) {
  if (store_.bucket_values(b).defined()) return;  // gathered, or on its way
  Bucket& bk = buckets_[b];
  Tensor full = Tensor::empty({bk.numel}, dtype_, MemoryCategory::Parameters, store_.device());
  bk.gather = dp_.all_gather_async(param_shard_.flat_view(bk.shard, {slice(bk)}), full);
  store_.set_bucket_values(b, full);
}

void DistributedOptimizer::acquire(int unit, bool backward, int prefetch) {
  const size_t b = unit_bucket_.at(static_cast<size_t>(unit));
  Bucket& bk = buckets_[b];
  if (stage_ == 3) {
    start_gather(b);
    if (bk.gather) {
      bk.gather->wait();
      bk.gather.reset();
    }
    ++bk.value_refs;
    if (prefetch >= 0) start_gather(unit_bucket_.at(static_cast<size_t>(prefetch)));
  }
  if (backward && stage_ >= 2 && !store_.bucket_grads(b).defined()) {
    store_.set_bucket_grads(b, Tensor::zeros({bk.numel}, dtype_, MemoryCategory::Gradients, store_.device()));
  } else if (backward && stage_ >= 2 && bk.reduce) {
    // Last micro-batch's reduction of this layer still reads the buffer: finish it, start afresh.
    complete_reduction(b);
    store_.set_bucket_grads(b, Tensor::zeros({bk.numel}, dtype_, MemoryCategory::Gradients, store_.device()));
  }
  poll();
}

void DistributedOptimizer::release(int unit, bool backward, bool grads_complete) {
  const size_t b = unit_bucket_.at(static_cast<size_t>(unit));
  Bucket& bk = buckets_[b];
  if (stage_ == 3 && --bk.value_refs == 0) store_.set_bucket_values(b, Tensor());
  if (backward && grads_complete && ++bk.units_done == bk.units) {
    bk.units_done = 0;
    // Stages 0-1 sum once per step (the last micro-batch); 2-3 every micro-batch.
    if (stage_ >= 2 || last_microbatch_) launch_reduction(b);
  }
  poll();
}

void DistributedOptimizer::launch_reduction(size_t b) {
  Bucket& bk = buckets_[b];
  bk.launched = true;
  if (dp_.size() == 1) return;
  const Tensor& g = store_.bucket_grads(b);
  // Reduced in fp32: 16-bit gradients go through an fp32 copy.
  bk.send = is_half_dtype(dtype_) ? g.to(DType::F32, MemoryCategory::Communication) : g;
  if (stage_ == 0) {
    bk.reduce = dp_.all_reduce_async(bk.send, ReduceOp::Sum);
  } else if (stage_ == 1) {  // in place: the own slice of the bucket receives the sum
    Tensor out = bk.send.flat_view(rank_ * slice(bk), {slice(bk)});
    bk.reduce = dp_.reduce_scatter_async(bk.send, out, ReduceOp::Sum);
  } else {
    bk.recv = Tensor::empty({slice(bk)}, bk.send.dtype(), MemoryCategory::Communication, store_.device());
    bk.reduce = dp_.reduce_scatter_async(bk.send, bk.recv, ReduceOp::Sum);
  }
  in_flight_.push_back(b);
}

void DistributedOptimizer::complete_reduction(size_t b) {
  Bucket& bk = buckets_[b];
  if (!bk.reduce) return;
  bk.reduce->wait();
  bk.reduce.reset();
  in_flight_.erase(std::find(in_flight_.begin(), in_flight_.end(), b));
  const Tensor& g = store_.bucket_grads(b);
  if (stage_ == 0 && is_half_dtype(dtype_)) {
    Tensor(g).convert_from(bk.send);
  } else if (stage_ == 1 && is_half_dtype(dtype_)) {
    g.flat_view(rank_ * slice(bk), {slice(bk)}).convert_from(bk.send.flat_view(rank_ * slice(bk), {slice(bk)}));
  } else if (stage_ >= 2) {
    Tensor own = grad_shard_.flat_view(bk.shard, {slice(bk)});
    ops::add_(own, bk.recv);
    store_.set_bucket_grads(b, Tensor());  // this layer's gradient memory is released
  }
  bk.send = bk.recv = Tensor();
}

void DistributedOptimizer::poll() {
  for (size_t i = 0; i < in_flight_.size();) {
    const size_t b = in_flight_[i];
    if (buckets_[b].reduce->done()) complete_reduction(b);  // removes it from in_flight_
    else ++i;
  }
}

void DistributedOptimizer::finish_gradient_reduction() {
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const bool pending = stage_ >= 2 ? store_.bucket_grads(b).defined() && !buckets_[b].reduce : !buckets_[b].launched;
    if (pending) launch_reduction(b);
  }
  while (!in_flight_.empty()) complete_reduction(in_flight_.front());
}

void DistributedOptimizer::all_reduce_grads(const std::function<bool(const ParameterInfo&)>& which,
                                            Communicator& group) {
  if (group.size() == 1) return;
  std::vector<const Piece*> mine;
  int64_t n = 0;
  for (const Piece& p : pieces_)
    if (which(store_.infos()[p.param])) {
      mine.push_back(&p);
      n += p.numel;
    }
  if (n == 0) return;
  Tensor packed = Tensor::empty({n}, master_dtype_, MemoryCategory::Communication, store_.device());
  auto copy = [&](bool pack) {
    int64_t at = 0;
    for (const Piece* p : mine) {
      Tensor g = grad_of(*p), part = packed.flat_view(at, {p->numel});
      if (pack) part.convert_from(g);
      else g.convert_from(part);
      at += p->numel;
    }
  };
  copy(true);
  group.all_reduce(packed, ReduceOp::Sum);
  copy(false);
}

std::vector<double> DistributedOptimizer::grad_sums_of_squares() {
  const size_t n = store_.infos().size();
  Tensor sums = Tensor::zeros({static_cast<int64_t>(n)}, DType::F64, MemoryCategory::Communication);
  std::vector<Tensor> grads;  // one launch and one copy back on a GPU
  for (const Piece& p : pieces_) grads.push_back(grad_of(p));
  const std::vector<double> piece_sums = ops::sums_of_squares(grads);
  for (size_t i = 0; i < pieces_.size(); ++i) sums.data<double>()[pieces_[i].param] += piece_sums[i];
  if (shards_ > 1) dp_.all_reduce(sums, ReduceOp::Sum);
  return std::vector<double>(sums.data<double>(), sums.data<double>() + n);
}

void DistributedOptimizer::step(double lr, double grad_scale) {
  adam_->step(lr, grad_scale);  // also rounds the master weights into the model's 16-bit values
  publish_values(/*rounded=*/true);
}

void DistributedOptimizer::publish_values(bool rounded) {
  if (master_.defined() && !rounded)  // the model computes with the rounded master weights
    for (const Piece& p : pieces_) value_of(p).convert_from(master_.flat_view(p.shard, {p.numel}));
  if (stage_ == 1 || stage_ == 2) {  // everyone's updated slices to everyone, in place
    std::vector<CommHandlePtr> handles;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      Tensor full = store_.bucket_values(b);
      handles.push_back(dp_.all_gather_async(full.flat_view(rank_ * slice(buckets_[b]), {slice(buckets_[b])}), full));
    }
    for (auto& h : handles) h->wait();
  }
}

void DistributedOptimizer::poison_gradient() {
  if (pieces_.empty()) return;
  Tensor one = Tensor::empty({1}, DType::F32, MemoryCategory::Other);
  one.data<float>()[0] = NAN;
  grad_of(pieces_.front()).flat_view(0, {1}).convert_from(one);
}

DistributedOptimizer::Snapshot DistributedOptimizer::snapshot() const {
  Snapshot s;
  s.params = Tensor::empty({owned_}, master_dtype_, MemoryCategory::Other);  // host memory, also for a GPU model
  int64_t at = 0;
  for (const AdamWSegment& seg : adam_->segments()) {
    s.params.flat_view(at, {seg.param.numel()}).convert_from(seg.param);
    at += seg.param.numel();
  }
  s.exp_avg = adam_->exp_avg().clone_to(Device::cpu(), MemoryCategory::Other);
  s.exp_avg_sq = adam_->exp_avg_sq().clone_to(Device::cpu(), MemoryCategory::Other);
  s.steps = adam_->steps_taken();
  return s;
}

void DistributedOptimizer::restore(const Snapshot& s) {
  int64_t at = 0;
  for (const AdamWSegment& seg : adam_->segments()) {
    Tensor(seg.param).convert_from(s.params.flat_view(at, {seg.param.numel()}));
    at += seg.param.numel();
  }
  adam_->exp_avg().copy_from(s.exp_avg);
  adam_->exp_avg_sq().copy_from(s.exp_avg_sq);
  adam_->set_steps_taken(s.steps);
  publish_values();
}

Tensor DistributedOptimizer::gather_master_values() {
  if (!master_.defined() && stage_ < 3) return store_.values();
  const Tensor& shard = master_.defined() ? master_ : param_shard_;
  if (shards_ == 1) return shard;  // stage 0: shard space is the flat layout
  Tensor full = Tensor::zeros({store_.padded_numel()}, master_dtype_, MemoryCategory::Communication, store_.device());
  for (const Bucket& b : buckets_) {
    Tensor out = full.flat_view(b.begin, {b.numel});
    dp_.all_gather(shard.flat_view(b.shard, {slice(b)}), out);
  }
  return full;
}

std::unique_ptr<AdamW> DistributedOptimizer::gather_state() {
  // One shard: straight into host memory (no second full copy of the moments on a GPU).
  auto full = std::make_unique<AdamW>(store_, cfg_.adam, shards_ == 1 ? Device::cpu() : store_.device());
  full->set_steps_taken(adam_->steps_taken());
  for (int k = 0; k < 2; ++k) {
    const Tensor& mine = k == 0 ? adam_->exp_avg() : adam_->exp_avg_sq();
    Tensor& out = k == 0 ? full->exp_avg() : full->exp_avg_sq();
    if (shards_ == 1) {
      copy_pieces(mine, &Piece::state, out, &Piece::flat);
      continue;
    }
    // The own moments in shard space (zero in the padding), then each bucket gathered.
    Tensor spread = Tensor::zeros({shard_numel_}, mine.dtype(), MemoryCategory::Communication, store_.device());
    copy_pieces(mine, &Piece::state, spread, &Piece::shard);
    for (const Bucket& b : buckets_) {
      Tensor part = out.flat_view(b.begin, {b.numel});
      dp_.all_gather(spread.flat_view(b.shard, {slice(b)}), part);
    }
  }
  return full;
}

void DistributedOptimizer::load_state(const AdamW& full) {
  adam_->set_steps_taken(full.steps_taken());
  copy_pieces(full.exp_avg(), &Piece::flat, adam_->exp_avg(), &Piece::state);
  copy_pieces(full.exp_avg_sq(), &Piece::flat, adam_->exp_avg_sq(), &Piece::state);
}

void DistributedOptimizer::copy_pieces(const Tensor& src, int64_t Piece::*from, Tensor& dst,
                                       int64_t Piece::*to) const {
  for (size_t i = 0; i < pieces_.size();) {
    const int64_t s0 = pieces_[i].*from, d0 = pieces_[i].*to;
    int64_t n = pieces_[i].numel;
    size_t j = i + 1;
    for (; j < pieces_.size() && pieces_[j].*from == s0 + n && pieces_[j].*to == d0 + n; ++j) n += pieces_[j].numel;
    dst.flat_view(d0, {n}).copy_from(src.flat_view(s0, {n}));
    i = j;
  }
}

}  // namespace llm
