#include "core/ops.h"

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

namespace llm::ops {
namespace {

[[noreturn]] void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("ops::") + op + ": " + what);
}

// Runs f(T{}) with T the C++ type of a floating dtype on the CPU.
template <class F>
void dispatch(const char* op, const Tensor& t, F&& f) {
  if (!t.device().is_cpu())
    fail(op, "tensor on " + t.device().str() + ": the CUDA kernels come with the CUDA backend");
  switch (t.dtype()) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    default: fail(op, std::string("unsupported dtype ") + dtype_name(t.dtype()) + " (F32 or F64)");
  }
}

void same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) fail(op, "dtype mismatch: " + a.str() + " vs " + b.str());
}

void expect_numel(const char* op, const char* what, const Tensor& t, int64_t n) {
  if (t.numel() != n)
    fail(op, std::string(what) + " " + t.str() + " should have " + std::to_string(n) + " elements");
}

int64_t rows_of(const Tensor& t, int64_t cols) { return cols ? t.numel() / cols : 0; }

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  const int64_t out = w.size(0), in = w.size(1), rows = rows_of(x, in);
  expect_numel("linear_forward", "x", x, rows * in);
  expect_numel("linear_forward", "y", y, rows * out);
  same_dtype("linear_forward", x, w);
  dispatch("linear_forward", x, [&](auto z) {
    using T = decltype(z);
    cpu::gemm<T>(false, true, rows, out, in, T(1), x.data<T>(), in, w.data<T>(), in,
                 accumulate ? T(1) : T(0), y.data<T>(), out);
  });
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor& dw) {
  const int64_t out = w.size(0), in = w.size(1), rows = rows_of(x, in);
  expect_numel("linear_backward", "dy", dy, rows * out);
  expect_numel("linear_backward", "dw", dw, out * in);
  dispatch("linear_backward", x, [&](auto z) {
    using T = decltype(z);
    if (dx) {
      expect_numel("linear_backward", "dx", *dx, rows * in);
      cpu::gemm<T>(false, false, rows, in, out, T(1), dy.data<T>(), out, w.data<T>(), in, T(1),
                   dx->data<T>(), in);
    }
    cpu::gemm<T>(true, false, out, in, rows, T(1), dy.data<T>(), out, x.data<T>(), in, T(1),
                 dw.data<T>(), in);
  });
}

void embedding_forward(const Tensor& tokens, const Tensor& table, Tensor& out, int64_t row_begin,
                       int64_t total_vocab) {
  const int64_t vocab = table.size(0), dim = table.size(1), n = tokens.numel();
  expect_numel("embedding_forward", "out", out, n * dim);
  dispatch("embedding_forward", table, [&](auto z) {
    using T = decltype(z);
    cpu::embedding_forward<T>(tokens.data<int32_t>(), n, table.data<T>(), vocab, dim, out.data<T>(), row_begin,
                              total_vocab);
  });
}

void embedding_backward(const Tensor& tokens, const Tensor& dout, Tensor& dtable, int64_t row_begin,
                        int64_t total_vocab) {
  const int64_t vocab = dtable.size(0), dim = dtable.size(1), n = tokens.numel();
  expect_numel("embedding_backward", "dout", dout, n * dim);
  dispatch("embedding_backward", dtable, [&](auto z) {
    using T = decltype(z);
    cpu::embedding_backward<T>(tokens.data<int32_t>(), n, dout.data<T>(), vocab, dim, dtable.data<T>(), row_begin,
                               total_vocab);
  });
}

void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  const int64_t dim = w.numel(), rows = rows_of(x, dim);
  expect_numel("rmsnorm_forward", "y", y, x.numel());
  expect_numel("rmsnorm_forward", "rstd", rstd, rows);
  dispatch("rmsnorm_forward", x, [&](auto z) {
    using T = decltype(z);
    cpu::rmsnorm_forward<T>(x.data<T>(), w.data<T>(), rows, dim, eps, y.data<T>(), rstd.data<T>());
  });
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      Tensor& dx, Tensor& dw) {
  const int64_t dim = w.numel(), rows = rows_of(x, dim);
  expect_numel("rmsnorm_backward", "dx", dx, x.numel());
  expect_numel("rmsnorm_backward", "dy", dy, x.numel());
  expect_numel("rmsnorm_backward", "rstd", rstd, rows);
  expect_numel("rmsnorm_backward", "dw", dw, dim);
  dispatch("rmsnorm_backward", x, [&](auto z) {
    using T = decltype(z);
    cpu::rmsnorm_backward<T>(dy.data<T>(), x.data<T>(), w.data<T>(), rstd.data<T>(), rows, dim,
                             dx.data<T>(), dw.data<T>());
  });
}

static void check_qkv(const char* op, const Tensor& qkv, const QkvLayout& l) {
  expect_numel(op, "qkv", qkv, l.batch * l.seq * l.row_stride());
}

