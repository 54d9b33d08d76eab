// Small helpers the checkpoint parsers share for reading untrusted JSON
// (header-only: tests/fuzz/ builds the parsers without the runtime library).
#pragma once
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llm::json_checks {

// Deeper nesting than any manifest or safetensors header has; refusing it
// keeps nlohmann's recursive operations (copy, compare, dump) off deep stacks.
constexpr int kMaxDepth = 64;

// Parses `text`, throwing nlohmann::json::parse_error on bad syntax and
// std::runtime_error when nesting exceeds kMaxDepth.
inline nlohmann::json parse(const std::string& text) {
  const nlohmann::json::parser_callback_t limit = [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth > kMaxDepth)
      throw std::runtime_error("JSON nested deeper than " + std::to_string(kMaxDepth) + " levels");
    return true;
  };
  return nlohmann::json::parse(text, limit);
}

// A JSON integer that fits int64 (never a float, a bool or an integer above 2^63 - 1).
inline std::optional<int64_t> as_int64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return std::nullopt;
}

// A non-negative JSON integer (any of uint64's range).
inline std::optional<uint64_t> as_uint64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

// An array of non-negative int64 integers, or nullopt.
inline std::optional<std::vector<int64_t>> as_dims(const nlohmann::json& v) {
  if (!v.is_array()) return std::nullopt;
  std::vector<int64_t> r;
  r.reserve(v.size());
  for (const auto& x : v) {
    const auto i = as_int64(x);
    if (!i || *i < 0) return std::nullopt;
    r.push_back(*i);
  }
  return r;
}

// The product of dims, or nullopt if it exceeds int64.
inline std::optional<int64_t> checked_numel(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims)
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return std::nullopt;
  return n;
}

inline std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// A short, printable form of an untrusted value for error messages.
inline std::string brief(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

}  // namespace llm::json_checks
