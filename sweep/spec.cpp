#include "sweep/spec.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "sweep/flops.h"

namespace llm::sweep {

namespace {

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  const auto b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) out.push_back(trim(item));
  if (!s.empty() && s.back() == sep) out.push_back("");
  return out;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// A run-name-safe version of a label.
std::string safe(const std::string& label) {
  std::string out;
  for (char c : label) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '+') ? c : '_';
  return out;
}

}  // namespace

double parse_quantity(const std::string& text, const std::string& key) {
  const std::string t = trim(text);
  if (t.empty()) fail(key + ": empty value: write a number such as 2e6 or 2M");
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (end == t.c_str()) fail(key + ": '" + t + "' is not a number (write e.g. 1e13, 0.5M or 200k)");
  const std::string rest(end);
  double scale = 1;
  if (rest == "k" || rest == "K") scale = 1e3;
  else if (rest == "M") scale = 1e6;
  else if (rest == "G" || rest == "B") scale = 1e9;
  else if (rest == "T") scale = 1e12;
  else if (!rest.empty())
    fail(key + ": '" + t + "' is not a number: the suffix '" + rest +
         "' is not one of k (1e3), M (1e6), G or B (1e9), T (1e12)");
  if (!std::isfinite(v)) fail(key + ": '" + t + "' is not a finite number");
  return v * scale;
}

const std::vector<std::string>& reserved_train_flags() {
  static const std::vector<std::string> flags = {
      "--config", "--num-layers", "--hidden-size", "--ffn-hidden-size", "--ffn-multiple-of", "--num-attention-heads",
      "--num-query-groups", "--seq-length", "--vocab-size", "--tie-embeddings", "--data-path", "--valid-data-path",
      "--tokenizer-model", "--micro-batch-size", "--global-batch-size", "--train-iters", "--lr", "--min-lr",
      "--lr-warmup-iters", "--lr-decay-iters", "--lr-decay-style", "--seed", "--tensor-model-parallel-size",
      "--pipeline-model-parallel-size", "--zero-stage", "--log-interval", "--eval-interval", "--eval-iters",
      "--metrics-file", "--save", "--load", "--load-hf", "--save-interval", "--keep-last", "--exit-interval",
      "--exit-duration-in-mins", "--spike-action"};
  return flags;
}