// Applies a rope kernel to the q heads and then the k heads of a fused qkv buffer.
template <class Kernel>
static void rope_qk(const char* op, Tensor& qkv, const QkvLayout& l, Kernel&& kernel) {
  check_qkv(op, qkv, l);
  dispatch(op, qkv, [&](auto z) {
    using T = decltype(z);
    T* q = qkv.data<T>();
    kernel(q, l.heads);
    kernel(q + l.heads * l.head_dim, l.groups);
  });
}

void rope_forward(Tensor& qkv, const QkvLayout& l, int64_t pos_offset, double theta) {
  rope_qk("rope_forward", qkv, l, [&](auto* x, int64_t heads) {
    cpu::rope_forward(x, l.row_stride(), l.batch, l.seq, heads, l.head_dim, pos_offset, theta);
  });
}

void rope_backward(Tensor& dqkv, const QkvLayout& l, int64_t pos_offset, double theta) {
  rope_qk("rope_backward", dqkv, l, [&](auto* x, int64_t heads) {
    cpu::rope_backward(x, l.row_stride(), l.batch, l.seq, heads, l.head_dim, pos_offset, theta);
  });
}

void attention_forward(const Tensor& qkv, const QkvLayout& l, Tensor& out, Tensor& lse) {
  check_qkv("attention_forward", qkv, l);
  expect_numel("attention_forward", "out", out, l.batch * l.seq * l.heads * l.head_dim);
  expect_numel("attention_forward", "lse", lse, l.batch * l.heads * l.seq);
  const int64_t ld = l.row_stride(), hd = l.heads * l.head_dim, gd = l.groups * l.head_dim;
  dispatch("attention_forward", qkv, [&](auto z) {
    using T = decltype(z);
    const T* q = qkv.data<T>();
    cpu::attention_forward<T>(q, ld, q + hd, ld, q + hd + gd, ld, out.data<T>(), hd, lse.data<T>(),
                              l.batch, l.seq, l.seq, l.heads, l.groups, l.head_dim,
                              1.0 / std::sqrt(static_cast<double>(l.head_dim)));
  });
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const QkvLayout& l, const Tensor& out,
                        const Tensor& lse, Tensor& dqkv) {
  check_qkv("attention_backward", qkv, l);
  check_qkv("attention_backward", dqkv, l);
  expect_numel("attention_backward", "dout", dout, l.batch * l.seq * l.heads * l.head_dim);
  expect_numel("attention_backward", "out", out, l.batch * l.seq * l.heads * l.head_dim);
  expect_numel("attention_backward", "lse", lse, l.batch * l.heads * l.seq);
  const int64_t ld = l.row_stride(), hd = l.heads * l.head_dim, gd = l.groups * l.head_dim;
  dispatch("attention_backward", qkv, [&](auto z) {
    using T = decltype(z);
    const T* q = qkv.data<T>();
    T* dq = dqkv.data<T>();
    cpu::attention_backward<T>(dout.data<T>(), hd, q, ld, q + hd, ld, q + hd + gd, ld, out.data<T>(),
                               lse.data<T>(), dq, dq + hd, dq + hd + gd, l.batch, l.seq, l.heads,
                               l.groups, l.head_dim, 1.0 / std::sqrt(static_cast<double>(l.head_dim)));
  });
}

void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t tk,
                      int64_t heads, int64_t groups, int64_t head_dim, Tensor& out) {
  const int64_t hd = heads * head_dim, gd = groups * head_dim, tq = rows_of(q, hd);
  if (tq > tk) fail("attention_decode", "more queries than cached keys");
  if (k_cache.numel() < tk * gd || v_cache.numel() < tk * gd) fail("attention_decode", "KV cache smaller than its length");
  expect_numel("attention_decode", "out", out, tq * hd);
  Tensor lse = Tensor::empty({heads * tq}, q.dtype(), MemoryCategory::Workspace);
  dispatch("attention_decode", q, [&](auto z) {
    using T = decltype(z);
    cpu::attention_forward<T>(q.data<T>(), hd, k_cache.data<T>(), gd, v_cache.data<T>(), gd,
                              out.data<T>(), hd, lse.data<T>(), 1, tq, tk, heads, groups, head_dim,
                              1.0 / std::sqrt(static_cast<double>(head_dim)));
  });
}

void swiglu_forward(const Tensor& gate_up, Tensor& out) {
  const int64_t F = out.size(-1), rows = rows_of(out, F);
  expect_numel("swiglu_forward", "gate_up", gate_up, rows * 2 * F);
  dispatch("swiglu_forward", out, [&](auto z) {
    using T = decltype(z);
    const T* g = gate_up.data<T>();
    cpu::swiglu_forward<T>(g, g + F, 2 * F, out.data<T>(), rows, F);
  });
}

