#include "core/ops.h"

#include <array>
#include <cmath>
#include <stdexcept>
#include <string>

#include "core/cpu/adamw.h"
#include "core/cpu/attention.h"
#include "core/cpu/cross_entropy.h"
#include "core/cpu/elementwise.h"
#include "core/cpu/embedding.h"
#include "core/cpu/gemm.h"
#include "core/cpu/grad_norm.h"
#include "core/cpu/rmsnorm.h"
#include "core/cpu/rope.h"
#include "core/cpu/swiglu.h"
#ifdef LLM_WITH_CUDA
#include "core/cuda/cuda_ops.h"
// An op whose first tensor is on a CUDA device runs the CUDA backend's op of the
// same name and signature (it checks the other operands' devices).
#define LLM_ON_CUDA(t, ...)                     \
  do {                                          \
    if (!(t).device().is_cpu()) {               \
      cuda::__VA_ARGS__;                        \
      return;                                   \
    }                                           \
  } while (0)
#else
#define LLM_ON_CUDA(t, ...) \
  do {                      \
  } while (0)
#endif

namespace llm::ops {
namespace {

[[noreturn]] void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("ops::") + op + ": " + what);
}

void check_cpu(const char* op, const Tensor& t) {
  if (!t.device().is_cpu())
    fail(op, "tensor on " + t.device().str() + ": the CUDA kernels come with the CUDA backend");
}

[[noreturn]] void fail_dtype(const char* op, const Tensor& t) {
  fail(op, std::string("unsupported dtype ") + dtype_name(t.dtype()) + " (F32, F64, BF16 or F16)");
}

// Runs f(T{}) with T the C++ type of a floating dtype on the CPU, 16-bit storage types
// included (for the ops that read them directly: sum_of_squares, all_finite).
template <class F>
void dispatch(const char* op, const Tensor& t, F&& f) {
  check_cpu(op, t);
  switch (t.dtype()) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    case DType::BF16: f(bf16{}); return;
    case DType::F16: f(f16{}); return;
    default: fail_dtype(op, t);
  }
}

// ---------------------------------------------------------------------------
// 16-bit operands: "compute in fp32, store in 16 bits".
//
// An op lists its floating operands in an OpCall (in, out or inout), then run()s its
// kernel. All F64: the F64 kernel on the tensors themselves. Otherwise every operand is
// F32, BF16 or F16 and the F32 kernel runs; an F32 operand is used as it is, a 16-bit
// one through an F32 copy charged to MemoryCategory::Workspace: holding its values for
// in and inout, uninitialised for out (the kernels write every element of those).
// After the kernel the copies of out and inout operands are rounded back into their
// 16-bit storage; if the kernel throws, no output is touched. Operands that share
// memory get separate copies: an op that reads and writes one buffer in place (rope,
// cross_entropy_backward_inplace) registers it once, as inout.

enum class Use { In, Out, InOut };

// One operand: the caller's tensor, and for a 16-bit one under the F32 kernel its copy.
class Fp32Operand {
 public:
  template <class T> T* data() const { return (work_.defined() ? work_ : *orig_).data<T>(); }

 private:
  friend class OpCall;
  void prepare() {
    if (!is_half_dtype(orig_->dtype())) return;
    if (use_ == Use::Out) work_ = Tensor::empty(orig_->shape(), DType::F32, MemoryCategory::Workspace);
    else work_ = orig_->to(DType::F32, MemoryCategory::Workspace);
  }
  void commit() {
    if (use_ == Use::In || !work_.defined()) return;
    Tensor dst = *orig_;  // a view of the same storage
    dst.convert_from(work_);
  }
  const Tensor* orig_ = nullptr;
  Use use_ = Use::In;
  Tensor work_;  // the F32 copy; undefined when the kernel uses *orig_ itself
};

class OpCall {
 public:
  explicit OpCall(const char* op) : op_(op) {}
  OpCall(const OpCall&) = delete;
  OpCall& operator=(const OpCall&) = delete;

  const Fp32Operand& in(const Tensor& t) { return add(t, Use::In); }
  const Fp32Operand& out(const Tensor& t) { return add(t, Use::Out); }
  const Fp32Operand& inout(const Tensor& t) { return add(t, Use::InOut); }