SweepSpec parse_spec(const std::string& text, const std::string& source) {
  SweepSpec s;
  s.source = source;
  std::map<std::string, std::string> where;  // "section.key" -> "FILE:LINE: [section] key"
  using Handler = std::function<void(const std::string& value, const std::string& at)>;
  auto pos_int = [](int64_t& field, const std::string& what) {
    return Handler([&field, what](const std::string& v, const std::string& at) {
      const double x = parse_quantity(v, at);
      if (!(x >= 1) || x != std::floor(x) || x > 9e15) fail(at + ": '" + v + "' must be a positive whole number (" + what + ")");
      field = static_cast<int64_t>(x);
    });
  };
  auto nonneg_int = [](int64_t& field, const std::string& what) {
    return Handler([&field, what](const std::string& v, const std::string& at) {
      const double x = parse_quantity(v, at);
      if (!(x >= 0) || x != std::floor(x) || x > 9e15) fail(at + ": '" + v + "' must be a whole number >= 0 (" + what + ")");
      field = static_cast<int64_t>(x);
    });
  };
  auto pos_real = [](double& field, const std::string& what) {
    return Handler([&field, what](const std::string& v, const std::string& at) {
      const double x = parse_quantity(v, at);
      if (!(x > 0)) fail(at + ": '" + v + "' must be positive (" + what + ")");
      field = x;
    });
  };
  auto real_in = [](double& field, double lo, double hi, bool hi_open, const std::string& what) {
    return Handler([=, &field](const std::string& v, const std::string& at) {
      const double x = parse_quantity(v, at);
      if (!(x >= lo) || (hi_open ? !(x < hi) : !(x <= hi)))
        fail(at + ": '" + v + "' must lie in [" + fmt(lo) + ", " + fmt(hi) + (hi_open ? ")" : "]") + " (" + what + ")");
      field = x;
    });
  };
  auto boolean = [](bool& field) {
    return Handler([&field](const std::string& v, const std::string& at) {
      std::string t = v;
      std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
      if (t == "true" || t == "yes" || t == "on" || t == "1") field = true;
      else if (t == "false" || t == "no" || t == "off" || t == "0") field = false;
      else fail(at + ": '" + v + "' is not a boolean: write true or false");
    });
  };
  auto path_value = [](std::string& field) {
    return Handler([&field](const std::string& v, const std::string& at) {
      if (v.empty()) fail(at + ": empty value: give a path");
      field = v;
    });
  };
  auto flag_list = [](std::vector<std::string>& field) {
    return Handler([&field](const std::string& v, const std::string&) { field = words(v); });
  };
  auto quantities = [](std::vector<Quantity>& field, const std::string& what) {
    return Handler([&field, what](const std::string& v, const std::string& at) {
      if (v.empty()) return;  // an empty axis: reported with the other axis checks
      for (const std::string& item : split(v, ',')) {
        if (item.empty())
          fail(at + ": an empty entry in the list '" + v + "': separate " + what + " by single commas");
        const double x = parse_quantity(item, at);
        if (!(x > 0)) fail(at + ": '" + item + "' must be positive (" + what + ")");
        for (const Quantity& q : field)
          if (q.value == x) fail(at + ": '" + item + "' is listed twice (as '" + q.label + "' before): remove one");
        field.push_back({x, item});
      }
    });
  };
  std::map<std::string, std::map<std::string, Handler>> keys;
  keys["sweep"] = {
      {"name", [&](const std::string& v, const std::string&) { s.name = v; }},
      {"min-runs-to-fit", pos_int(s.min_runs_to_fit, "finished runs needed before llm-fit runs")},
      {"fit", boolean(s.fit)},
      {"fit-budgets", [&](const std::string& v, const std::string& at) {
         for (const std::string& item : split(v, ',')) {
           const double x = parse_quantity(item, at);
           if (!(x > 0)) fail(at + ": '" + item + "' must be a positive compute budget in FLOPs");
           s.fit_budgets.push_back(x);
         }
       }}};
  keys["model"] = {
      {"n", quantities(s.n_targets, "target parameter counts")},
      {"shapes", [&](const std::string& v, const std::string& at) {
         if (v.empty()) return;
         for (const std::string& item : split(v, ',')) {
           const auto parts = split(item, 'x');
           bool ok = parts.size() == 3 || parts.size() == 4;
           std::vector<int64_t> n;
           for (const std::string& p : parts) {
             ok = ok && !p.empty() && p.find_first_not_of("0123456789") == std::string::npos && p.size() < 10;
             if (ok) n.push_back(std::stoll(p));
             ok = ok && n.back() > 0;
           }
           if (!ok)
             fail(at + ": '" + item + "' is not a shape: write LAYERSxHIDDENxHEADS or LAYERSxHIDDENxHEADSxFFN "
                  "with positive whole numbers, e.g. 2x64x4, 4x128x8x352");
           ExplicitShape e{{n[0], n[1], n[2], n.size() == 4 ? n[3] : 0}, item};
           for (const ExplicitShape& o : s.shapes)
             if (o.label == item) fail(at + ": '" + item + "' is listed twice: remove one");
           s.shapes.push_back(e);
         }
       }},
      {"n-count", [&](const std::string& v, const std::string& at) {
         if (v == "total") s.rule.non_embedding = false;
         else if (v == "non-embedding") s.rule.non_embedding = true;
         else fail(at + ": '" + v + "' is neither total nor non-embedding");
       }},
      {"aspect-ratio", pos_real(s.rule.aspect_ratio, "hidden size / layers")},
      {"head-dim", [&](const std::string& v, const std::string& at) {
         pos_int(s.rule.head_dim, "the dimension of each attention head")(v, at);
         if (s.rule.head_dim % 2) fail(at + ": '" + v + "' is odd: rotary embeddings need an even head dimension");
       }},
      {"ffn-multiple-of", pos_int(s.rule.ffn_multiple_of, "the rounding multiple of LLaMA's FFN width")},
      {"max-layers", pos_int(s.rule.max_layers, "the deepest model the shape rule may choose")},
      {"n-tolerance", real_in(s.rule.tolerance, 0, 0.5, false, "the accepted |N / target - 1|")},
      {"tie-embeddings", boolean(s.tie_embeddings)},
      {"vocab-size", pos_int(s.vocab_size, "the vocabulary size; normally taken from [data] tokenizer-model")}};
  keys["budget"] = {
      {"tokens", quantities(s.budgets, "token budgets D")},
      {"flops", quantities(s.budgets, "compute budgets C in FLOPs")}};
  keys["train"] = {
      {"seq-length", pos_int(s.seq_length, "tokens per training sequence")},
      {"global-batch-size", pos_int(s.global_batch_size, "sequences per optimizer step")},
      {"micro-batch-size", pos_int(s.micro_batch_size, "sequences per forward/backward pass")},
      {"lr", pos_real(s.lr, "the peak learning rate")},
      {"lr-exponent", real_in(s.lr_exponent, -2, 2, false, "p in lr = lr · (N / lr-reference-n)^-p")},
      {"lr-reference-n", pos_real(s.lr_reference_n, "the N at which the learning rate is exactly lr")},
      {"min-lr-ratio", real_in(s.min_lr_ratio, 0, 1, false, "min-lr / lr at the end of the cosine")},
      {"warmup-fraction", real_in(s.warmup_fraction, 0, 1, true, "the fraction of each run's iterations spent warming up")},
      {"warmup-iters", nonneg_int(s.warmup_iters, "warm-up iterations of every run")},
      {"log-interval", pos_int(s.log_interval, "iterations between metrics lines")},
      {"eval-interval", nonneg_int(s.eval_interval, "iterations between evaluations; 0: only the final one")},
      {"eval-iters", pos_int(s.eval_iters, "micro-batches per evaluation")},
      {"save-interval", pos_int(s.save_interval, "iterations between checkpoints")},
      {"keep-last", pos_int(s.keep_last, "checkpoints kept per run")},
      {"seed", [&](const std::string& v, const std::string& at) {
         int64_t x = 0;
         nonneg_int(x, "the seed of initialisation and data order")(v, at);
         s.seed = static_cast<uint64_t>(x);
       }},
      {"spike-action", [&](const std::string& v, const std::string& at) {
         if (v != "none" && v != "skip" && v != "rollback")
           fail(at + ": '" + v + "' is not one of none, skip, rollback (llm-train --spike-action)");
         s.spike_action = v;
       }},
      {"extra-flags", flag_list(s.extra_flags)}};
  keys["data"] = {
      {"data-path", path_value(s.data_path)},
      {"valid-data-path", path_value(s.valid_data_path)},
      {"tokenizer-model", path_value(s.tokenizer_model)}};
  keys["layout"] = {
      {"ranks", pos_int(s.ranks, "MPI ranks per run (mpirun -n)")},
      {"tensor-model-parallel-size", pos_int(s.tensor_parallel, "tensor-parallel ranks")},
      {"pipeline-model-parallel-size", pos_int(s.pipeline_parallel, "pipeline stages")},
      {"zero-stage", [&](const std::string& v, const std::string& at) {
         nonneg_int(s.zero_stage, "ZeRO stage")(v, at);
         if (s.zero_stage > 3) fail(at + ": '" + v + "' is not a ZeRO stage: write 0, 1, 2 or 3");
       }},
      {"threads-per-rank", pos_int(s.threads_per_rank, "OpenMP threads of each rank")},
      {"mpirun-flags", flag_list(s.mpirun_flags)}};
  keys["test"] = {
      {"fail-runs", [&](const std::string& v, const std::string&) {
         for (const std::string& item : split(v, ','))
           if (!item.empty()) s.fail_runs.push_back(item);
       }},
      {"fail-attempts", nonneg_int(s.fail_attempts, "attempts that fail; 0: all")}};

  std::istringstream in(text);
  std::string raw, section;
  int line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    const std::string at_line = source + ":" + std::to_string(line_no);
    std::string line = raw;
    if (const auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    line = trim(line);
    if (line.empty()) continue;
    if (line.front() == '[') {
      if (line.back() != ']') fail(at_line + ": '" + line + "' is not a section header: write [name]");
      section = trim(line.substr(1, line.size() - 2));
      if (!keys.count(section)) {
        std::string known;
        for (const auto& [name, _] : keys) known += (known.empty() ? "" : ", ") + ("[" + name + "]");
        fail(at_line + ": unknown section [" + section + "]: the sections are " + known);
      }
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos) fail(at_line + ": '" + line + "' is not 'key = value'");
    const std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    if (section.empty())
      fail(at_line + ": '" + key + "' is outside any section: put it under its [section] header (see --help)");
    const std::string at = at_line + ": [" + section + "] " + key;
    const auto& known = keys.at(section);
    const auto h = known.find(key);
    if (h == known.end()) {
      std::string list;
      for (const auto& [name, _] : known) list += (list.empty() ? "" : ", ") + name;
      std::string elsewhere;
      for (const auto& [sec, ks] : keys)
        if (ks.count(key)) elsewhere = " ('" + key + "' belongs under [" + sec + "])";
      fail(at + ": unknown key" + elsewhere + "; the keys of [" + section + "] are: " + list);
    }
    const std::string id = section + "." + key;
    if (where.count(id)) fail(at + ": given twice (first at " + where[id] + "): keep one");
    const bool list_key = key == "n" || key == "shapes" || key == "tokens" || key == "flops" || key == "extra-flags" ||
                          key == "mpirun-flags" || key == "name" || key == "fail-runs";
    if (value.empty() && !list_key)
      fail(at + ": no value: write '" + key + " = VALUE'");
    h->second(value, at);
    where[id] = at;
  }

  // Checks that involve several keys.
  auto has = [&](const std::string& id) { return where.count(id) > 0; };
  auto key_at = [&](const std::string& id) {
    const auto dot = id.find('.');
    return has(id) ? where.at(id) : source + ": [" + id.substr(0, dot) + "] " + id.substr(dot + 1);
  };
  if (has("model.n") == has("model.shapes"))
    fail(source + ": [model] needs exactly one N axis: either n = target parameter counts (e.g. n = 0.5M, 1M, 2M) "
                  "or shapes = LAYERSxHIDDENxHEADS, ...");
  if (has("model.n") && s.n_targets.empty())
    fail(key_at("model.n") + ": the N axis is empty: list at least one target parameter count, e.g. n = 0.5M, 1M");
  if (has("model.shapes") && s.shapes.empty())
    fail(key_at("model.shapes") + ": the N axis is empty: list at least one shape, e.g. shapes = 2x64x4, 4x128x8");
  if (has("budget.tokens") == has("budget.flops"))
    fail(source + ": [budget] needs exactly one D axis: either tokens = token budgets (e.g. tokens = 2M, 4M) or "
                  "flops = IsoFLOP compute budgets (e.g. flops = 1e13, 3e13), with D = C / (6 N)");
  s.flops_axis = has("budget.flops");
  if (s.budgets.empty())
    fail(key_at(s.flops_axis ? "budget.flops" : "budget.tokens") +
         ": the D axis is empty: list at least one budget, e.g. " + (s.flops_axis ? "flops = 1e13, 3e13" : "tokens = 2M, 4M"));
  if (!has("train.global-batch-size"))
    fail(source + ": [train] global-batch-size is missing: give the sequences per optimizer step, e.g. global-batch-size = 16");
  if (!has("train.lr")) fail(source + ": [train] lr is missing: give the peak learning rate, e.g. lr = 1e-3");
  if (has("train.warmup-fraction") && has("train.warmup-iters"))
    fail(key_at("train.warmup-iters") + ": give either warmup-fraction or warmup-iters, not both");
  if (s.lr_exponent != 0 && !has("train.lr-reference-n"))
    fail(key_at("train.lr-exponent") + ": a non-zero exponent needs [train] lr-reference-n, the N at which the "
                                       "learning rate is lr (e.g. lr-reference-n = 1M)");
  if (s.data_path.empty())
    fail(source + ": [data] data-path is missing: give the token file prefix written by llm-prepare-data");
  if (s.tokenizer_model.empty())
    fail(source + ": [data] tokenizer-model is missing: give the SentencePiece model the data was tokenised with");
  const int64_t grid = s.tensor_parallel * s.pipeline_parallel;
  if (s.ranks % grid != 0)
    fail(key_at("layout.ranks") + ": " + std::to_string(s.ranks) + " ranks are not divisible by tensor × pipeline = " +
         std::to_string(grid) + ": make ranks a multiple of it");
  const int64_t dp = s.data_parallel();
  if (s.global_batch_size % (s.micro_batch() * dp) != 0)
    fail(key_at("train.global-batch-size") + ": " + std::to_string(s.global_batch_size) +
         " is not a multiple of micro-batch-size " + std::to_string(s.micro_batch()) + " × data-parallel size " +
         std::to_string(dp) + " (= ranks / (tensor × pipeline)): make it a multiple of " +
         std::to_string(s.micro_batch() * dp));
  for (const std::string& f : s.extra_flags) {
    const std::string name = f.substr(0, f.find('='));
    for (const std::string& r : reserved_train_flags())
      if (name == r)
        fail(key_at("train.extra-flags") + ": " + r + " is set by llm-sweep for every run (from the spec's axes "
             "and keys); remove it from extra-flags and use the spec key instead");
  }
  if (s.fail_attempts > 0 && s.fail_runs.empty())
    fail(key_at("test.fail-attempts") + ": needs [test] fail-runs to name the runs that fail");
  return s;
}

