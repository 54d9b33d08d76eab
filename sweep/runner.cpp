#include "sweep/runner.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "sweep/results.h"

namespace llm::sweep {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

volatile std::sig_atomic_t g_signals = 0;
volatile std::sig_atomic_t g_last_signal = 0;
void on_signal(int sig) {
  g_signals = g_signals + 1;
  g_last_signal = sig;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::optional<nlohmann::json> read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return std::nullopt;
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

void write_json(const fs::path& p, const nlohmann::json& j) { write_file_atomically(p.string(), j.dump(2) + "\n"); }

std::string now_str() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return buf;
}

std::string hms(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--:--";
  const long s = std::lround(seconds);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  return buf;
}

std::string hash_of(const nlohmann::json& definition) {
  const std::string text = definition.dump();
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(XXH64(text.data(), text.size(), 0)));
  return buf;
}

// "key: old → new" for every field that differs (one level into objects).
std::string describe_changes(const nlohmann::json& before, const nlohmann::json& now) {
  std::string out;
  auto add = [&](const std::string& key, const nlohmann::json& a, const nlohmann::json& b) {
    out += (out.empty() ? "" : ", ") + key + " " + (a.is_null() ? "(none)" : a.dump()) + " -> " +
           (b.is_null() ? "(none)" : b.dump());
  };
  for (const auto& [key, value] : now.items()) {
    const nlohmann::json old = before.contains(key) ? before[key] : nlohmann::json();
    if (old == value) continue;
    if (old.is_object() && value.is_object()) {
      for (const auto& [k, v] : value.items())
        if (!old.contains(k) || old[k] != v) add(key + "." + k, old.contains(k) ? old[k] : nlohmann::json(), v);
    } else {
      add(key, old, value);
    }
  }
  for (const auto& [key, value] : before.items())
    if (!now.contains(key)) add(key, value, nlohmann::json());
  return out.empty() ? "(the stored definition is unreadable)" : out;
}

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// What went wrong in an attempt's stderr (from `offset`): the first line with
// "error:" (the tools' "llm-train: error: ..."; mpirun's own notes come after
// it), else the last few non-empty lines.
std::string tail_lines(const fs::path& p, uintmax_t offset, int lines) {
  std::ifstream in(p);
  if (!in) return "";
  in.seekg(static_cast<std::streamoff>(offset));
  std::vector<std::string> all;
  std::string line;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) all.push_back(line);
  std::string out;
  for (const std::string& l : all)
    if (l.find("error:") != std::string::npos) return l.size() > 600 ? l.substr(0, 600) + "..." : l;
  for (size_t i = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0; i < all.size(); ++i)
    out += (out.empty() ? "" : " | ") + all[i];
  if (out.size() > 600) out = "..." + out.substr(out.size() - 600);
  return out;
}

int64_t checkpoint_iteration(const std::string& name) {
  if (name.rfind("iter_", 0) != 0 || name.size() <= 5) return -1;
  const std::string digits = name.substr(5);
  if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 15) return -1;
  return std::stoll(digits);
}