  // Checks the operands' dtypes and devices, makes the F32 copies, runs f(T{}) with T
  // double (all F64) or float, and rounds the 16-bit outputs back.
  template <class F>
  void run(F&& f) {
    const Tensor* f64 = nullptr;
    const Tensor* other = nullptr;
    for (size_t i = 0; i < n_; ++i) {
      const Tensor& t = *ops_[i].orig_;
      check_cpu(op_, t);
      if (t.dtype() == DType::F64) f64 = f64 ? f64 : &t;
      else if (t.dtype() == DType::F32 || is_half_dtype(t.dtype())) other = other ? other : &t;
      else fail_dtype(op_, t);
    }
    if (f64 && other) fail(op_, "dtype mismatch: " + f64->str() + " vs " + other->str());
    if (f64) return f(double{});
    for (size_t i = 0; i < n_; ++i) ops_[i].prepare();
    f(float{});
    for (size_t i = 0; i < n_; ++i) ops_[i].commit();
  }

 private:
  const Fp32Operand& add(const Tensor& t, Use use) {
    if (n_ == ops_.size()) throw std::logic_error(std::string("ops::") + op_ + ": too many operands");
    Fp32Operand& o = ops_[n_++];
    o.orig_ = &t;
    o.use_ = use;
    return o;
  }
  const char* op_;
  std::array<Fp32Operand, 8> ops_;
  size_t n_ = 0;
};

void expect_numel(const char* op, const char* what, const Tensor& t, int64_t n) {
  if (t.numel() != n)
    fail(op, std::string(what) + " " + t.str() + " should have " + std::to_string(n) + " elements");
}

int64_t rows_of(const Tensor& t, int64_t cols) { return cols ? t.numel() / cols : 0; }

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  LLM_ON_CUDA(x, linear_forward(x, w, y, accumulate));
  const int64_t out = w.size(0), in = w.size(1), rows = rows_of(x, in);
  expect_numel("linear_forward", "x", x, rows * in);
  expect_numel("linear_forward", "y", y, rows * out);
  OpCall call("linear_forward");
  const auto &X = call.in(x), &W = call.in(w), &Y = accumulate ? call.inout(y) : call.out(y);
  call.run([&](auto z) {
    using T = decltype(z);
    cpu::gemm<T>(false, true, rows, out, in, T(1), X.data<T>(), in, W.data<T>(), in,
                 accumulate ? T(1) : T(0), Y.data<T>(), out);
  });
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor& dw) {
  LLM_ON_CUDA(dy, linear_backward(dy, x, w, dx, dw));
  const int64_t out = w.size(0), in = w.size(1), rows = rows_of(x, in);
  expect_numel("linear_backward", "dy", dy, rows * out);
  expect_numel("linear_backward", "dw", dw, out * in);
  if (dx) expect_numel("linear_backward", "dx", *dx, rows * in);
  OpCall call("linear_backward");
  const auto &DY = call.in(dy), &X = call.in(x), &W = call.in(w), &DW = call.inout(dw);
  const Fp32Operand* DX = dx ? &call.inout(*dx) : nullptr;
  call.run([&](auto z) {
    using T = decltype(z);
    if (DX)
      cpu::gemm<T>(false, false, rows, in, out, T(1), DY.data<T>(), out, W.data<T>(), in, T(1),
                   DX->data<T>(), in);
    cpu::gemm<T>(true, false, out, in, rows, T(1), DY.data<T>(), out, X.data<T>(), in, T(1),
                 DW.data<T>(), in);
  });
}

void embedding_forward(const Tensor& tokens, const Tensor& table, Tensor& out, int64_t row_begin,
                       int64_t total_vocab) {
  LLM_ON_CUDA(table, embedding_forward(tokens, table, out, row_begin, total_vocab));
  const int64_t vocab = table.size(0), dim = table.size(1), n = tokens.numel();
  expect_numel("embedding_forward", "out", out, n * dim);
  OpCall call("embedding_forward");
  const auto &TABLE = call.in(table), &OUT = call.out(out);
  call.run([&](auto z) {
    using T = decltype(z);
    cpu::embedding_forward<T>(tokens.data<int32_t>(), n, TABLE.data<T>(), vocab, dim, OUT.data<T>(), row_begin,
                              total_vocab);
  });
}

