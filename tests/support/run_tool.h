// Helpers for tests that run the command-line tools as a user would.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llm::test {

struct ToolResult {
  int exit_code = -1;
  std::string output;  // stdout, and stderr too unless stdout_only
};

inline ToolResult run_tool(const std::string& cmd, bool stdout_only = false) {
  ToolResult r;
  std::FILE* p = popen((cmd + (stdout_only ? " 2>/dev/null" : " 2>&1")).c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline std::string bin(const std::string& tool) { return std::string(LLM_BIN_DIR) + "/" + tool; }

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("llm_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Real English text present on every Debian/Ubuntu system (base-files).
inline std::string english_text_file() { return "/usr/share/common-licenses/GPL-3"; }

// The size written after the first `label` at or after `from` in a tool's
// output ("1.19 MiB", as format_bytes writes it), in bytes; −1 if absent.
inline double bytes_after(const std::string& out, const std::string& label, size_t from = 0) {
  const auto at = out.find(label, from);
  if (from == std::string::npos || at == std::string::npos) return -1.0;
  const auto num = at + label.size();
  const double v = std::stod(out.substr(num));
  const std::string unit = out.substr(out.find(' ', num) + 1, 3);
  return v * (unit == "GiB" ? 1073741824.0 : unit == "MiB" ? 1048576.0 : unit == "KiB" ? 1024.0 : 1.0);
}

// The tools' test corpus: the GPL-3 text as dir/gpl.{bin,idx} with a
// 512-piece tokenizer dir/tok.model. Returns llm-prepare-data's result.
inline ToolResult prepare_test_corpus(const TempDir& dir) {
  return run_tool(bin("llm-prepare-data") + " --input " + english_text_file() + " --vocab-size 512" +
                  " --tokenizer-model " + (dir / "tok.model") + " --output-prefix " + (dir / "gpl"));
}

// Prefix that launches n ranks with one thread each, on any number of cores,
// as root too; a hung job is killed after 300 s (exit code 124).
inline std::string mpiexec(int n) {
  const std::string root = ::geteuid() == 0 ? " --allow-run-as-root" : "";
  return "timeout 300 mpiexec --oversubscribe" + root + " -n " + std::to_string(n) +
         " -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 ";
}

}  // namespace llm::test
