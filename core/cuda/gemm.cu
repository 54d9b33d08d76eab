// linear_forward / linear_backward on the GPU through cuBLASLt.
//
// Tensors are row-major; cuBLASLt is column-major. A row-major [r, c] matrix
// is the column-major [c, r] matrix at the same address (leading dimension c),
// and C = A·B row-major is Cᵀ = Bᵀ·Aᵀ column-major, so each product below is
// written for the transposed, column-major view:
//   y  = x·Wᵀ   →  yᶜ [out, rows]  = Wᶜᵀ · xᶜ    (Wᶜ is [in, out], xᶜ [in, rows])
//   dx += dy·W  →  dxᶜ [in, rows] += Wᶜ · dyᶜ    (dyᶜ is [out, rows])
//   dw += dyᵀ·x →  dwᶜ [in, out]  += xᶜ · dyᶜᵀ
// All-F32 operands run with CUBLAS_COMPUTE_32F (no TF32, so results stay within
// 1e-5 of the CPU's); all-BF16 or all-F16 read and write 16 bits and accumulate
// in fp32. Descriptors and the heuristic's algorithm are made once per shape
// (the same few shapes recur every layer and step) and kept; each device has
// one handle and each (device, stream) one 32 MiB workspace.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>

#include "core/cuda/cuda_ops.h"
#include "core/cuda/runtime.h"

namespace llm::ops::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

struct PlanKey {
  int device;
  int64_t m, n, k;
  cublasOperation_t transa, transb;
  DType dtype;
  bool beta;      // accumulate into C
  uint32_t align;  // the smallest alignment of A, B and C (bytes, at most 256)
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = std::hash<int64_t>()(k.m);
    auto mix = [&h](uint64_t v) { h ^= std::hash<uint64_t>()(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
    mix(static_cast<uint64_t>(k.n));
    mix(static_cast<uint64_t>(k.k));
    mix(static_cast<uint64_t>(k.device));
    mix((static_cast<uint64_t>(k.transa) << 16) | (static_cast<uint64_t>(k.transb) << 8) |
        (static_cast<uint64_t>(k.dtype) << 1) | (k.beta ? 1u : 0u));
    mix(k.align);
    return h;
  }
};

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct DeviceContext {
  cublasLtHandle_t handle = nullptr;
  std::map<cudaStream_t, Tensor> workspaces;  // one per stream: GEMMs on two streams may overlap
};

struct GemmState {
  std::mutex mu;
  std::map<int, DeviceContext> devices;
  std::unordered_map<PlanKey, Plan, PlanKeyHash> plans;  // never erased: references stay valid
};

// Never destroyed: the workspaces' storage must not be freed after the memory
// trackers' statics are gone, and the CUDA context may be torn down before us.
GemmState& gemm_state() {
  static GemmState* s = new GemmState();
  return *s;
}

const char* op_name(cublasOperation_t t) { return t == CUBLAS_OP_N ? "N" : "T"; }

// One GEMM call's description for error messages.
struct Call {
  const char* op;       // "linear_forward"
  const char* product;  // "y = x·Wᵀ"
  const PlanKey& key;
  std::string str() const {
    return std::string("ops::cuda::") + op + " (" + product + ", column-major m=" + std::to_string(key.m) +
           " n=" + std::to_string(key.n) + " k=" + std::to_string(key.k) + " op(A)=" + op_name(key.transa) +
           " op(B)=" + op_name(key.transb) + " " + dtype_name(key.dtype) + (key.beta ? " beta=1" : " beta=0") +
           " align=" + std::to_string(key.align) + " on cuda:" + std::to_string(key.device) + ")";
  }
};

void lt_check(cublasStatus_t st, const char* what, const Call& call) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  throw std::runtime_error(std::string("cuBLASLt ") + what + " failed with " + cublasLtGetStatusName(st) + " (" +
                           cublasLtGetStatusString(st) + ") in " + call.str());
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al) al /= 2;
  return al;
}