std::string quote(const std::string& s) {
  if (!s.empty() && s.find_first_of(" \t\"'\\$`!*?;&|<>()") == std::string::npos) return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Slot {
  const RunPlan* plan = nullptr;  // null: a run of an earlier spec, only listed
  std::string name;
  fs::path dir;
  std::string hash;
  nlohmann::json definition, summary;
  // persistent state
  std::string status = "pending";  // pending | running | interrupted | done | failed
  int64_t attempts = 0, failures = 0, resumes = 0;
  double wall_seconds = 0;
  int last_exit_code = 0;
  std::string last_error;
  RunMetrics metrics;  // of a finished run, or the latest reading of a live one
  // live
  pid_t pid = 0;
  Clock::time_point started;
  uintmax_t stderr_offset = 0;
  int64_t progress_iteration = -1;  // for "stopped without progress"
  bool done() const { return status == "done"; }
};

void save_state(const Slot& s) {
  write_json(s.dir / "state.json", {{"run", s.name},
                                    {"hash", s.hash},
                                    {"status", s.status},
                                    {"attempts", s.attempts},
                                    {"failures", s.failures},
                                    {"resumes", s.resumes},
                                    {"wall_seconds", s.wall_seconds},
                                    {"last_exit_code", s.last_exit_code},
                                    {"last_error", s.last_error}});
}

double json_number(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : std::numeric_limits<double>::quiet_NaN();
}

void load_state(Slot& s) {
  if (const auto st = read_json(s.dir / "state.json")) {
    s.status = st->value("status", std::string("pending"));
    s.attempts = st->value("attempts", int64_t{0});
    s.failures = st->value("failures", int64_t{0});
    s.resumes = st->value("resumes", int64_t{0});
    s.wall_seconds = st->value("wall_seconds", 0.0);
    s.last_exit_code = st->value("last_exit_code", 0);
    s.last_error = st->value("last_error", std::string());
  }
  if (const auto done = read_json(s.dir / "done.json")) {
    s.status = "done";
    s.metrics.final_train_loss = json_number(*done, "final_train_loss");
    s.metrics.final_val_loss = json_number(*done, "final_val_loss");
    s.metrics.tokens_per_sec = json_number(*done, "tokens_per_sec");
    s.metrics.last_iteration = done->value("last_iteration", int64_t{0});
    s.wall_seconds = done->value("wall_seconds", s.wall_seconds);
    s.attempts = done->value("attempts", s.attempts);
  } else if (s.status == "done" || s.status == "running") {
    s.status = "interrupted";  // a sweep that died without cleaning up: resume it
  }
}

// Where an attempt resumes from: the --save root when its newest checkpoint
// is before the end; when the newest is the last iteration but the run is not
// complete (its final evaluation was cut off), the newest earlier one; none.
std::optional<std::string> resume_point(const fs::path& ckpt_root, int64_t train_iters) {
  if (!fs::exists(ckpt_root / "latest")) return std::nullopt;
  std::string latest = read_text(ckpt_root / "latest");
  while (!latest.empty() && std::isspace(static_cast<unsigned char>(latest.back()))) latest.pop_back();
  const int64_t it = checkpoint_iteration(latest);
  if (it >= 0 && it < train_iters && fs::exists(ckpt_root / latest / "manifest.json")) return ckpt_root.string();
  int64_t best = -1;
  std::string best_dir;
  for (const auto& e : fs::directory_iterator(ckpt_root)) {
    const int64_t i = checkpoint_iteration(e.path().filename().string());
    if (i >= 0 && i < train_iters && i > best && fs::exists(e.path() / "manifest.json")) best = i, best_dir = e.path().string();
  }
  if (best >= 0) return best_dir;
  return std::nullopt;
}

}  // namespace