void embedding_backward(const Tensor& tokens, const Tensor& dout, Tensor& dtable, int64_t row_begin,
                        int64_t total_vocab) {
  LLM_ON_CUDA(dout, embedding_backward(tokens, dout, dtable, row_begin, total_vocab));
  const int64_t vocab = dtable.size(0), dim = dtable.size(1), n = tokens.numel();
  expect_numel("embedding_backward", "dout", dout, n * dim);
  OpCall call("embedding_backward");
  const auto &DOUT = call.in(dout), &DTABLE = call.inout(dtable);
  call.run([&](auto z) {
    using T = decltype(z);
    cpu::embedding_backward<T>(tokens.data<int32_t>(), n, DOUT.data<T>(), vocab, dim, DTABLE.data<T>(), row_begin,
                               total_vocab);
  });
}

void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  LLM_ON_CUDA(x, rmsnorm_forward(x, w, eps, y, rstd));
  const int64_t dim = w.numel(), rows = rows_of(x, dim);
  expect_numel("rmsnorm_forward", "y", y, x.numel());
  expect_numel("rmsnorm_forward", "rstd", rstd, rows);
  OpCall call("rmsnorm_forward");
  const auto &X = call.in(x), &W = call.in(w), &Y = call.out(y), &RSTD = call.out(rstd);
  call.run([&](auto z) {
    using T = decltype(z);
    cpu::rmsnorm_forward<T>(X.data<T>(), W.data<T>(), rows, dim, eps, Y.data<T>(), RSTD.data<T>());
  });
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      Tensor& dx, Tensor& dw) {
  LLM_ON_CUDA(dy, rmsnorm_backward(dy, x, w, rstd, dx, dw));
  const int64_t dim = w.numel(), rows = rows_of(x, dim);
  expect_numel("rmsnorm_backward", "dx", dx, x.numel());
  expect_numel("rmsnorm_backward", "dy", dy, x.numel());
  expect_numel("rmsnorm_backward", "rstd", rstd, rows);
  expect_numel("rmsnorm_backward", "dw", dw, dim);
  OpCall call("rmsnorm_backward");
  const auto &DY = call.in(dy), &X = call.in(x), &W = call.in(w), &RSTD = call.in(rstd);
  const auto &DX = call.inout(dx), &DW = call.inout(dw);
  call.run([&](auto z) {
    using T = decltype(z);
    cpu::rmsnorm_backward<T>(DY.data<T>(), X.data<T>(), W.data<T>(), RSTD.data<T>(), rows, dim,
                             DX.data<T>(), DW.data<T>());
  });
}

void add_rmsnorm_forward(const Tensor& x, const Tensor& residual, const Tensor& w, double eps, Tensor& h,
                         Tensor& y, Tensor& rstd) {
  LLM_ON_CUDA(x, add_rmsnorm_forward(x, residual, w, eps, h, y, rstd));
  expect_numel("add_rmsnorm_forward", "residual", residual, x.numel());
  expect_numel("add_rmsnorm_forward", "h", h, x.numel());
  // The CPU runs the two passes; the result is the same: h is rounded to its dtype
  // before the norm reads it, as the fused GPU kernel does.
  if (h.raw() != x.raw()) h.copy_from(x);
  add_(h, residual);
  rmsnorm_forward(h, w, eps, y, rstd);
}

static void check_qkv(const char* op, const Tensor& qkv, const QkvLayout& l) {
  expect_numel(op, "qkv", qkv, l.batch * l.seq * l.row_stride());
}

// Applies a rope kernel (in place) to the q heads and then the k heads of a fused qkv buffer.
template <class Kernel>
static void rope_qk(const char* op, Tensor& qkv, const QkvLayout& l, Kernel&& kernel) {
  check_qkv(op, qkv, l);
  OpCall call(op);
  const auto& QKV = call.inout(qkv);
  call.run([&](auto z) {
    using T = decltype(z);
    T* q = QKV.data<T>();
    kernel(q, l.heads);
    kernel(q + l.heads * l.head_dim, l.groups);
  });
}

void rope_forward(Tensor& qkv, const QkvLayout& l, int64_t pos_offset, double theta) {
  LLM_ON_CUDA(qkv, rope_forward(qkv, l, pos_offset, theta));
  rope_qk("rope_forward", qkv, l, [&](auto* x, int64_t heads) {
    cpu::rope_forward(x, l.row_stride(), l.batch, l.seq, heads, l.head_dim, pos_offset, theta);
  });
}