cublasLtHandle_t handle_for(GemmState& s, int device, const Call& call) {
  DeviceContext& d = s.devices[device];
  if (!d.handle) lt_check(cublasLtCreate(&d.handle), "cublasLtCreate", call);
  return d.handle;
}

Plan make_plan(cublasLtHandle_t handle, const Call& call) {
  const PlanKey& k = call.key;
  Plan p;
  lt_check(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate", call);
  const int32_t ta = k.transa, tb = k.transb;
  lt_check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
           "cublasLtMatmulDescSetAttribute(TRANSA)", call);
  lt_check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
           "cublasLtMatmulDescSetAttribute(TRANSB)", call);
  // Stored (untransposed) shapes; every operand is contiguous, so ld = its stored row count.
  const cudaDataType_t t = cuda_type(k.dtype);
  const uint64_t a_rows = k.transa == CUBLAS_OP_N ? k.m : k.k, a_cols = k.transa == CUBLAS_OP_N ? k.k : k.m;
  const uint64_t b_rows = k.transb == CUBLAS_OP_N ? k.k : k.n, b_cols = k.transb == CUBLAS_OP_N ? k.n : k.k;
  lt_check(cublasLtMatrixLayoutCreate(&p.a, t, a_rows, a_cols, static_cast<int64_t>(a_rows)),
           "cublasLtMatrixLayoutCreate(A)", call);
  lt_check(cublasLtMatrixLayoutCreate(&p.b, t, b_rows, b_cols, static_cast<int64_t>(b_rows)),
           "cublasLtMatrixLayoutCreate(B)", call);
  lt_check(cublasLtMatrixLayoutCreate(&p.c, t, k.m, k.n, k.m), "cublasLtMatrixLayoutCreate(C)", call);

  cublasLtMatmulPreference_t pref = nullptr;
  lt_check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate", call);
  struct PrefGuard {
    cublasLtMatmulPreference_t p;
    ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); }
  } pref_guard{pref};
  const uint64_t ws = kWorkspaceBytes;
  lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
           "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)", call);
  // The heuristic assumes 256-byte aligned operands unless told otherwise; views
  // (slices of flat buffers) can be less aligned.
  const uint32_t al = k.align;
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    lt_check(cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof al),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)", call);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  lt_check(cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found),
           "cublasLtMatmulAlgoGetHeuristic", call);
  if (found == 0) lt_check(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmulAlgoGetHeuristic (no algorithm)", call);
  lt_check(result.state, "cublasLtMatmulAlgoGetHeuristic (result)", call);
  p.algo = result.algo;
  return p;
}

// C (+)= op(A)·op(B), column-major, m×n result, contiguous operands, on the current
// device and stream.
void matmul(const char* op, const char* product, cublasOperation_t transa, cublasOperation_t transb, int64_t m,
            int64_t n, int64_t k, const void* A, const void* B, void* C, DType dtype, bool accumulate) {
  if (m == 0 || n == 0) return;
  const cudaStream_t stream = llm::cuda::current_stream();
  if (k == 0) {  // an empty sum: C stays (accumulate) or becomes zero
    if (!accumulate)
      LLM_CUDA_CHECK(cudaMemsetAsync(C, 0, static_cast<size_t>(m * n) * dtype_size(dtype), stream));
    return;
  }
  const int device = llm::cuda::current_device();
  const uint32_t align = std::min({alignment_of(A), alignment_of(B), alignment_of(C)});
  const PlanKey key{device, m, n, k, transa, transb, dtype, accumulate, align};
  const Call call{op, product, key};

  GemmState& s = gemm_state();
  cublasLtHandle_t handle;
  const Plan* plan;
  void* workspace;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    handle = handle_for(s, device, call);
    auto it = s.plans.find(key);
    if (it == s.plans.end()) it = s.plans.emplace(key, make_plan(handle, call)).first;
    plan = &it->second;
    Tensor& ws = s.devices[device].workspaces[stream];
    if (!ws.defined())
      ws = Tensor::empty({static_cast<int64_t>(kWorkspaceBytes / 4)}, DType::F32, MemoryCategory::Workspace,
                         Device::cuda(device));
    workspace = ws.raw();
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;  // beta 0: C is not read (NaN-safe)
  lt_check(cublasLtMatmul(handle, plan->op, &alpha, A, plan->a, B, plan->b, &beta, C, plan->c, C, plan->c,
                          &plan->algo, workspace, kWorkspaceBytes, stream),
           "cublasLtMatmul", call);
}

