// Driver of the CPU emulation of core/cuda/flash_attention.cu (see run.sh): runs the
// flash and generic kernels on small shapes and compares them with a double reference.
#include "emu.h"
#include "device.inc"
#include <random>
#include <string>

using namespace llm::ops::cuda;
using emu::D3;

template <typename T> T from_f(float x);
template <> __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }
template <> __half from_f(float x) { return __float2half_rn(x); }
template <> float from_f(float x) { return x; }
template <typename T> double to_d(T x);
template <> double to_d(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> double to_d(__half x) { return __half2float(x); }
template <> double to_d(float x) { return x; }

struct Ref { std::vector<double> out, lse, grad; };

void ref_forward(const std::vector<double>& qkv, int B, int S, int H, int G, int D, Ref& r, int Tq = -1) {
  const int64_t ld = (H + 2 * G) * (int64_t)D, HD = (int64_t)H * D;
  const double sc = 1.0 / std::sqrt((double)D);
  r.out.assign((size_t)B * S * HD, 0); r.lse.assign((size_t)B * H * S, 0);
  for (int b = 0; b < B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < S; ++i) {
    const int g = h / (H / G);
    const double* q = &qkv[(b * S + i) * ld + h * D];
    std::vector<double> s(i + 1);
    double mx = -INFINITY;
    for (int j = 0; j <= i; ++j) {
      const double* k = &qkv[(b * S + j) * ld + HD + g * D];
      double d = 0; for (int x = 0; x < D; ++x) d += q[x] * k[x];
      s[j] = d * sc; mx = std::max(mx, s[j]);
    }
    double sum = 0; for (int j = 0; j <= i; ++j) sum += std::exp(s[j] - mx);
    for (int j = 0; j <= i; ++j) {
      const double* v = &qkv[(b * S + j) * ld + HD + (int64_t)G * D + g * D];
      const double p = std::exp(s[j] - mx) / sum;
      for (int x = 0; x < D; ++x) r.out[(b * S + i) * HD + h * D + x] += p * v[x];
    }
    r.lse[(b * H + h) * S + i] = mx + std::log(sum);
  }
}

void ref_backward(const std::vector<double>& qkv, const std::vector<double>& dout, const std::vector<double>& out,
                  const std::vector<double>& lse, int B, int S, int H, int G, int D, std::vector<double>& grad) {
  const int64_t ld = (H + 2 * G) * (int64_t)D, HD = (int64_t)H * D, GD = (int64_t)G * D;
  const double sc = 1.0 / std::sqrt((double)D);
  grad.assign(qkv.size(), 0);
  for (int b = 0; b < B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < S; ++i) {
    const int g = h / (H / G);
    const double* q = &qkv[(b * S + i) * ld + h * D];
    const double* dO = &dout[(b * S + i) * HD + h * D];
    const double* O = &out[(b * S + i) * HD + h * D];
    double Di = 0; for (int x = 0; x < D; ++x) Di += dO[x] * O[x];
    for (int j = 0; j <= i; ++j) {
      const double* k = &qkv[(b * S + j) * ld + HD + g * D];
      const double* v = &qkv[(b * S + j) * ld + HD + GD + g * D];
      double s = 0, dp = 0; for (int x = 0; x < D; ++x) { s += q[x] * k[x]; dp += dO[x] * v[x]; }
      const double p = std::exp(s * sc - lse[(b * H + h) * S + i]);
      const double ds = p * (dp - Di);
      for (int x = 0; x < D; ++x) {
        grad[(b * S + i) * ld + h * D + x] += sc * ds * k[x];
        grad[(b * S + j) * ld + HD + g * D + x] += sc * ds * q[x];
        grad[(b * S + j) * ld + HD + GD + g * D + x] += p * dO[x];
      }
    }
  }
}

double rel(const std::vector<double>& a, const std::vector<double>& b, int64_t ld = 1, int64_t c0 = 0, int64_t c1 = 1,
           const std::vector<double>* base = nullptr) {
  double n = 0, d = 0; int64_t cnt = 0;
  for (size_t r = 0; r < a.size() / ld; ++r) for (int64_t c = c0; c < c1; ++c) {
    size_t i = r * ld + c; double e = a[i] - b[i], ref = b[i] - (base ? (*base)[i] : 0);
    if (std::isnan(a[i])) return INFINITY;
    n += e * e; d += ref * ref; ++cnt;
  }
  return std::sqrt(n) / std::max(std::sqrt(d), 0.1 * std::sqrt((double)cnt));
}

int failures = 0;
void report(const std::string& what, double e, double tol) {
  const bool ok = e < tol;
  if (!ok) ++failures;
  std::printf("%-60s rel %.3e %s\n", what.c_str(), e, ok ? "ok" : "FAIL");
}

template <typename T>
void run_case(int B, int S, int H, int G, int D, bool flash, double tol, unsigned seed) {
  const int64_t ld = (H + 2 * G) * (int64_t)D, HD = (int64_t)H * D, GD = (int64_t)G * D;
  const float scale = 1.0f / std::sqrt((float)D);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  std::vector<T> qkv(B * S * ld), dout(B * S * HD), start(B * S * ld);
  std::vector<double> qkv_d(qkv.size()), dout_d(dout.size()), start_d(start.size());
  for (size_t i = 0; i < qkv.size(); ++i) { qkv[i] = from_f<T>(nd(rng)); qkv_d[i] = to_d(qkv[i]); }
  for (size_t i = 0; i < dout.size(); ++i) { dout[i] = from_f<T>(nd(rng)); dout_d[i] = to_d(dout[i]); }
  for (size_t i = 0; i < start.size(); ++i) { start[i] = from_f<T>(0.1f * nd(rng)); start_d[i] = to_d(start[i]); }
  Ref r; ref_forward(qkv_d, B, S, H, G, D, r);
  std::string tag = std::string(flash ? "flash" : "generic") + " T=" + (sizeof(T) == 4 ? "f32" : std::is_same_v<T, __half> ? "f16" : "bf16") +
                    " B=" + std::to_string(B) + " S=" + std::to_string(S) + " H=" + std::to_string(H) + " G=" + std::to_string(G) + " D=" + std::to_string(D);
  // forward
  std::vector<T> out(B * S * HD, from_f<T>(NAN));
  std::vector<float> lse(B * H * S, NAN);
  if (flash) {
    if constexpr (!std::is_same_v<T, float>) {
      FlashArgs p{B, S, H, G, ld, scale};
      if (D == 64) emu::launch(D3{unsigned((S + 63) / 64), unsigned(H), unsigned(B)}, 128, FwdCfg<64>::smem_bytes<T>(), flash_fwd_kernel<T, 64>, (const T*)qkv.data(), out.data(), lse.data(), p);
      else emu::launch(D3{unsigned((S + 63) / 64), unsigned(H), unsigned(B)}, 128, FwdCfg<128>::smem_bytes<T>(), flash_fwd_kernel<T, 128>, (const T*)qkv.data(), out.data(), lse.data(), p);
    }
  } else {
    GenFwdArgs<T> a{qkv.data(), qkv.data() + HD, qkv.data() + HD + GD, out.data(), lse.data(), ld, ld, ld, HD, B, S, S, H, G, D, scale};
    const int64_t w = (int64_t)B * H * S;
    emu::launch(D3{unsigned((w + 3) / 4), 1, 1}, 128, 0, gen_fwd_kernel<T>, a);
  }
  std::vector<double> out_got(out.size()), lse_got(lse.size());
  for (size_t i = 0; i < out.size(); ++i) out_got[i] = to_d(out[i]);
  for (size_t i = 0; i < lse.size(); ++i) lse_got[i] = lse[i];
  report(tag + " out", rel(out_got, r.out, HD, 0, HD), tol);
  report(tag + " lse", rel(lse_got, r.lse), tol);
  // backward from the reference out (rounded) and lse
  std::vector<T> out_in(out.size());
  std::vector<double> out_in_d(out.size()), lse_in_d(lse.size());
  std::vector<float> lse_in(lse.size());
  for (size_t i = 0; i < out.size(); ++i) { out_in[i] = from_f<T>((float)r.out[i]); out_in_d[i] = to_d(out_in[i]); }
  for (size_t i = 0; i < lse.size(); ++i) { lse_in[i] = (float)r.lse[i]; lse_in_d[i] = lse_in[i]; }
  std::vector<double> grad; ref_backward(qkv_d, dout_d, out_in_d, lse_in_d, B, S, H, G, D, grad);
  std::vector<double> expect(grad.size());
  for (size_t i = 0; i < grad.size(); ++i) expect[i] = start_d[i] + grad[i];
  std::vector<float> dvec(B * H * S, NAN);
  std::vector<T> dqkv = start;
  emu::launch(D3{unsigned(((int64_t)B * S * H + 7) / 8), 1, 1}, 256, 0, dvec_kernel<T>, (const T*)dout.data(), (const T*)out_in.data(), dvec.data(), B, S, H, D);
  GenBwdArgs<T> a{qkv.data(), dout.data(), lse_in.data(), dvec.data(), dqkv.data(), ld, B, S, H, G, D, scale};
  if (flash) {
    if constexpr (!std::is_same_v<T, float>) {
      std::vector<float> acc((size_t)B * H * S * D, 0.f);
      FlashArgs p{B, S, H, G, ld, scale};
      if (D == 64) emu::launch(D3{unsigned((S + 63) / 64), unsigned(G), unsigned(B)}, 128, BwdCfg<64>::smem_bytes<T>(), flash_bwd_kernel<T, 64>, (const T*)qkv.data(), (const T*)dout.data(), (const float*)lse_in.data(), (const float*)dvec.data(), acc.data(), dqkv.data(), p);
      else emu::launch(D3{unsigned((S + 63) / 64), unsigned(G), unsigned(B)}, 128, BwdCfg<128>::smem_bytes<T>(), flash_bwd_kernel<T, 128>, (const T*)qkv.data(), (const T*)dout.data(), (const float*)lse_in.data(), (const float*)dvec.data(), acc.data(), dqkv.data(), p);
      emu::launch(D3{3, 1, 1}, 256, 0, dq_finalize_kernel<T>, (const float*)acc.data(), dqkv.data(), B, S, H, D, ld, scale);
    }
  } else {
    emu::launch(D3{unsigned(((int64_t)B * H * S + 3) / 4), 1, 1}, 128, 0, gen_bwd_dq_kernel<T>, a);
    emu::launch(D3{unsigned(((int64_t)B * G * S + 3) / 4), 1, 1}, 128, 0, gen_bwd_dkdv_kernel<T>, a);
  }
  std::vector<double> got(dqkv.size());
  for (size_t i = 0; i < got.size(); ++i) got[i] = to_d(dqkv[i]);
  report(tag + " dq", rel(got, expect, ld, 0, HD, &start_d), tol);
  report(tag + " dk", rel(got, expect, ld, HD, HD + GD, &start_d), tol);
  report(tag + " dv", rel(got, expect, ld, HD + GD, ld, &start_d), tol);
}


// Decode: q [tq, H*D] are the last tq positions of tk cached keys [tk, G*D].
void run_decode(int tq, int tk, int H, int G, int D, unsigned seed) {
  const int64_t HD = (int64_t)H * D, GD = (int64_t)G * D;
  const float scale = 1.0f / std::sqrt((float)D);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> q(tq * HD), k(tk * GD), v(tk * GD), out(tq * HD, NAN);
  for (auto& x : q) x = nd(rng);
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  std::vector<double> ref(out.size(), 0.0), got(out.size());
  for (int h = 0; h < H; ++h) for (int t = 0; t < tq; ++t) {
    const int g = h / (H / G), pos = tk - tq + t;
    std::vector<double> s(pos + 1); double mx = -INFINITY, sum = 0;
    for (int j = 0; j <= pos; ++j) { double d = 0; for (int x = 0; x < D; ++x) d += (double)q[t * HD + h * D + x] * k[j * GD + g * D + x]; s[j] = d * scale; mx = std::max(mx, s[j]); }
    for (int j = 0; j <= pos; ++j) sum += std::exp(s[j] - mx);
    for (int j = 0; j <= pos; ++j) for (int x = 0; x < D; ++x) ref[t * HD + h * D + x] += std::exp(s[j] - mx) / sum * v[j * GD + g * D + x];
  }
  GenFwdArgs<float> a{q.data(), k.data(), v.data(), out.data(), nullptr, HD, GD, GD, HD, 1, tq, tk, H, G, D, scale};
  emu::launch(D3{unsigned((H * tq + 3) / 4), 1, 1}, 128, 0, gen_fwd_kernel<float>, a);
  for (size_t i = 0; i < out.size(); ++i) got[i] = out[i];
  report("decode f32 tq=" + std::to_string(tq) + " tk=" + std::to_string(tk) + " D=" + std::to_string(D), rel(got, ref, HD, 0, HD), 1e-5);
}

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "all";
  if (which == "all" || which == "flash") {
    run_case<__nv_bfloat16>(1, 70, 4, 2, 64, true, 1e-2, 1);
    run_case<__nv_bfloat16>(1, 70, 2, 1, 128, true, 1e-2, 2);
    run_case<__half>(2, 1, 2, 2, 64, true, 1e-2, 3);
    run_case<__half>(1, 130, 2, 1, 64, true, 1e-2, 4);
    run_case<__nv_bfloat16>(1, 100, 2, 2, 128, true, 1e-2, 5);
  }
  if (which == "all" || which == "generic") {
    run_case<float>(1, 70, 4, 2, 64, false, 1e-5, 11);
    run_case<float>(2, 1, 2, 2, 128, false, 1e-5, 12);
    run_case<float>(1, 40, 2, 1, 96, false, 1e-5, 13);
    run_case<__nv_bfloat16>(1, 37, 4, 2, 64, false, 1e-2, 14);
    run_decode(1, 40, 4, 2, 64, 15);
    run_decode(5, 40, 4, 2, 128, 16);
    run_decode(3, 3, 2, 2, 32, 17);
  }
  std::printf("mma emulated: %ld, failures: %d\n", (long)emu::n_mma.load(), failures);
  return failures ? 1 : 0;
}
