// AdamW on the GPU, in PyTorch's order of operations exactly as core/cpu/adamw.h
// documents it (single-tensor torch.optim.AdamW):
//   g = grad·grad_scale;  p ← p·(1 − lr·wd);  m ← lerp(m, g, 1 − β1);
//   v ← β2·v + (1 − β2)·g²;  p ← p − (lr/(1 − β1^t))·m/(sqrt(v)/sqrt(1 − β2^t) + eps)
// Scalars are formed in double on the host and rounded to float, the element
// math is fp32 (IEEE sqrt and division). Master weights and both moments are
// F32; the gradient may be F32, BF16 or F16 (read as fp32); an optional 16-bit
// (or F32) model copy receives the updated parameter, rounded, in the same pass.
//
// adamw_multi_step updates every segment in ONE launch: a table of
// {param, grad, m, v, copy, n, weight decay, first block} is built per call on
// the host and staged into device memory on the current stream (so it is in
// place before the kernel runs and freed only after it); each block finds its
// segment by binary search over the first-block column. Each block updates 4096
// elements of one segment with 16-byte vectors (4 floats) where the segment's
// pointers are aligned after a common scalar head, and scalars otherwise.
//
// Bytes moved per element: 24 (param, m, v read and written, fp32)
//   + sizeof(grad) + sizeof(model copy) when there is one;
//   e.g. 28 with a BF16 grad and no copy, 30 with a BF16 grad and a BF16 copy.
#include <cmath>
#include <vector>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/kernel_utils.cuh"

namespace llm::ops::cuda {
using namespace kernels;
namespace {

enum ElemType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2, kNone = 3 };

struct Segment {
  float* param;
  const void* grad;
  float* m;
  float* v;
  void* copy;           // null: no model copy
  int64_t n;            // elements
  int64_t head;         // scalar elements before the aligned vector body; −1: all scalar
  int64_t block_begin;  // the segment's first block in the grid
  float decay;          // 1 − lr·weight_decay, rounded to float
  uint8_t grad_type, copy_type;
};

struct Coefs {
  float scale, lerp_coef, b2, one_minus_b2, bc2_sqrt, eps, neg_step_size;
  bool small_w;
};

constexpr int kThreads = 256, kN = 4;
constexpr int64_t kChunk = kThreads * kN * 4;  // elements per block

__device__ __forceinline__ void update(float& p, float g, float& m, float& v, float decay, const Coefs& c) {
  g = g * c.scale;
  p = p * decay;
  // PyTorch's lerp: start + w·(end − start) for |w| < 0.5, else end + (w − 1)·(end − start).
  m = fmaf(c.lerp_coef, g - m, c.small_w ? m : g);
  v = v * c.b2 + c.one_minus_b2 * g * g;
  p = p + c.neg_step_size * m / (sqrtf(v) / c.bc2_sqrt + c.eps);
}

template <class G, class C>
__device__ __forceinline__ void update_scalar(const Segment& s, int64_t i, const Coefs& c) {
  float p = s.param[i], m = s.m[i], v = s.v[i];
  update(p, to_float(static_cast<const G*>(s.grad)[i]), m, v, s.decay, c);
  s.param[i] = p;
  s.m[i] = m;
  s.v[i] = v;
  if constexpr (!std::is_void_v<C>) static_cast<C*>(s.copy)[i] = from_float<C>(p);
}

// Block `local` of segment s.
template <class G, class C>
__device__ void update_block(const Segment& s, int64_t local, const Coefs& c) {
  if (s.head < 0) {
    const int64_t begin = local * kChunk, end = begin + kChunk < s.n ? begin + kChunk : s.n;
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) update_scalar<G, C>(s, i, c);
    return;
  }
  const int64_t body_end = s.head + (s.n - s.head) / kN * kN;
  const int64_t begin = s.head + local * kChunk, end = begin + kChunk < body_end ? begin + kChunk : body_end;
  for (int64_t i = begin + threadIdx.x * kN; i < end; i += kThreads * kN) {
    Vec<float, kN> p = load_vec<kN>(s.param + i), m = load_vec<kN>(s.m + i), v = load_vec<kN>(s.v + i);
    float g[kN];
    load_floats<kN>(static_cast<const G*>(s.grad) + i, g);
#pragma unroll
    for (int k = 0; k < kN; ++k) update(p.v[k], g[k], m.v[k], v.v[k], s.decay, c);
    store_vec<kN>(s.param + i, p);
    store_vec<kN>(s.m + i, m);
    store_vec<kN>(s.v + i, v);
    if constexpr (!std::is_void_v<C>) store_floats<kN>(static_cast<C*>(s.copy) + i, p.v);
  }
  if (local == 0) {  // the scalar head and tail
    const int64_t nscalar = s.head + (s.n - body_end);
    for (int64_t j = threadIdx.x; j < nscalar; j += kThreads)
      update_scalar<G, C>(s, j < s.head ? j : body_end + (j - s.head), c);
  }
}

template <class G>
__device__ void update_block_copy(const Segment& s, int64_t local, const Coefs& c) {
  switch (s.copy_type) {
    case kF32: update_block<G, float>(s, local, c); break;
    case kBF16: update_block<G, __nv_bfloat16>(s, local, c); break;
    case kF16: update_block<G, __half>(s, local, c); break;
    default: update_block<G, void>(s, local, c); break;
  }
}