void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) {
  const int64_t F = dout.size(-1), rows = rows_of(dout, F);
  expect_numel("swiglu_backward", "dgate_up", dgate_up, rows * 2 * F);
  dispatch("swiglu_backward", dout, [&](auto z) {
    using T = decltype(z);
    const T* g = gate_up.data<T>();
    T* dg = dgate_up.data<T>();
    cpu::swiglu_backward<T>(dout.data<T>(), g, g + F, 2 * F, dg, dg + F, rows, F);
  });
}

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor& lse) {
  const int64_t V = logits.size(-1), rows = rows_of(logits, V);
  expect_numel("cross_entropy_forward", "targets", targets, rows);
  expect_numel("cross_entropy_forward", "loss", loss, rows);
  expect_numel("cross_entropy_forward", "lse", lse, rows);
  dispatch("cross_entropy_forward", logits, [&](auto z) {
    using T = decltype(z);
    cpu::cross_entropy_forward<T>(logits.data<T>(), targets.data<int32_t>(), rows, V, loss.data<T>(),
                                  lse.data<T>());
  });
}

void cross_entropy_backward_inplace(Tensor& logits, const Tensor& lse, const Tensor& targets,
                                    const Tensor& dloss, int64_t col_begin, int64_t total_V) {
  const int64_t V = logits.size(-1), rows = rows_of(logits, V);
  expect_numel("cross_entropy_backward", "targets", targets, rows);
  expect_numel("cross_entropy_backward", "lse", lse, rows);
  expect_numel("cross_entropy_backward", "dloss", dloss, rows);
  dispatch("cross_entropy_backward", logits, [&](auto z) {
    using T = decltype(z);
    cpu::cross_entropy_backward<T>(logits.data<T>(), lse.data<T>(), targets.data<int32_t>(),
                                   dloss.data<T>(), rows, V, logits.data<T>(), col_begin, total_V);
  });
}

void cross_entropy_row_max(const Tensor& logits, Tensor& row_max) {
  const int64_t V = logits.size(-1), rows = rows_of(logits, V);
  expect_numel("cross_entropy_row_max", "row_max", row_max, rows);
  dispatch("cross_entropy_row_max", logits, [&](auto z) {
    using T = decltype(z);
    cpu::cross_entropy_row_max<T>(logits.data<T>(), rows, V, row_max.data<T>());
  });
}

void cross_entropy_partial_sums(const Tensor& logits, const Tensor& targets, int64_t col_begin, int64_t total_V,
                                const Tensor& row_max, Tensor& stats) {
  const int64_t V = logits.size(-1), rows = rows_of(logits, V);
  expect_numel("cross_entropy_partial_sums", "targets", targets, rows);
  expect_numel("cross_entropy_partial_sums", "row_max", row_max, rows);
  expect_numel("cross_entropy_partial_sums", "stats", stats, 2 * rows);
  if (stats.dtype() != DType::F64) fail("cross_entropy_partial_sums", "stats must be F64");
  dispatch("cross_entropy_partial_sums", logits, [&](auto z) {
    using T = decltype(z);
    double* st = stats.data<double>();
    cpu::cross_entropy_partial_sums<T>(logits.data<T>(), targets.data<int32_t>(), rows, V, col_begin, total_V,
                                       row_max.data<T>(), st, st + rows);
  });
}

void add_(Tensor& y, const Tensor& x) {
  expect_numel("add_", "x", x, y.numel());
  if (x.dtype() != y.dtype()) fail("add_", "x and y differ in dtype");
  dispatch("add_", y, [&](auto z) {
    using T = decltype(z);
    cpu::add_inplace<T>(y.data<T>(), x.data<T>(), y.numel());
  });
}

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWParams& p) {
  const int64_t n = param.numel();
  expect_numel("adamw_step", "grad", grad, n);
  expect_numel("adamw_step", "exp_avg", exp_avg, n);
  expect_numel("adamw_step", "exp_avg_sq", exp_avg_sq, n);
  dispatch("adamw_step", param, [&](auto z) {
    using T = decltype(z);
    cpu::adamw_step<T>(param.data<T>(), grad.data<T>(), exp_avg.data<T>(), exp_avg_sq.data<T>(), n,
                       p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, p.step, p.grad_scale);
  });
}

double sum_of_squares(const Tensor& x) {
  double r = 0;
  dispatch("sum_of_squares", x, [&](auto z) {
    using T = decltype(z);
    r = cpu::sum_of_squares<T>(x.data<T>(), x.numel());
  });
  return r;
}

bool all_finite(const Tensor& x) {
  bool r = true;
  dispatch("all_finite", x, [&](auto z) {
    using T = decltype(z);
    r = cpu::all_finite<T>(x.data<T>(), x.numel());
  });
  return r;
}

}  // namespace llm::ops
