#include "sweep/results.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace llm::sweep {

bool RunMetrics::complete(int64_t train_iters) const {
  return last_iteration >= train_iters && val_iteration >= train_iters && std::isfinite(final_val_loss);
}

RunMetrics read_metrics(const std::string& path) {
  RunMetrics m;
  std::ifstream in(path);
  if (!in) return m;
  std::map<int64_t, nlohmann::json> train;  // iteration -> its log line (the later one wins)
  std::map<int64_t, double> val;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      continue;  // a line cut short by a kill
    }
    if (!j.is_object() || !j.contains("iteration") || j.contains("event")) continue;
    const int64_t it = j["iteration"].get<int64_t>();
    if (j.contains("lm_loss")) {
      // A resumed run logs again from its checkpoint: drop what the interrupted attempt logged after it.
      train.erase(train.lower_bound(it), train.end());
      val.erase(val.lower_bound(it), val.end());
      train[it] = j;
    } else if (j.contains("val_loss") && j["val_loss"].is_number()) {
      val[it] = j["val_loss"].get<double>();
    }
  }
  if (!train.empty()) {
    m.last_iteration = train.rbegin()->first;
    double sum = 0, weight = 0;
    int lines = 0;
    for (auto it = train.rbegin(); it != train.rend() && lines < kTrainLossLines; ++it, ++lines) {
      const auto prev = std::next(it);
      const double covered = static_cast<double>(it->first - (prev == train.rend() ? 0 : prev->first));
      const auto& loss = it->second["lm_loss"];
      if (!loss.is_number() || !std::isfinite(loss.get<double>())) continue;  // every update of the interval skipped
      sum += covered * loss.get<double>();
      weight += covered;
    }
    if (weight > 0) m.final_train_loss = sum / weight;
    std::vector<double> tps;
    for (const auto& [it, j] : train)
      if (j.contains("skipped") && j["skipped"].is_number_integer()) m.skipped_updates += j["skipped"].get<int64_t>();
    for (const auto& [it, j] : train)
      if (j.contains("tokens_per_sec") && j["tokens_per_sec"].is_number()) tps.push_back(j["tokens_per_sec"].get<double>());
    if (!tps.empty()) {
      std::sort(tps.begin(), tps.end());
      const size_t n = tps.size();
      m.tokens_per_sec = n % 2 ? tps[n / 2] : 0.5 * (tps[n / 2 - 1] + tps[n / 2]);
    }
  }
  if (!val.empty()) {
    m.val_iteration = val.rbegin()->first;
    m.final_val_loss = val.rbegin()->second;
  }
  return m;
}

nlohmann::json plan_summary(const RunPlan& p) {
  nlohmann::json j = {{"run", p.name},
                      {"n_params", p.n_params},
                      {"n_non_embedding", p.n_non_embedding},
                      {"num_layers", p.model.num_layers},
                      {"hidden_size", p.model.hidden_size},
                      {"num_attention_heads", p.model.num_attention_heads},
                      {"ffn_hidden_size", p.model.ffn()},
                      {"tokens", p.tokens},
                      {"flops_6nd", p.flops_6nd},
                      {"flops_exact", p.flops_exact},
                      {"train_iters", p.train_iters},
                      {"global_batch_size", p.global_batch_size},
                      {"seq_length", p.seq_length},
                      {"lr", p.lr}};
  if (p.flops_budget > 0) j["flops_budget"] = p.flops_budget;
  return j;
}

const std::vector<std::string>& results_columns() {
  static const std::vector<std::string> cols = {
      "run", "status", "attempts", "n_params", "n_non_embedding", "num_layers", "hidden_size", "num_attention_heads",
      "ffn_hidden_size", "tokens", "flops_budget", "flops_6nd", "flops_exact", "train_iters", "global_batch_size",
      "seq_length", "lr", "final_train_loss", "final_val_loss", "tokens_per_sec", "wall_seconds"};
  return cols;
}

static std::string number(double v) {
  if (!std::isfinite(v)) return "";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

static std::string cell(const nlohmann::json& j) {
  if (j.is_null()) return "";
  if (j.is_number_integer()) return std::to_string(j.get<int64_t>());
  if (j.is_number()) return number(j.get<double>());
  if (j.is_string()) {
    std::string s = j.get<std::string>();
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  }
  return j.dump();
}

std::string results_csv(const std::vector<ResultRow>& rows) {
  std::string out;
  const auto& cols = results_columns();
  for (size_t i = 0; i < cols.size(); ++i) out += (i ? "," : "") + cols[i];
  out += "\n";
  for (const ResultRow& r : rows) {
    nlohmann::json j = r.summary;
    j["status"] = r.status;
    j["attempts"] = r.attempts;
    j["final_train_loss"] = r.final_train_loss;
    j["final_val_loss"] = r.final_val_loss;
    j["tokens_per_sec"] = r.tokens_per_sec;
    j["wall_seconds"] = r.wall_seconds;
    for (size_t i = 0; i < cols.size(); ++i) {
      if (i) out += ",";
      const auto f = j.find(cols[i]);
      if (f != j.end()) out += cell(*f);
    }
    out += "\n";
  }
  return out;
}

void write_file_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(tmp + ": cannot create it (check the permissions of its folder)");
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n <= 0) {
      ::close(fd);
      throw std::runtime_error(tmp + ": write failed (disk full?)");
    }
    done += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  std::filesystem::rename(tmp, path);
}

static std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') out.back() += '"', ++i;
      else if (c == '"') quoted = false;
      else out.back() += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

std::vector<std::map<std::string, std::string>> read_results_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open it");
  std::string line;
  std::vector<std::map<std::string, std::string>> rows;
  if (!std::getline(in, line)) return rows;
  const std::vector<std::string> header = csv_fields(line);
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto f = csv_fields(line);
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < header.size(); ++i) row[header[i]] = i < f.size() ? f[i] : "";
    rows.push_back(row);
  }
  return rows;
}

}  // namespace llm::sweep