void rope_backward(Tensor& dqkv, const QkvLayout& l, int64_t pos_offset, double theta) {
  LLM_ON_CUDA(dqkv, rope_backward(dqkv, l, pos_offset, theta));
  rope_qk("rope_backward", dqkv, l, [&](auto* x, int64_t heads) {
    cpu::rope_backward(x, l.row_stride(), l.batch, l.seq, heads, l.head_dim, pos_offset, theta);
  });
}

void attention_forward(const Tensor& qkv, const QkvLayout& l, Tensor& out, Tensor& lse) {
  LLM_ON_CUDA(qkv, attention_forward(qkv, l, out, lse));
  check_qkv("attention_forward", qkv, l);
  expect_numel("attention_forward", "out", out, l.batch * l.seq * l.heads * l.head_dim);
  expect_numel("attention_forward", "lse", lse, l.batch * l.heads * l.seq);
  const int64_t ld = l.row_stride(), hd = l.heads * l.head_dim, gd = l.groups * l.head_dim;
  OpCall call("attention_forward");
  const auto &QKV = call.in(qkv), &OUT = call.out(out), &LSE = call.out(lse);
  call.run([&](auto z) {
    using T = decltype(z);
    const T* q = QKV.data<T>();
    cpu::attention_forward<T>(q, ld, q + hd, ld, q + hd + gd, ld, OUT.data<T>(), hd, LSE.data<T>(),
                              l.batch, l.seq, l.seq, l.heads, l.groups, l.head_dim,
                              1.0 / std::sqrt(static_cast<double>(l.head_dim)));
  });
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const QkvLayout& l, const Tensor& out,
                        const Tensor& lse, Tensor& dqkv) {
  LLM_ON_CUDA(qkv, attention_backward(dout, qkv, l, out, lse, dqkv));
  check_qkv("attention_backward", qkv, l);
  check_qkv("attention_backward", dqkv, l);
  expect_numel("attention_backward", "dout", dout, l.batch * l.seq * l.heads * l.head_dim);
  expect_numel("attention_backward", "out", out, l.batch * l.seq * l.heads * l.head_dim);
  expect_numel("attention_backward", "lse", lse, l.batch * l.heads * l.seq);
  const int64_t ld = l.row_stride(), hd = l.heads * l.head_dim, gd = l.groups * l.head_dim;
  OpCall call("attention_backward");
  const auto &DOUT = call.in(dout), &QKV = call.in(qkv), &OUT = call.in(out), &LSE = call.in(lse);
  const auto& DQKV = call.inout(dqkv);
  call.run([&](auto z) {
    using T = decltype(z);
    const T* q = QKV.data<T>();
    T* dq = DQKV.data<T>();
    cpu::attention_backward<T>(DOUT.data<T>(), hd, q, ld, q + hd, ld, q + hd + gd, ld, OUT.data<T>(),
                               LSE.data<T>(), dq, dq + hd, dq + hd + gd, l.batch, l.seq, l.heads,
                               l.groups, l.head_dim, 1.0 / std::sqrt(static_cast<double>(l.head_dim)));
  });
}

void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t tk,
                      int64_t heads, int64_t groups, int64_t head_dim, Tensor& out) {
  LLM_ON_CUDA(q, attention_decode(q, k_cache, v_cache, tk, heads, groups, head_dim, out));
  const int64_t hd = heads * head_dim, gd = groups * head_dim, tq = rows_of(q, hd);
  if (tq > tk) fail("attention_decode", "more queries than cached keys");
  if (k_cache.numel() < tk * gd || v_cache.numel() < tk * gd) fail("attention_decode", "KV cache smaller than its length");
  expect_numel("attention_decode", "out", out, tq * hd);
  OpCall call("attention_decode");
  const auto &Q = call.in(q), &K = call.in(k_cache), &V = call.in(v_cache), &OUT = call.out(out);
  call.run([&](auto z) {
    using T = decltype(z);
    Tensor lse = Tensor::empty({heads * tq}, dtype_of<T>(), MemoryCategory::Workspace);
    cpu::attention_forward<T>(Q.data<T>(), hd, K.data<T>(), gd, V.data<T>(), gd, OUT.data<T>(), hd,
                              lse.data<T>(), 1, tq, tk, heads, groups, head_dim,
                              1.0 / std::sqrt(static_cast<double>(head_dim)));
  });
}

