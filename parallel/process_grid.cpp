// Process grid: layout validation, Megatron's rank arithmetic, and the MPI
// groups built from it with MPI_Comm_split.
#include "parallel/process_grid.h"

#include "parallel/local_communicator.h"
#include "parallel/routed_communicator.h"
#ifdef LLM_WITH_NCCL
#include "parallel/nccl_communicator.h"
#endif

#include <algorithm>
#include <stdexcept>

namespace llm {

std::string ParallelLayout::str() const {
  return "tp" + std::to_string(tp) + "·pp" + std::to_string(pp) + "·dp" + std::to_string(dp);
}

ParallelLayout make_layout(int world, int tp, int pp) {
  if (tp < 1)
    throw std::invalid_argument("--tensor-model-parallel-size must be at least 1, got " + std::to_string(tp));
  if (pp < 1)
    throw std::invalid_argument("--pipeline-model-parallel-size must be at least 1, got " + std::to_string(pp));
  if (world < 1) throw std::invalid_argument("world size must be at least 1, got " + std::to_string(world));
  const long long mp = static_cast<long long>(tp) * pp;
  if (world % mp != 0)
    throw std::invalid_argument(
        "world size " + std::to_string(world) +
        " is not divisible by --tensor-model-parallel-size × --pipeline-model-parallel-size = " +
        std::to_string(tp) + " × " + std::to_string(pp) + " = " + std::to_string(mp) + ": launch a multiple of " +
        std::to_string(mp) + " ranks, or choose sizes whose product divides " + std::to_string(world));
  return {tp, pp, static_cast<int>(world / mp)};
}

GridCoord grid_coord(const ParallelLayout& l, int rank) {
  if (rank < 0 || rank >= l.world())
    throw std::out_of_range("rank " + std::to_string(rank) + " outside layout " + l.str());
  return {rank % l.tp, (rank / l.tp) % l.dp, rank / (l.tp * l.dp)};
}

int global_rank_of(const ParallelLayout& l, int tp, int dp, int pp) {
  if (tp < 0 || tp >= l.tp || dp < 0 || dp >= l.dp || pp < 0 || pp >= l.pp)
    throw std::out_of_range("grid position (tp " + std::to_string(tp) + ", dp " + std::to_string(dp) + ", pp " +
                            std::to_string(pp) + ") outside layout " + l.str());
  return pp * l.dp * l.tp + dp * l.tp + tp;
}

const char* group_name(GroupKind g) {
  switch (g) {
    case GroupKind::World: return "world";
    case GroupKind::TP: return "tp";
    case GroupKind::PP: return "pp";
    case GroupKind::DP: return "dp";
    case GroupKind::Embedding: return "embedding";
  }
  return "?";
}

std::vector<int> group_members(const ParallelLayout& l, int rank, GroupKind g) {
  const GridCoord c = grid_coord(l, rank);
  std::vector<int> m;
  switch (g) {
    case GroupKind::World:
      for (int r = 0; r < l.world(); ++r) m.push_back(r);
      break;
    case GroupKind::TP:
      for (int t = 0; t < l.tp; ++t) m.push_back(global_rank_of(l, t, c.dp, c.pp));
      break;
    case GroupKind::DP:
      for (int d = 0; d < l.dp; ++d) m.push_back(global_rank_of(l, c.tp, d, c.pp));
      break;
    case GroupKind::PP:
      for (int p = 0; p < l.pp; ++p) m.push_back(global_rank_of(l, c.tp, c.dp, p));
      break;
    case GroupKind::Embedding:
      if (l.pp == 1 || (c.pp != 0 && c.pp != l.pp - 1)) {
        m.push_back(rank);
      } else {
        m.push_back(global_rank_of(l, c.tp, c.dp, 0));
        m.push_back(global_rank_of(l, c.tp, c.dp, l.pp - 1));
      }
      break;
  }
  return m;
}

namespace {

// MPI_Comm_split color: one value per group of kind g, the same for all its
// members and different between groups (the group's first member's rank).
int split_color(const ParallelLayout& l, int rank, GroupKind g) { return group_members(l, rank, g).front(); }

}  // namespace

ProcessGrid::ProcessGrid(const ParallelLayout& layout, MPI_Comm world) : layout_(layout) {
  int size = 0;
  MPI_Comm_rank(world, &rank_);
  MPI_Comm_size(world, &size);
  if (layout.tp < 1 || layout.pp < 1 || layout.dp < 1 || layout.world() != size)
    throw std::invalid_argument("parallel layout " + layout.str() + " needs " + std::to_string(layout.world()) +
                                " ranks but the job has " + std::to_string(size) +
                                " (check --tensor-model-parallel-size and --pipeline-model-parallel-size)");
  coord_ = grid_coord(layout_, rank_);
  world_ = std::make_unique<MpiCommunicator>(world, "world");
  auto make = [&](GroupKind g) {
    // key: position in the group (members are listed in group-rank order).
    const auto m = group_members(layout_, rank_, g);
    const int key = static_cast<int>(std::find(m.begin(), m.end(), rank_) - m.begin());
    return MpiCommunicator::split(world, split_color(layout_, rank_, g), key, group_name(g));
  };
  tp_ = make(GroupKind::TP);
  pp_ = make(GroupKind::PP);
  dp_ = make(GroupKind::DP);
  embedding_ = make(GroupKind::Embedding);
}

ProcessGrid::ProcessGrid(const ParallelLayout& layout, Local) : layout_(layout), local_(true) {
  if (layout.world() != 1)
    throw std::invalid_argument("parallel layout " + layout.str() + " needs " + std::to_string(layout.world()) +
                                " ranks: launch with mpirun -n " + std::to_string(layout.world()));
  world_ = std::make_unique<LocalCommunicator>("world");
  tp_ = std::make_unique<LocalCommunicator>("tp");
  pp_ = std::make_unique<LocalCommunicator>("pp");
  dp_ = std::make_unique<LocalCommunicator>("dp");
  embedding_ = std::make_unique<LocalCommunicator>("embedding");
}

void ProcessGrid::enable_gpu(int device) {
  if (local_) return;
#ifdef LLM_WITH_NCCL
  // Every rank creates the groups in the same order (NCCL's init is collective).
  for (auto* c : {&world_, &tp_, &pp_, &dp_, &embedding_}) {
    auto nccl = NcclCommunicator::create(**c, (*c)->name(), device);
    *c = std::make_unique<RoutedCommunicator>(std::move(*c), std::move(nccl));
  }
#else
  (void)device;
  throw std::invalid_argument("GPU training on " + std::to_string(world_size()) +
                              " ranks needs the NCCL communicator: rebuild with -DLLM_WITH_NCCL=ON");
#endif
}

Communicator& ProcessGrid::group(GroupKind g) const {
  switch (g) {
    case GroupKind::World: return *world_;
    case GroupKind::TP: return *tp_;
    case GroupKind::PP: return *pp_;
    case GroupKind::DP: return *dp_;
    case GroupKind::Embedding: return *embedding_;
  }
  throw std::logic_error("unknown group kind");
}

std::string ProcessGrid::describe() const {
  std::string s = "world " + std::to_string(world_size()) + " = " + layout_.str() + "; rank " +
                  std::to_string(rank_) + ": tp " + std::to_string(coord_.tp) + ", dp " + std::to_string(coord_.dp) +
                  ", pp " + std::to_string(coord_.pp);
  if (layout_.pp > 1 && is_first_stage()) s += " (first stage)";
  if (layout_.pp > 1 && is_last_stage()) s += " (last stage)";
  return s;
}

void ProcessGrid::reset_counters() {
  for (auto* c : {world_.get(), tp_.get(), pp_.get(), dp_.get(), embedding_.get()}) c->reset_counters();
}

namespace {
constexpr GroupKind kGroups[] = {GroupKind::World, GroupKind::TP, GroupKind::PP, GroupKind::DP,
                                 GroupKind::Embedding};
}

std::string comm_report(const ProcessGrid& grid) {
  std::string s;
  for (GroupKind g : kGroups) {
    for (size_t i = 0; i < static_cast<size_t>(CommOp::kCount); ++i) {
      const auto op = static_cast<CommOp>(i);
      const uint64_t b = grid.group(g).bytes_sent(op);
      if (b == 0) continue;
      s += (s.empty() ? "" : "; ") + std::string(group_name(g)) + " " + comm_op_name(op) + " " +
           format_bytes(static_cast<size_t>(b)) + (op == CommOp::Recv ? " (received)" : "");
    }
  }
  return "comm bytes sent: " + (s.empty() ? std::string("none") : s);
}

nlohmann::json comm_report_json(const ProcessGrid& grid) {
  nlohmann::json j = nlohmann::json::object();
  for (GroupKind g : kGroups) {
    auto& o = j[group_name(g)];
    o = nlohmann::json::object();
    for (size_t i = 0; i < static_cast<size_t>(CommOp::kCount); ++i)
      o[comm_op_name(static_cast<CommOp>(i))] = grid.group(g).bytes_sent(static_cast<CommOp>(i));
  }
  return j;
}

}  // namespace llm
