// Counter-based random numbers (Philox4x32-10, Salmon et al. SC'11).
//
// A value depends only on (key, counter), never on call order, so any rank can
// generate exactly its shard of a parameter: weight element i of parameter
// `name` is normal(seed, hash(name), i) under every parallel layout.
#pragma once
#include <cmath>
#include <cstdint>
#include <string_view>

#include <xxhash.h>

namespace llm {

struct Philox4x32 {
  static void round(uint32_t ctr[4], const uint32_t key[2]) {
    constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    const uint64_t p0 = static_cast<uint64_t>(M0) * ctr[0];
    const uint64_t p1 = static_cast<uint64_t>(M1) * ctr[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t c0 = hi1 ^ ctr[1] ^ key[0], c2 = hi0 ^ ctr[3] ^ key[1];
    ctr[0] = c0;
    ctr[1] = lo1;
    ctr[2] = c2;
    ctr[3] = lo0;
  }
  // Four 32-bit random words for the 128-bit counter (c_lo, c_hi) under a 64-bit key.
  static void generate(uint64_t key64, uint64_t c_lo, uint64_t c_hi, uint32_t out[4]) {
    uint32_t key[2] = {static_cast<uint32_t>(key64), static_cast<uint32_t>(key64 >> 32)};
    uint32_t ctr[4] = {static_cast<uint32_t>(c_lo), static_cast<uint32_t>(c_lo >> 32),
                       static_cast<uint32_t>(c_hi), static_cast<uint32_t>(c_hi >> 32)};
    for (int r = 0; r < 10; ++r) {
      round(ctr, key);
      key[0] += 0x9E3779B9u;
      key[1] += 0xBB67AE85u;
    }
    for (int i = 0; i < 4; ++i) out[i] = ctr[i];
  }
};

// Uniform double in (0, 1] from two random words (53 bits).
inline double uniform_from_bits(uint32_t a, uint32_t b) {
  const uint64_t bits = (static_cast<uint64_t>(a) << 21) ^ static_cast<uint64_t>(b >> 11);
  return (static_cast<double>(bits & ((1ull << 53) - 1)) + 1.0) / 9007199254740992.0;
}

// Stable 64-bit key of a parameter: the seed mixed with the hash of its name.
inline uint64_t parameter_key(uint64_t seed, std::string_view name) {
  return XXH64(name.data(), name.size(), seed);
}

// Standard normal number `index` of stream `key` (Box–Muller on one Philox block).
inline double normal_at(uint64_t key, uint64_t index) {
  uint32_t r[4];
  Philox4x32::generate(key, index, 0x6e6f726d616cull /* "normal" */, r);
  const double u1 = uniform_from_bits(r[0], r[1]);
  const double u2 = uniform_from_bits(r[2], r[3]);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Uniform [0, 1) number `index` of stream `key` (sampling in generation).
inline double uniform_at(uint64_t key, uint64_t index) {
  uint32_t r[4];
  Philox4x32::generate(key, index, 0x756e69666f726dull /* "uniform" */, r);
  return uniform_from_bits(r[0], r[1]) - 1.0 / 9007199254740992.0;
}

}  // namespace llm