void swiglu_forward(const Tensor& gate_up, Tensor& out) {
  LLM_ON_CUDA(gate_up, swiglu_forward(gate_up, out));
  const int64_t F = out.size(-1), rows = rows_of(out, F);
  expect_numel("swiglu_forward", "gate_up", gate_up, rows * 2 * F);
  OpCall call("swiglu_forward");
  const auto &GU = call.in(gate_up), &OUT = call.out(out);
  call.run([&](auto z) {
    using T = decltype(z);
    const T* g = GU.data<T>();
    cpu::swiglu_forward<T>(g, g + F, 2 * F, OUT.data<T>(), rows, F);
  });
}

void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) {
  LLM_ON_CUDA(dout, swiglu_backward(dout, gate_up, dgate_up));
  const int64_t F = dout.size(-1), rows = rows_of(dout, F);
  expect_numel("swiglu_backward", "dgate_up", dgate_up, rows * 2 * F);
  OpCall call("swiglu_backward");
  const auto &DOUT = call.in(dout), &GU = call.in(gate_up), &DGU = call.inout(dgate_up);
  call.run([&](auto z) {
    using T = decltype(z);
    const T* g = GU.data<T>();
    T* dg = DGU.data<T>();
    cpu::swiglu_backward<T>(DOUT.data<T>(), g, g + F, 2 * F, dg, dg + F, rows, F);
  });
}

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor& lse) {
  LLM_ON_CUDA(logits, cross_entropy_forward(logits, targets, loss, lse));
  const int64_t V = logits.size(-1), rows = rows_of(logits, V);
  expect_numel("cross_entropy_forward", "targets", targets, rows);
  expect_numel("cross_entropy_forward", "loss", loss, rows);
  expect_numel("cross_entropy_forward", "lse", lse, rows);
  OpCall call("cross_entropy_forward");
  const auto &LOGITS = call.in(logits), &LOSS = call.out(loss), &LSE = call.out(lse);
  call.run([&](auto z) {
    using T = decltype(z);
    cpu::cross_entropy_forward<T>(LOGITS.data<T>(), targets.data<int32_t>(), rows, V, LOSS.data<T>(),
                                  LSE.data<T>());
  });
}

void cross_entropy_backward_inplace(Tensor& logits, const Tensor& lse, const Tensor& targets,
                                    const Tensor& dloss, int64_t col_begin, int64_t total_V) {
  LLM_ON_CUDA(logits, cross_entropy_backward_inplace(logits, lse, targets, dloss, col_begin, total_V));
  const int64_t V = logits.size(-1), rows = rows_of(logits, V);
  expect_numel("cross_entropy_backward", "targets", targets, rows);
  expect_numel("cross_entropy_backward", "lse", lse, rows);
  expect_numel("cross_entropy_backward", "dloss", dloss, rows);
  OpCall call("cross_entropy_backward");
  const auto &LOGITS = call.inout(logits), &LSE = call.in(lse), &DLOSS = call.in(dloss);
  call.run([&](auto z) {
    using T = decltype(z);
    cpu::cross_entropy_backward<T>(LOGITS.data<T>(), LSE.data<T>(), targets.data<int32_t>(),
                                   DLOSS.data<T>(), rows, V, LOGITS.data<T>(), col_begin, total_V);
  });
}

void cross_entropy_row_max(const Tensor& logits, Tensor& row_max) {
  LLM_ON_CUDA(logits, cross_entropy_row_max(logits, row_max));
  const int64_t V = logits.size(-1), rows = rows_of(logits, V);
  expect_numel("cross_entropy_row_max", "row_max", row_max, rows);
  OpCall call("cross_entropy_row_max");
  const auto &LOGITS = call.in(logits), &MAX = call.out(row_max);
  call.run([&](auto z) {
    using T = decltype(z);
    cpu::cross_entropy_row_max<T>(LOGITS.data<T>(), rows, V, MAX.data<T>());
  });
}