[[noreturn]] void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("ops::cuda::") + op + ": " + what);
}

// Every operand on `device`, all of one dtype among F32, BF16 and F16.
void check_operands(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> operands) {
  const Tensor& first = *operands.begin()->second;
  const DType t = first.dtype();
  if (t != DType::F32 && t != DType::BF16 && t != DType::F16)
    fail(op, std::string(operands.begin()->first) + " " + first.str() +
                 ": unsupported dtype on the GPU (all operands F32, all BF16 or all F16)");
  for (const auto& [name, tensor] : operands) {
    if (!tensor->defined()) fail(op, std::string(name) + " is undefined");
    if (tensor->device() != first.device())
      fail(op, std::string(name) + " " + tensor->str() + " is not on " + first.device().str() + " like " +
                   operands.begin()->first);
    if (tensor->dtype() != t)
      fail(op, std::string(name) + " " + tensor->str() + ": dtype differs from " + operands.begin()->first +
                   " " + first.str() + " (all operands F32, all BF16 or all F16)");
  }
}

void expect_numel(const char* op, const char* what, const Tensor& t, int64_t n) {
  if (t.numel() != n)
    fail(op, std::string(what) + " " + t.str() + " should have " + std::to_string(n) + " elements");
}

void expect_matrix(const char* op, const Tensor& w) {
  if (w.dim() != 2) fail(op, "w " + w.str() + " should be a matrix [out, in]");
}


}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  const char* op = "linear_forward";
  check_operands(op, {{"x", &x}, {"w", &w}, {"y", &y}});
  expect_matrix(op, w);
  const int64_t out = w.size(0), in = w.size(1), rows = in ? x.numel() / in : 0;
  expect_numel(op, "x", x, rows * in);
  expect_numel(op, "y", y, rows * out);
  llm::cuda::DeviceGuard guard(x.device().index);
  matmul(op, "y = x·Wᵀ", CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, w.raw(), x.raw(), y.raw(), x.dtype(),
         accumulate);
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor& dw) {
  const char* op = "linear_backward";
  if (dx) check_operands(op, {{"dy", &dy}, {"x", &x}, {"w", &w}, {"dx", dx}, {"dw", &dw}});
  else check_operands(op, {{"dy", &dy}, {"x", &x}, {"w", &w}, {"dw", &dw}});
  expect_matrix(op, w);
  const int64_t out = w.size(0), in = w.size(1), rows = in ? x.numel() / in : 0;
  expect_numel(op, "x", x, rows * in);
  expect_numel(op, "dy", dy, rows * out);
  expect_numel(op, "dw", dw, out * in);
  if (dx) expect_numel(op, "dx", *dx, rows * in);
  llm::cuda::DeviceGuard guard(dy.device().index);
  if (dx)
    matmul(op, "dx += dy·W", CUBLAS_OP_N, CUBLAS_OP_N, in, rows, out, w.raw(), dy.raw(), dx->raw(), dy.dtype(),
           true);
  matmul(op, "dw += dyᵀ·x", CUBLAS_OP_N, CUBLAS_OP_T, in, out, rows, x.raw(), dy.raw(), dw.raw(), dy.dtype(),
         true);
}

}  // namespace llm::ops::cuda