std::string short_number(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[32];
  const double a = std::abs(v);
  if (a >= 1e12) std::snprintf(buf, sizeof buf, "%.3g", v);
  else if (a >= 1e9) std::snprintf(buf, sizeof buf, "%.3gG", v / 1e9);
  else if (a >= 1e6) std::snprintf(buf, sizeof buf, "%.3gM", v / 1e6);
  else if (a >= 1e3) std::snprintf(buf, sizeof buf, "%.3gk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string plan_table(const SweepSpec& spec, const std::vector<RunPlan>& plan, int64_t data_tokens) {
  std::ostringstream o;
  char line[512];
  std::snprintf(line, sizeof line, "%-22s %6s %6s %5s %6s %8s %8s %9s %7s %9s %9s %9s %9s %6s %6s%s\n", "run", "layers",
                "hidden", "heads", "ffn", "N", "N_non_emb", "tokens", "iters", "C_budget", "C_6ND", "C_exact", "lr",
                "warmup", "D/N", data_tokens > 0 ? " epochs" : "");
  o << line;
  double total = 0;
  for (const RunPlan& r : plan) {
    char epochs[32] = "";
    if (data_tokens > 0) std::snprintf(epochs, sizeof epochs, " %6.2f", static_cast<double>(r.tokens) / data_tokens);
    std::snprintf(line, sizeof line, "%-22s %6lld %6lld %5lld %6lld %8s %8s %9s %7lld %9s %9s %9s %9.3g %6lld %6.1f%s\n",
                  r.name.c_str(), static_cast<long long>(r.model.num_layers), static_cast<long long>(r.model.hidden_size),
                  static_cast<long long>(r.model.num_attention_heads), static_cast<long long>(r.model.ffn()),
                  short_number(static_cast<double>(r.n_params)).c_str(),
                  short_number(static_cast<double>(r.n_non_embedding)).c_str(),
                  short_number(static_cast<double>(r.tokens)).c_str(), static_cast<long long>(r.train_iters),
                  r.flops_budget > 0 ? short_number(r.flops_budget).c_str() : "-", short_number(r.flops_6nd).c_str(),
                  short_number(r.flops_exact).c_str(), r.lr, static_cast<long long>(r.warmup_iters),
                  static_cast<double>(r.tokens) / static_cast<double>(r.n_params), epochs);
    o << line;
    total += r.flops_exact;
  }
  o << plan.size() << " runs, " << short_number(total) << " FLOPs in all (exact count); each run: " << spec.ranks
    << " rank(s) × " << spec.threads_per_rank << " thread(s), global batch " << spec.global_batch_size << " × "
    << spec.seq_length << " tokens; N counted as " << (spec.rule.non_embedding ? "non-embedding" : "total")
    << " parameters\n";
  return o.str();
}

int run_sweep(const SweepSpec& spec, const std::vector<RunPlan>& plan, const RunnerOptions& opt, std::ostream& log) {
  const fs::path out(opt.out_dir), runs_dir = fs::path(opt.out_dir) / "runs";
  fs::create_directories(runs_dir);

  // One llm-sweep per OUT. Children inherit the lock: runs left behind by a
  // killed sweep keep it until they end, so no second copy of them starts.
  const std::string lock_path = (out / ".lock").string();
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT, 0644);
  if (lock_fd < 0) throw std::runtime_error(lock_path + ": cannot open it (check the permissions of --out)");
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const std::string holder = read_text(lock_path);
    ::close(lock_fd);
    throw std::runtime_error("--out " + opt.out_dir + " is in use by another llm-sweep (pid " +
                             (holder.empty() ? std::string("?") : holder.substr(0, holder.find('\n'))) +
                             ") or by runs a killed llm-sweep left behind: wait for them to end, or stop them, then rerun");
  }
  if (::ftruncate(lock_fd, 0) == 0) {
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::pwrite(lock_fd, pid.data(), pid.size(), 0) < 0) { /* informational only */ }
  }

  // The plan's runs, checked against what OUT already holds.
  std::vector<Slot> slots;
  std::vector<std::string> conflicts;
  for (const RunPlan& r : plan) {
    Slot s;
    s.plan = &r;
    s.name = r.name;
    s.dir = runs_dir / r.name;
    s.definition = r.definition(spec);
    s.hash = hash_of(s.definition);
    s.summary = plan_summary(r);
    if (const auto stored = read_json(s.dir / "plan.json")) {
      if (stored->value("hash", std::string()) != s.hash)
        conflicts.push_back("  " + r.name + ": " +
                            describe_changes(stored->value("definition", nlohmann::json::object()), s.definition));
      load_state(s);
    } else if (fs::exists(s.dir / "done.json") || fs::exists(s.dir / "metrics.jsonl")) {
      conflicts.push_back("  " + r.name + ": its folder has results but no plan.json to compare with");
    }
    slots.push_back(std::move(s));
  }
  if (!conflicts.empty()) {
    std::string msg = "--out " + opt.out_dir + " already holds runs of these names that the spec now defines "
                      "differently; their results would be overwritten:\n";
    for (const auto& c : conflicts) msg += c + "\n";
    msg += "use a new --out for the changed spec, restore the spec, or delete those run folders (under " +
           runs_dir.string() + ") to rerun them";
    ::close(lock_fd);
    throw std::invalid_argument(msg);
  }
  // Runs of earlier specs stay listed in results.csv.
  std::vector<std::string> orphans;
  for (const auto& e : fs::directory_iterator(runs_dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || std::any_of(plan.begin(), plan.end(), [&](const RunPlan& r) { return r.name == name; }))
      continue;
    const auto stored = read_json(e.path() / "plan.json");
    if (!stored || !stored->contains("summary")) continue;
    Slot s;
    s.name = name;
    s.dir = e.path();
    s.hash = stored->value("hash", std::string());
    s.summary = (*stored)["summary"];
    load_state(s);
    if (s.status == "interrupted") s.status = "pending";
    orphans.push_back(name);
    slots.push_back(std::move(s));
  }
  std::sort(slots.begin() + static_cast<std::ptrdiff_t>(plan.size()), slots.end(),
            [](const Slot& a, const Slot& b) { return a.name < b.name; });
  write_file_atomically((out / "spec.cfg").string(), opt.spec_text);

  auto csv_status = [](const Slot& s) {
    if (s.status == "done" || s.status == "failed" || s.status == "running") return s.status;
    return std::string("pending");
  };
  auto write_results = [&] {
    std::vector<ResultRow> rows;
    for (const Slot& s : slots) {
      ResultRow r;
      r.summary = s.summary;
      r.status = csv_status(s);
      r.attempts = s.attempts;
      if (s.done()) {
        r.final_train_loss = s.metrics.final_train_loss;
        r.final_val_loss = s.metrics.final_val_loss;
        r.tokens_per_sec = s.metrics.tokens_per_sec;
      }
      if (s.attempts > 0) r.wall_seconds = s.wall_seconds;
      rows.push_back(r);
    }
    write_file_atomically((out / "results.csv").string(), results_csv(rows));
  };

  // What is left to do.
  std::deque<size_t> queue;
  int done_before = 0, failed_before = 0, resuming = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    Slot& s = slots[i];
    if (s.done()) {
      ++done_before;
    } else if (s.failures > opt.max_retries) {
      s.status = "failed";
      ++failed_before;
    } else {
      if (s.attempts > 0) ++resuming;
      s.status = "pending";
      queue.push_back(i);
    }
  }
  // Several at once: the longest runs first (fewer idle cores at the end).
  if (opt.max_concurrent > 1)
    std::stable_sort(queue.begin(), queue.end(),
                     [&](size_t a, size_t b) { return plan[a].flops_exact > plan[b].flops_exact; });
  log << "llm-sweep: " << plan.size() << " runs in " << opt.out_dir << ": " << done_before << " already done"
      << (failed_before ? ", " + std::to_string(failed_before) + " failed earlier (--max-retries " +
                              std::to_string(opt.max_retries) + " reached)"
                        : std::string())
      << ", " << queue.size() << " to run" << (resuming ? " (" + std::to_string(resuming) + " resumed)" : std::string())
      << "\n";
  if (!orphans.empty()) {
    log << "llm-sweep: note: " << orphans.size() << " run folder(s) not in this spec are kept and listed in results.csv:";
    for (const auto& o : orphans) log << " " << o;
    log << "\n";
  }
  write_results();

  const int cores = opt.cores > 0 ? opt.cores : available_cores();
  const int64_t per_run = spec.cores_per_run();
  if (per_run > cores)
    log << "llm-sweep: note: each run wants " << per_run << " cores (" << spec.ranks << " ranks × "
        << spec.threads_per_rank << " threads) but " << cores << " are available: runs go one at a time, oversubscribed\n";
  log.flush();

  struct sigaction sa {}, old_int {}, old_term {}, old_hup {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  g_signals = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGHUP, &sa, &old_hup);

  const bool as_root = ::geteuid() == 0;
  std::vector<size_t> active;
  bool stopping = false;  // a signal: no more launches, running runs asked to stop
  int signals_handled = 0, finished_now = 0;
  auto last_progress = Clock::now();
  const auto sweep_start = Clock::now();

  auto launch = [&](size_t i) {
    Slot& s = slots[i];
    const RunPlan& r = *s.plan;
    fs::create_directories(s.dir);
    if (!fs::exists(s.dir / "plan.json"))
      write_json(s.dir / "plan.json", {{"run", r.name}, {"hash", s.hash}, {"definition", s.definition}, {"summary", s.summary}});
    write_file_atomically((s.dir / "train.cfg").string(), r.train_config(spec));
    const fs::path ck = s.dir / "checkpoints", metrics = s.dir / "metrics.jsonl";
    const std::optional<std::string> from = resume_point(ck, r.train_iters);
    if (!from) {
      // Nothing to resume from: start afresh, keeping what an earlier attempt logged aside.
      if (fs::exists(ck)) fs::remove_all(ck);
      if (fs::exists(metrics)) {
        std::ofstream(s.dir / "metrics.discarded.jsonl", std::ios::app) << read_text(metrics);
        fs::remove(metrics);
      }
    }
    std::vector<std::string> args;
    if (spec.ranks > 1) {
      args = {opt.mpirun, "-n", std::to_string(spec.ranks), "--oversubscribe"};
      if (as_root) args.push_back("--allow-run-as-root");
      args.insert(args.end(), {"--bind-to", "none", "-x", "OMP_NUM_THREADS", "-x", "OPENBLAS_NUM_THREADS"});
      args.insert(args.end(), spec.mpirun_flags.begin(), spec.mpirun_flags.end());
    }
    args.insert(args.end(), {opt.llm_train, "--config", (s.dir / "train.cfg").string(), "--metrics-file", metrics.string(),
                             "--save", ck.string()});
    if (from) args.insert(args.end(), {"--load", *from});
    args.insert(args.end(), spec.extra_flags.begin(), spec.extra_flags.end());
    ++s.attempts;
    if (r.inject_failure && (spec.fail_attempts == 0 || s.attempts <= spec.fail_attempts))
      args.push_back("--sweep-test-injected-failure");  // [test] fail-runs: llm-train refuses the unknown flag
    std::string cmd = "OMP_NUM_THREADS=" + std::to_string(spec.threads_per_rank) + " OPENBLAS_NUM_THREADS=1";
    for (const auto& a : args) cmd += " " + quote(a);
    write_file_atomically((s.dir / "command.txt").string(), cmd + "\n");
    const std::string header = "=== llm-sweep: attempt " + std::to_string(s.attempts) + " of run " + r.name + " at " +
                               now_str() + (from ? ", resuming from " + *from : ", from scratch") + ": " + cmd + "\n";
    std::ofstream(s.dir / "stdout.log", std::ios::app) << header;
    std::ofstream(s.dir / "stderr.log", std::ios::app) << header;
    s.stderr_offset = fs::file_size(s.dir / "stderr.log");
    s.progress_iteration = read_metrics(metrics.string()).last_iteration;
    s.status = "running";
    save_state(s);

    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string out_log = (s.dir / "stdout.log").string(), err_log = (s.dir / "stderr.log").string();
    const std::string threads = std::to_string(spec.threads_per_rank);
    std::fflush(nullptr);
    log.flush();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
    if (pid == 0) {
      ::setpgid(0, 0);  // the terminal's Ctrl-C reaches llm-sweep only; it decides what the runs get
      const int o = ::open(out_log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
      const int e = ::open(err_log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
      if (o >= 0) ::dup2(o, 1);
      if (e >= 0) ::dup2(e, 2);
      const int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, 0);
      ::setenv("OMP_NUM_THREADS", threads.c_str(), 1);
      ::setenv("OPENBLAS_NUM_THREADS", "1", 1);
      ::execvp(argv[0], argv.data());
      std::fprintf(stderr, "llm-sweep: cannot run %s: %s\n", argv[0], std::strerror(errno));
      ::_exit(127);
    }
    ::setpgid(pid, pid);
    s.pid = pid;
    s.started = Clock::now();
    active.push_back(i);
    log << "[" << now_str() << "] started " << r.name << " (attempt " << s.attempts
        << (from ? ", resuming from its checkpoint" : "") << "): " << r.model.num_layers << " layers, hidden "
        << r.model.hidden_size << ", N " << short_number(static_cast<double>(r.n_params)) << ", "
        << short_number(static_cast<double>(r.tokens)) << " tokens, " << r.train_iters << " iterations\n";
    log.flush();
  };

  auto progress = [&](bool force) {
    const auto now = Clock::now();
    if (!force && std::chrono::duration<double>(now - last_progress).count() < opt.progress_interval) return;
    last_progress = now;
    int done = 0, failed = 0, pending = 0;
    double remaining = 0, rate_sum = 0;  // FLOPs left; measured FLOP/s per run
    int rates = 0;
    std::string live;
    for (const Slot& s : slots) {
      if (!s.plan) continue;
      if (s.done()) {
        ++done;
      } else if (s.status == "failed") {
        ++failed;
      } else if (s.pid == 0) {
        ++pending;
        remaining += s.plan->flops_exact;
      }
      const double tps = s.metrics.tokens_per_sec;
      if (std::isfinite(tps) && tps > 0) {
        rate_sum += tps * s.plan->model.flops_per_token();
        ++rates;
      }
    }
    for (size_t i : active) {
      Slot& s = slots[i];
      s.metrics = read_metrics((s.dir / "metrics.jsonl").string());
      const double frac = std::min(1.0, static_cast<double>(s.metrics.last_iteration) / s.plan->train_iters);
      remaining += (1.0 - frac) * s.plan->flops_exact;
      char buf[96];
      std::snprintf(buf, sizeof buf, " %s %.0f%%", s.name.c_str(), 100.0 * frac);
      live += buf;
      const double tps = s.metrics.tokens_per_sec;
      if (std::isfinite(tps) && tps > 0) {
        rate_sum += tps * s.plan->model.flops_per_token();
        ++rates;
      }
    }
    const double parallel = std::max(1.0, std::min<double>(opt.max_concurrent, static_cast<double>(cores / std::max<int64_t>(1, per_run))));
    const double eta = rates ? remaining / (rate_sum / rates * parallel) : NAN;
    log << "[" << now_str() << "] sweep: " << done << "/" << plan.size() << " done, " << active.size() << " running, "
        << failed << " failed, " << pending << " pending |" << (live.empty() ? " -" : live) << " | elapsed "
        << hms(std::chrono::duration<double>(now - sweep_start).count()) << ", ETA " << hms(eta) << "\n";
    log.flush();
  };

  auto reap = [&](size_t idx, int wstatus) {
    Slot& s = slots[idx];
    const RunPlan& r = *s.plan;
    s.pid = 0;
    active.erase(std::find(active.begin(), active.end(), idx));
    s.wall_seconds += std::chrono::duration<double>(Clock::now() - s.started).count();
    s.metrics = read_metrics((s.dir / "metrics.jsonl").string());
    const bool exited = WIFEXITED(wstatus);
    const int code = exited ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    s.last_exit_code = code;
    const bool complete = s.metrics.complete(r.train_iters);
    if (code == 0 && complete) {
      s.status = "done";
      ++finished_now;
      write_json(s.dir / "done.json", {{"run", r.name},
                                       {"hash", s.hash},
                                       {"final_train_loss", s.metrics.final_train_loss},
                                       {"final_val_loss", s.metrics.final_val_loss},
                                       {"val_iteration", s.metrics.val_iteration},
                                       {"last_iteration", s.metrics.last_iteration},
                                       {"tokens_per_sec", s.metrics.tokens_per_sec},
                                       {"skipped_updates", s.metrics.skipped_updates},
                                       {"wall_seconds", s.wall_seconds},
                                       {"attempts", s.attempts},
                                       {"finished_at", now_str()}});
      char buf[160];
      std::snprintf(buf, sizeof buf, "train loss %.4f, val loss %.4f, %.0f tokens/s, %s", s.metrics.final_train_loss,
                    s.metrics.final_val_loss, s.metrics.tokens_per_sec, hms(s.wall_seconds).c_str());
      log << "[" << now_str() << "] done " << r.name << ": " << buf << "\n";
      if (s.metrics.skipped_updates > 0)
        log << "    warning: " << s.metrics.skipped_updates << " of its " << r.train_iters
            << " updates were skipped (non-finite values or loss spikes; see the events in "
            << (s.dir / "metrics.jsonl").string() << "): its losses may not be comparable with the other runs'\n";
    } else if (stopping) {
      s.status = "interrupted";
      log << "[" << now_str() << "] stopped " << r.name << " at iteration " << s.metrics.last_iteration << " of "
          << r.train_iters << " (exit " << code << "); it resumes from its checkpoint next time\n";
    } else if (code == 0 && s.metrics.last_iteration > s.progress_iteration) {
      // Stopped early without being asked by us (a signal sent to the run itself, a time limit): resume it.
      s.status = "pending";
      ++s.resumes;
      queue.push_front(idx);
      log << "[" << now_str() << "] " << r.name << " stopped at iteration " << s.metrics.last_iteration << " of "
          << r.train_iters << " without being asked by llm-sweep; resuming it from its checkpoint\n";
    } else {
      ++s.failures;
      s.last_error = tail_lines(s.dir / "stderr.log", s.stderr_offset, 3);
      if (code == 0) s.last_error = "exited 0 but made no progress and has no final evaluation: " + s.last_error;
      const bool retry = s.failures <= opt.max_retries;
      s.status = retry ? "pending" : "failed";
      if (retry) queue.push_back(idx);
      log << "[" << now_str() << "] FAILED " << r.name << " (exit " << code << ", failure " << s.failures << " of at most "
          << opt.max_retries + 1 << ")" << (retry ? ", will retry" : ", giving up") << ": " << s.last_error
          << "\n    logs: " << (s.dir / "stderr.log").string() << "\n";
    }
    save_state(s);
    write_results();
    progress(true);
  };

  while (true) {
    if (g_signals > signals_handled) {
      signals_handled = g_signals;
      const int sig = g_last_signal;
      stopping = true;
      const int kill_sig = signals_handled == 1 ? SIGUSR1 : signals_handled == 2 ? SIGTERM : SIGKILL;
      log << "\nllm-sweep: " << strsignal(sig) << ": "
          << (signals_handled == 1 ? "no new runs; asking the running ones to save a checkpoint and stop (SIGUSR1); "
                                     "interrupt again to stop them at once"
              : signals_handled == 2 ? "sending SIGTERM to the running runs; once more kills them"
                                     : "killing the running runs (SIGKILL); they resume from their last checkpoint")
          << "\n";
      log.flush();
      for (size_t i : active) ::kill(kill_sig == SIGKILL ? -slots[i].pid : slots[i].pid, kill_sig);
    }
    const bool soft_stop = opt.stop_after > 0 && finished_now >= opt.stop_after;
    while (!stopping && !soft_stop && !queue.empty() && static_cast<int>(active.size()) < opt.max_concurrent &&
           (active.empty() || static_cast<int64_t>(active.size() + 1) * per_run <= cores)) {
      const size_t i = queue.front();
      queue.pop_front();
      launch(i);
    }
    int wstatus = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &wstatus, WNOHANG)) > 0) {
      for (size_t i : active)
        if (slots[i].pid == pid) {
          reap(i, wstatus);
          break;
        }
    }
    if (active.empty() && (queue.empty() || stopping || soft_stop)) break;
    progress(false);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGHUP, &old_hup, nullptr);
  write_results();

  // Summary.
  int done = 0, failed = 0, left = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const Slot& s = slots[i];
    if (s.done()) ++done;
    else if (s.status == "failed") ++failed;
    else ++left;
  }
  log << "\nllm-sweep: " << done << " of " << plan.size() << " runs done, " << failed << " failed, " << left
      << " not finished; results: " << (out / "results.csv").string() << "\n";
  for (size_t i = 0; i < plan.size(); ++i) {
    const Slot& s = slots[i];
    if (s.status == "failed")
      log << "  " << s.name << " failed " << s.failures << " time(s), last with exit code " << s.last_exit_code << ": "
          << s.last_error << "\n    logs: " << (s.dir / "stderr.log").string()
          << "; to try again rerun with a larger --max-retries (now " << opt.max_retries << "), or delete "
          << s.dir.string() << "\n";
  }
  const std::string resume_cmd = "llm-sweep --spec " + quote(opt.spec_path) + " --out " + quote(opt.out_dir);
  if (left > 0) {
    log << "llm-sweep: " << (stopping ? "interrupted" : "stopped (--stop-after)") << ": " << left
        << " run(s) not finished (interrupted ones resume from their checkpoints, finished ones are kept). "
           "Resume with the same command:\n  "
        << resume_cmd << "\n";
    log.flush();
    ::close(lock_fd);
    return kSweepInterrupted;
  }

  int rc = failed ? kSweepFailed : kSweepDone;
  if (spec.fit) {
    std::vector<std::string> args = {opt.llm_fit.empty() ? std::string("llm-fit") : opt.llm_fit, "--results",
                                     (out / "results.csv").string(), "--out", out.string()};
    // The fit's N is the N the spec counts.
    if (spec.rule.non_embedding) args.insert(args.end(), {"--n-column", "n_non_embedding"});
    if (!spec.fit_budgets.empty()) {
      std::string b;
      for (double c : spec.fit_budgets) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.6g", c);
        b += (b.empty() ? "" : ",") + std::string(buf);
      }
      args.insert(args.end(), {"--budgets", b});
    }
    std::string cmd;
    for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + quote(a);
    if (done < spec.min_runs_to_fit) {
      log << "llm-sweep: only " << done << " run(s) finished; the fit needs [sweep] min-runs-to-fit = "
          << spec.min_runs_to_fit << ": no fit\n";
    } else if (opt.llm_fit.empty() || !fs::exists(opt.llm_fit)) {
      log << "llm-sweep: llm-fit was not found" << (opt.llm_fit.empty() ? "" : " at " + opt.llm_fit)
          << ", so no scaling law was fitted. Build it (cmake --build build --target llm-fit) and run:\n  llm-fit"
          << cmd.substr(quote(args[0]).size()) << "\n";
    } else {
      log << "llm-sweep: fitting: " << cmd << "\n";
      log.flush();
      std::fflush(nullptr);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::execv(argv[0], argv.data());
        std::fprintf(stderr, "llm-sweep: cannot run %s: %s\n", argv[0], std::strerror(errno));
        ::_exit(127);
      }
      int wstatus = 0;
      while (pid > 0 && ::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
      }
      if (pid < 0 || !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
        log << "llm-sweep: llm-fit failed (" << (pid < 0 ? "could not start it" : "exit " + std::to_string(WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus)))
            << "); the runs' results are intact in " << (out / "results.csv").string() << "; rerun the fit with: " << cmd
            << "\n";
        rc = kSweepFailed;
      }
    }
  }
  log.flush();
  ::close(lock_fd);
  return rc;
}

}  // namespace llm::sweep