void cross_entropy_partial_sums(const Tensor& logits, const Tensor& targets, int64_t col_begin, int64_t total_V,
                                const Tensor& row_max, Tensor& stats) {
  LLM_ON_CUDA(logits, cross_entropy_partial_sums(logits, targets, col_begin, total_V, row_max, stats));
  const int64_t V = logits.size(-1), rows = rows_of(logits, V);
  expect_numel("cross_entropy_partial_sums", "targets", targets, rows);
  expect_numel("cross_entropy_partial_sums", "row_max", row_max, rows);
  expect_numel("cross_entropy_partial_sums", "stats", stats, 2 * rows);
  if (stats.dtype() != DType::F64) fail("cross_entropy_partial_sums", "stats must be F64");
  OpCall call("cross_entropy_partial_sums");
  const auto &LOGITS = call.in(logits), &MAX = call.in(row_max);
  call.run([&](auto z) {
    using T = decltype(z);
    double* st = stats.data<double>();
    cpu::cross_entropy_partial_sums<T>(LOGITS.data<T>(), targets.data<int32_t>(), rows, V, col_begin, total_V,
                                       MAX.data<T>(), st, st + rows);
  });
}

void add_(Tensor& y, const Tensor& x) {
  LLM_ON_CUDA(y, add_(y, x));
  expect_numel("add_", "x", x, y.numel());
  if ((x.dtype() == DType::F64) != (y.dtype() == DType::F64)) fail("add_", "x and y differ in dtype");
  OpCall call("add_");
  const auto &Y = call.inout(y), &X = call.in(x);
  call.run([&](auto z) {
    using T = decltype(z);
    cpu::add_inplace<T>(Y.data<T>(), X.data<T>(), y.numel());
  });
}

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWParams& p) {
  LLM_ON_CUDA(param, adamw_step(param, grad, exp_avg, exp_avg_sq, p));
  const int64_t n = param.numel();
  expect_numel("adamw_step", "grad", grad, n);
  expect_numel("adamw_step", "exp_avg", exp_avg, n);
  expect_numel("adamw_step", "exp_avg_sq", exp_avg_sq, n);
  OpCall call("adamw_step");
  const auto &P = call.inout(param), &G = call.in(grad), &M = call.inout(exp_avg), &V = call.inout(exp_avg_sq);
  call.run([&](auto z) {
    using T = decltype(z);
    cpu::adamw_step<T>(P.data<T>(), G.data<T>(), M.data<T>(), V.data<T>(), n, p.lr, p.beta1, p.beta2, p.eps,
                       p.weight_decay, p.step, p.grad_scale);
  });
}

void adamw_multi_step(const std::vector<AdamWSegmentTensors>& segments, const AdamWParams& p) {
  if (segments.empty()) return;
  LLM_ON_CUDA(segments.front().param, adamw_multi_step(segments, p));
  for (const AdamWSegmentTensors& s : segments) {
    AdamWParams q = p;
    q.weight_decay = s.weight_decay;
    Tensor param = s.param, m = s.exp_avg, v = s.exp_avg_sq;
    adamw_step(param, s.grad, m, v, q);
    if (s.model_copy.defined()) Tensor(s.model_copy).convert_from(param);
  }
}

std::vector<double> sums_of_squares(const std::vector<Tensor>& xs) {
#ifdef LLM_WITH_CUDA
  if (!xs.empty() && !xs.front().device().is_cpu()) return cuda::sums_of_squares(xs);
#endif
  std::vector<double> r;
  r.reserve(xs.size());
  for (const Tensor& x : xs) r.push_back(sum_of_squares(x));
  return r;
}

double sum_of_squares(const Tensor& x) {
#ifdef LLM_WITH_CUDA
  if (!x.device().is_cpu()) return cuda::sum_of_squares(x);
#endif
  double r = 0;
  dispatch("sum_of_squares", x, [&](auto z) {
    using T = decltype(z);
    r = cpu::sum_of_squares<T>(x.data<T>(), x.numel());
  });
  return r;
}

bool all_finite(const Tensor& x) {
#ifdef LLM_WITH_CUDA
  if (!x.device().is_cpu()) return cuda::all_finite(x);
#endif
  bool r = true;
  dispatch("all_finite", x, [&](auto z) {
    using T = decltype(z);
    r = cpu::all_finite<T>(x.data<T>(), x.numel());
  });
  return r;
}

}  // namespace llm::ops