// table == nullptr: one segment, `single` (adamw_step: no table to stage).
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(const Segment* table, int nseg, const Segment single, const Coefs c) {
  const int64_t b = blockIdx.x;
  Segment s = single;
  if (table) {
    int lo = 0, hi = nseg - 1;  // the last segment starting at or before block b
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (table[mid].block_begin <= b) lo = mid;
      else hi = mid - 1;
    }
    s = table[lo];
  }
  const int64_t local = b - s.block_begin;
  switch (s.grad_type) {
    case kF32: update_block_copy<float>(s, local, c); break;
    case kBF16: update_block_copy<__nv_bfloat16>(s, local, c); break;
    default: update_block_copy<__half>(s, local, c); break;
  }
}

uint8_t elem_type(DType t) {
  switch (t) {
    case DType::F32: return kF32;
    case DType::BF16: return kBF16;
    case DType::F16: return kF16;
    default: return kNone;
  }
}

Coefs coefs(const AdamWParams& p) {
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  Coefs c{};
  c.scale = static_cast<float>(p.grad_scale);
  const float w1 = static_cast<float>(1.0 - p.beta1);  // lerp weight
  c.small_w = std::abs(w1) < 0.5f;
  c.lerp_coef = c.small_w ? w1 : w1 - 1.0f;
  c.b2 = static_cast<float>(p.beta2);
  c.one_minus_b2 = static_cast<float>(1.0 - p.beta2);
  c.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  c.eps = static_cast<float>(p.eps);
  c.neg_step_size = static_cast<float>(-(p.lr / bc1));
  return c;
}

// Checks one segment's tensors and describes it (block_begin left 0).
Segment describe(const char* op, const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                 const Tensor* copy, double lr, double weight_decay, Device dev) {
  expect(op, "param", param, dev, DType::F32);
  expect_device(op, "grad", grad, dev);
  expect_floating(op, "grad", grad);
  expect(op, "exp_avg", m, dev, DType::F32);
  expect(op, "exp_avg_sq", v, dev, DType::F32);
  const int64_t n = param.numel();
  expect_numel(op, "grad", grad, n);
  expect_numel(op, "exp_avg", m, n);
  expect_numel(op, "exp_avg_sq", v, n);
  if (copy) {
    expect_device(op, "model_copy", *copy, dev);
    expect_floating(op, "model_copy", *copy);
    expect_numel(op, "model_copy", *copy, n);
  }
  Segment s{};
  s.param = ptr<float>(param);
  s.grad = grad.raw();
  s.m = ptr<float>(m);
  s.v = ptr<float>(v);
  s.copy = copy ? copy->raw() : nullptr;
  s.n = n;
  s.decay = static_cast<float>(1.0 - lr * weight_decay);
  s.grad_type = elem_type(grad.dtype());
  s.copy_type = copy ? elem_type(copy->dtype()) : kNone;
  // The vector body starts where param is 16-byte aligned; every other pointer
  // must be aligned for its 4-element access there too.
  const int64_t head = elements_to_align16(s.param);
  const size_t gs = dtype_size(grad.dtype()), cs = copy ? dtype_size(copy->dtype()) : 0;
  const char* gp = static_cast<const char*>(s.grad) + head * gs;
  const bool ok = head < n && aligned(s.m + head, 16) && aligned(s.v + head, 16) && aligned(gp, 4 * gs) &&
                  (!copy || aligned(static_cast<const char*>(s.copy) + head * cs, 4 * cs));
  s.head = ok ? head : -1;
  return s;
}

int64_t blocks_of(const Segment& s) {
  if (s.n == 0) return 0;
  if (s.head < 0) return ceil_div(s.n, kChunk);
  const int64_t body = (s.n - s.head) / kN * kN;
  return body > 0 ? ceil_div(body, kChunk) : 1;
}

void launch(const Segment* table, int nseg, const Segment& single, int64_t blocks, const Coefs& c) {
  if (blocks > INT32_MAX) fail("adamw_multi_step", "too many elements for one launch");
  adamw_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream()>>>(table, nseg, single, c);
  LLM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWParams& p) {
  Segment s = describe("adamw_step", param, grad, exp_avg, exp_avg_sq, nullptr, p.lr, p.weight_decay, param.device());
  const int64_t blocks = blocks_of(s);
  if (blocks == 0) return;
  launch(nullptr, 1, s, blocks, coefs(p));
}

void adamw_multi_step(const std::vector<AdamWSegmentTensors>& segments, const AdamWParams& p) {
  const char* op = "adamw_multi_step";
  if (segments.empty()) return;
  const Device dev = segments.front().param.device();
  std::vector<Segment> table;
  table.reserve(segments.size());
  int64_t blocks = 0;
  for (const AdamWSegmentTensors& t : segments) {
    const Tensor* copy = t.model_copy.defined() ? &t.model_copy : nullptr;
    Segment s = describe(op, t.param, t.grad, t.exp_avg, t.exp_avg_sq, copy, p.lr, t.weight_decay, dev);
    const int64_t b = blocks_of(s);
    if (b == 0) continue;  // empty: no blocks, no table row (the search needs increasing starts)
    s.block_begin = blocks;
    blocks += b;
    table.push_back(s);
  }
  if (table.empty()) return;
  if (table.size() > INT32_MAX) fail(op, "too many segments");
  const size_t bytes = table.size() * sizeof(Segment);
  Tensor device_table = device_scratch(dev, bytes);
  stage_to_device(device_table.raw(), table.data(), bytes, stream());
  launch(static_cast<const Segment*>(device_table.raw()), static_cast<int>(table.size()), Segment{}, blocks,
         coefs(p));
}

}  // namespace llm::ops::cuda