SweepSpec load_spec(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("--spec " + path + ": cannot open the file (check the path and permissions)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_spec(ss.str(), path);
}

nlohmann::json RunPlan::definition(const SweepSpec& spec) const {
  return {{"model", model},
          {"train_iters", train_iters},
          {"global_batch_size", global_batch_size},
          {"micro_batch_size", micro_batch_size},
          {"lr", lr},
          {"min_lr", min_lr},
          {"warmup_iters", warmup_iters},
          {"lr_decay_style", "cosine"},
          {"seed", spec.seed},
          {"spike_action", spec.spike_action},
          {"log_interval", log_interval},
          {"eval_interval", eval_interval},
          {"eval_iters", eval_iters},
          {"data_path", spec.data_path},
          {"valid_data_path", spec.valid_data_path},
          {"tokenizer_model", spec.tokenizer_model},
          {"ranks", spec.ranks},
          {"tensor_model_parallel_size", spec.tensor_parallel},
          {"pipeline_model_parallel_size", spec.pipeline_parallel},
          {"zero_stage", spec.zero_stage},
          {"extra_flags", spec.extra_flags},
          {"flops_budget", flops_budget},
          {"n_counted", n_counted}};
}

std::string RunPlan::train_config(const SweepSpec& spec) const {
  std::ostringstream o;
  o.precision(17);
  o << "# llm-train options of sweep run " << name << " (written by llm-sweep; the command line adds\n"
    << "# --metrics-file, --save, --load and the extra flags)\n";
  o << "num-layers = " << model.num_layers << "\n"
    << "hidden-size = " << model.hidden_size << "\n"
    << "num-attention-heads = " << model.num_attention_heads << "\n"
    << "num-query-groups = " << model.groups() << "\n"
    << "ffn-hidden-size = " << model.ffn() << "\n"
    << "seq-length = " << model.seq_length << "\n";
  if (spec.vocab_size > 0) o << "vocab-size = " << spec.vocab_size << "\n";
  o << "data-path = " << spec.data_path << "\n";
  if (!spec.valid_data_path.empty()) o << "valid-data-path = " << spec.valid_data_path << "\n";
  o << "tokenizer-model = " << spec.tokenizer_model << "\n"
    << "micro-batch-size = " << micro_batch_size << "\n"
    << "global-batch-size = " << global_batch_size << "\n"
    << "train-iters = " << train_iters << "\n"
    << "lr = " << lr << "\n"
    << "min-lr = " << min_lr << "\n"
    << "lr-warmup-iters = " << warmup_iters << "\n"
    << "lr-decay-style = cosine\n"
    << "seed = " << spec.seed << "\n"
    << "spike-action = " << spec.spike_action << "\n"
    << "tensor-model-parallel-size = " << spec.tensor_parallel << "\n"
    << "pipeline-model-parallel-size = " << spec.pipeline_parallel << "\n"
    << "zero-stage = " << spec.zero_stage << "\n"
    << "log-interval = " << log_interval << "\n"
    << "eval-interval = " << eval_interval << "\n"
    << "eval-iters = " << eval_iters << "\n"
    << "save-interval = " << save_interval << "\n"
    << "keep-last = " << keep_last << "\n";
  return o.str();
}

std::vector<RunPlan> plan_runs(const SweepSpec& spec, int64_t vocab_size) {
  if (vocab_size <= 0)
    fail(spec.source + ": the vocabulary size is unknown: give [data] tokenizer-model (or [model] vocab-size)");
  if (vocab_size % spec.tensor_parallel != 0)
    fail(spec.source + ": [layout] tensor-model-parallel-size " + std::to_string(spec.tensor_parallel) +
         " does not divide the vocabulary size " + std::to_string(vocab_size) + ": choose a divisor");
  ShapeContext ctx{vocab_size, spec.seq_length, spec.tie_embeddings, spec.tensor_parallel, spec.pipeline_parallel};
  struct Size {
    Shape shape;
    std::string label, name;
    double target;
  };
  std::vector<Size> sizes;
  if (!spec.n_targets.empty()) {
    for (const Quantity& q : spec.n_targets) {
      const std::string key = spec.source + ": [model] n = " + q.label;
      sizes.push_back({shape_for_target(q.value, spec.rule, ctx, key), q.label, "n" + safe(q.label), q.value});
    }
  } else {
    for (const ExplicitShape& e : spec.shapes) {
      Shape sh = e.shape;
      if (sh.ffn_hidden_size == 0) sh.ffn_hidden_size = llama_ffn(sh.hidden_size, spec.rule.ffn_multiple_of);
      const std::string key = spec.source + ": [model] shapes = " + e.label;
      ModelConfig m = model_config(sh, ctx);
      try {
        m.validate();
      } catch (const std::invalid_argument& err) {
        fail(key + ": not a valid model: " + err.what());
      }
      if (sh.num_attention_heads % spec.tensor_parallel || sh.ffn_hidden_size % spec.tensor_parallel)
        fail(key + ": heads " + std::to_string(sh.num_attention_heads) + " and ffn " + std::to_string(sh.ffn_hidden_size) +
             " must divide by [layout] tensor-model-parallel-size " + std::to_string(spec.tensor_parallel));
      if (sh.num_layers < spec.pipeline_parallel)
        fail(key + ": fewer layers than [layout] pipeline-model-parallel-size " + std::to_string(spec.pipeline_parallel));
      sizes.push_back({sh, e.label, "s" + safe(e.label), 0.0});
    }
  }
  for (size_t i = 0; i < sizes.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (sizes[i].shape == sizes[j].shape)
        fail(spec.source + ": [model] " + (spec.n_targets.empty() ? "shapes " : "n = ") + sizes[j].label + " and " +
             sizes[i].label + " give the same shape (" + std::to_string(sizes[i].shape.num_layers) + " layers, hidden " +
             std::to_string(sizes[i].shape.hidden_size) + "): remove one or spread the targets further apart");
  const double per_iter = static_cast<double>(spec.tokens_per_iteration());
  const std::string axis = spec.flops_axis ? "flops" : "tokens";
  std::vector<RunPlan> runs;
  for (const Size& sz : sizes) {
    for (const Quantity& b : spec.budgets) {
      RunPlan r;
      r.name = sz.name + "_" + (spec.flops_axis ? "c" : "d") + safe(b.label);
      r.n_label = sz.label;
      r.d_label = b.label;
      r.n_target = sz.target;
      r.shape = sz.shape;
      r.model = model_config(sz.shape, ctx);
      r.n_params = total_parameters(r.model);
      r.n_non_embedding = non_embedding_parameters(r.model);
      r.n_counted = static_cast<double>(spec.rule.non_embedding ? r.n_non_embedding : r.n_params);
      r.flops_budget = spec.flops_axis ? b.value : 0.0;
      r.token_budget = spec.flops_axis ? b.value / (6.0 * r.n_counted) : b.value;
      const std::string key = spec.source + ": [budget] " + axis + " = " + b.label;
      if (r.token_budget < per_iter) {
        const double need = spec.flops_axis ? per_iter * 6.0 * r.n_counted : per_iter;
        fail(key + ": run " + r.name + " would train " + fmt(r.token_budget) + " tokens, less than one iteration (" +
             std::to_string(spec.tokens_per_iteration()) + " tokens = global-batch-size " +
             std::to_string(spec.global_batch_size) + " × seq-length " + std::to_string(spec.seq_length) +
             "): raise the budget to at least " + fmt(need) + " or lower [train] global-batch-size / seq-length");
      }
      r.train_iters = std::max<int64_t>(1, std::llround(r.token_budget / per_iter));
      r.tokens = r.train_iters * spec.tokens_per_iteration();
      r.flops_6nd = flops_6nd(static_cast<double>(r.n_params), static_cast<double>(r.tokens));
      r.flops_exact = flops_exact(r.model, static_cast<double>(r.tokens));
      r.global_batch_size = spec.global_batch_size;
      r.micro_batch_size = spec.micro_batch();
      r.seq_length = spec.seq_length;
      r.lr = spec.lr * (spec.lr_exponent == 0 ? 1.0 : std::pow(r.n_counted / spec.lr_reference_n, -spec.lr_exponent));
      r.min_lr = spec.min_lr_ratio * r.lr;
      r.warmup_iters = spec.warmup_iters >= 0 ? spec.warmup_iters
                                              : std::llround(spec.warmup_fraction * static_cast<double>(r.train_iters));
      if (r.warmup_iters >= r.train_iters)
        fail(spec.source + ": [train] " + (spec.warmup_iters >= 0 ? "warmup-iters" : "warmup-fraction") + ": run " +
             r.name + " has only " + std::to_string(r.train_iters) + " iterations but " +
             std::to_string(r.warmup_iters) + " of warm-up: the cosine needs iterations after the warm-up; " +
             "lower the warm-up or raise the run's budget");
      r.log_interval = spec.log_interval > 0 ? spec.log_interval : std::max<int64_t>(1, r.train_iters / 100);
      r.eval_interval = spec.eval_interval;
      r.eval_iters = spec.eval_iters;
      r.save_interval = spec.save_interval > 0 ? spec.save_interval : std::max<int64_t>(1, (r.train_iters + 3) / 4);
      r.keep_last = spec.keep_last;
      r.inject_failure = std::find(spec.fail_runs.begin(), spec.fail_runs.end(), r.name) != spec.fail_runs.end();
      runs.push_back(r);
    }
  }
  for (const std::string& f : spec.fail_runs)
    if (std::none_of(runs.begin(), runs.end(), [&](const RunPlan& r) { return r.name == f; }))
      fail(spec.source + ": [test] fail-runs: '" + f + "' is not a run of this sweep (see --dry-run for the names)");
  if (spec.fit && spec.min_runs_to_fit > static_cast<int64_t>(runs.size()))
    fail(spec.source + ": [sweep] min-runs-to-fit " + std::to_string(spec.min_runs_to_fit) + " exceeds the " +
         std::to_string(runs.size()) + " runs of the sweep: lower it, add sizes or budgets, or set fit = false");
  return runs;
}

}  // namespace llm::sweep
