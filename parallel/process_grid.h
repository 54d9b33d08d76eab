// The process grid: world = tp × pp × dp in Megatron's rank order (tp varies
// fastest, then dp, then pp: rank = pp_rank·dp·tp + dp_rank·tp + tp_rank), and
// one communicator per group. The layout arithmetic is pure (no MPI) so tests
// can check any world size in one process; ProcessGrid builds the MPI groups
// from the same functions, so the two cannot disagree.
#pragma once
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "parallel/mpi_communicator.h"

namespace llm {

struct ParallelLayout {
  int tp = 1, pp = 1, dp = 1;
  int world() const { return tp * pp * dp; }
  std::string str() const;  // "tp2·pp2·dp2"
};

// Validates --tensor-model-parallel-size and --pipeline-model-parallel-size
// against the world size; dp = world / (tp·pp). Throws std::invalid_argument
// naming the flags. Deterministic, so every rank rejects the same layout.
ParallelLayout make_layout(int world, int tp, int pp);

struct GridCoord {
  int tp = 0, dp = 0, pp = 0;
  bool operator==(const GridCoord&) const = default;
};
GridCoord grid_coord(const ParallelLayout& l, int rank);
int global_rank_of(const ParallelLayout& l, int tp, int dp, int pp);

// The groups. Embedding: the first and last pipeline stage of one (tp, dp)
// position (they share the tied embedding's gradient); for pp == 1, and for
// middle stages, a group of one.
enum class GroupKind { World, TP, PP, DP, Embedding };
const char* group_name(GroupKind g);  // "world", "tp", "pp", "dp", "embedding"
// Global ranks of `rank`'s group of kind g, in group-rank order.
std::vector<int> group_members(const ParallelLayout& l, int rank, GroupKind g);

class ProcessGrid {
 public:
  // Collective over `world`; throws std::invalid_argument (on every rank)
  // when the layout does not cover exactly the world's ranks.
  explicit ProcessGrid(const ParallelLayout& layout, MPI_Comm world = MPI_COMM_WORLD);
  // One process started without a launcher: every group is a LocalCommunicator
  // and MPI is never touched (layout must be 1·1·1).
  struct Local {};
  ProcessGrid(const ParallelLayout& layout, Local);
  ProcessGrid(const ProcessGrid&) = delete;
  ProcessGrid& operator=(const ProcessGrid&) = delete;

  const ParallelLayout& layout() const { return layout_; }
  int world_rank() const { return rank_; }
  int world_size() const { return layout_.world(); }
  int tp_rank() const { return coord_.tp; }
  int pp_rank() const { return coord_.pp; }
  int dp_rank() const { return coord_.dp; }
  int tp_size() const { return layout_.tp; }
  int pp_size() const { return layout_.pp; }
  int dp_size() const { return layout_.dp; }

  Communicator& world() const { return *world_; }
  Communicator& tp() const { return *tp_; }
  Communicator& pp() const { return *pp_; }
  Communicator& dp() const { return *dp_; }
  Communicator& embedding() const { return *embedding_; }
  Communicator& group(GroupKind g) const;

  bool is_first_stage() const { return coord_.pp == 0; }
  bool is_last_stage() const { return coord_.pp == layout_.pp - 1; }
  // Neighbouring stages as ranks of pp(); they wrap around, as in Megatron
  // (check is_first_stage()/is_last_stage() before a pipeline send).
  int next_stage_rank() const { return (coord_.pp + 1) % layout_.pp; }
  int prev_stage_rank() const { return (coord_.pp + layout_.pp - 1) % layout_.pp; }
  int global_rank_of(int tp, int dp, int pp) const { return llm::global_rank_of(layout_, tp, dp, pp); }

  // "world 8 = tp2·pp2·dp2; rank 5: tp 1, dp 0, pp 1 (last stage)"
  std::string describe() const;
  void reset_counters();
  // Tensors on the GPU `device` travel over NCCL from now on (one NCCL
  // communicator per group, its id sent over the group's MPI communicator);
  // host tensors stay on MPI. Collective over the world. A local grid needs
  // nothing: its groups of one copy on any device.
  void enable_gpu(int device);

 private:
  ParallelLayout layout_;
  int rank_ = 0;
  GridCoord coord_;
  std::unique_ptr<Communicator> world_, tp_, pp_, dp_, embedding_;
  bool local_ = false;
};

// Bytes this rank sent per group and operation (groups and ops with none are
// left out), e.g. "comm bytes sent: tp all_reduce 1.5 MiB; dp reduce_scatter 3.0 MiB".
std::string comm_report(const ProcessGrid& grid);
// {"tp": {"all_reduce": 1572864, ...}, ...}, every group and op, zeros included.
nlohmann::json comm_report_json(const ProcessGrid& grid);

}  // namespace llm
