// The process grid's arithmetic without MPI, so world 8 (and any other size)
// is checked in one process: layout validation, Megatron's rank order, and
// group memberships against tables written out by hand from Megatron's
// initialize_model_parallel.
#include <gtest/gtest.h>

#include <set>

#include "parallel/process_grid.h"

namespace llm {
namespace {

using Groups = std::vector<std::vector<int>>;

// Every rank's group of kind g must be the one listed that contains it.
void expect_groups(const ParallelLayout& l, GroupKind g, const Groups& want) {
  for (int r = 0; r < l.world(); ++r) {
    const auto got = group_members(l, r, g);
    std::vector<int> expected = {r};  // ranks not listed are in a group of one
    for (const auto& w : want)
      if (std::find(w.begin(), w.end(), r) != w.end()) expected = w;
    EXPECT_EQ(got, expected) << l.str() << " group " << group_name(g) << " of rank " << r;
  }
}

TEST(ProcessGrid, MakeLayoutComputesDp) {
  auto l = make_layout(8, 2, 2);
  EXPECT_EQ(l.tp, 2);
  EXPECT_EQ(l.pp, 2);
  EXPECT_EQ(l.dp, 2);
  EXPECT_EQ(make_layout(8, 1, 2).dp, 4);
  EXPECT_EQ(make_layout(8, 4, 1).dp, 2);
  EXPECT_EQ(make_layout(8, 8, 1).dp, 1);
  EXPECT_EQ(make_layout(1, 1, 1).dp, 1);
  EXPECT_EQ(make_layout(8, 2, 2).str(), "tp2·pp2·dp2");
}

TEST(ProcessGrid, InvalidLayoutsNameTheFlags) {
  try {
    make_layout(8, 3, 1);
    FAIL() << "tp 3 on 8 ranks accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("world size 8 is not divisible by --tensor-model-parallel-size × "
                                         "--pipeline-model-parallel-size = 3 × 1 = 3"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(make_layout(6, 2, 2), std::invalid_argument);
  EXPECT_THROW(make_layout(8, 16, 1), std::invalid_argument);
  for (auto [tp, pp, flag] : {std::tuple{0, 1, "--tensor-model-parallel-size"},
                              std::tuple{1, -2, "--pipeline-model-parallel-size"}}) {
    try {
      make_layout(8, tp, pp);
      ADD_FAILURE() << "tp " << tp << " pp " << pp << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  }
}

TEST(ProcessGrid, MegatronRankOrder) {
  const auto l = make_layout(8, 2, 2);
  // rank = pp·dp·tp + dp·tp + tp: tp fastest, then dp, then pp.
  const GridCoord want[8] = {{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {1, 1, 0},
                             {0, 0, 1}, {1, 0, 1}, {0, 1, 1}, {1, 1, 1}};
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(grid_coord(l, r), want[r]) << r;
    EXPECT_EQ(global_rank_of(l, want[r].tp, want[r].dp, want[r].pp), r);
  }
  EXPECT_THROW(grid_coord(l, 8), std::out_of_range);
  EXPECT_THROW(global_rank_of(l, 2, 0, 0), std::out_of_range);
}

TEST(ProcessGrid, GroupsOfWorld8MatchMegatron) {
  auto l = make_layout(8, 2, 2);  // tp2·pp2·dp2
  expect_groups(l, GroupKind::TP, {{0, 1}, {2, 3}, {4, 5}, {6, 7}});
  expect_groups(l, GroupKind::DP, {{0, 2}, {1, 3}, {4, 6}, {5, 7}});
  expect_groups(l, GroupKind::PP, {{0, 4}, {1, 5}, {2, 6}, {3, 7}});
  expect_groups(l, GroupKind::Embedding, {{0, 4}, {1, 5}, {2, 6}, {3, 7}});
  expect_groups(l, GroupKind::World, {{0, 1, 2, 3, 4, 5, 6, 7}});

  l = make_layout(8, 1, 2);  // tp1·pp2·dp4
  expect_groups(l, GroupKind::TP, {});
  expect_groups(l, GroupKind::DP, {{0, 1, 2, 3}, {4, 5, 6, 7}});
  expect_groups(l, GroupKind::PP, {{0, 4}, {1, 5}, {2, 6}, {3, 7}});
  expect_groups(l, GroupKind::Embedding, {{0, 4}, {1, 5}, {2, 6}, {3, 7}});

  l = make_layout(8, 4, 1);  // tp4·pp1·dp2
  expect_groups(l, GroupKind::TP, {{0, 1, 2, 3}, {4, 5, 6, 7}});
  expect_groups(l, GroupKind::DP, {{0, 4}, {1, 5}, {2, 6}, {3, 7}});
  expect_groups(l, GroupKind::PP, {});
  expect_groups(l, GroupKind::Embedding, {});

  l = make_layout(8, 2, 4);  // tp2·pp4·dp1: middle stages hold no embedding
  expect_groups(l, GroupKind::TP, {{0, 1}, {2, 3}, {4, 5}, {6, 7}});
  expect_groups(l, GroupKind::DP, {});
  expect_groups(l, GroupKind::PP, {{0, 2, 4, 6}, {1, 3, 5, 7}});
  expect_groups(l, GroupKind::Embedding, {{0, 6}, {1, 7}});
}

// For every layout of several world sizes the groups partition the world,
// have the layout's sizes, and agree on their members from every member.
TEST(ProcessGrid, GroupsPartitionEveryLayout) {
  for (int world : {1, 2, 4, 6, 8, 12, 16}) {
    for (int tp = 1; tp <= world; ++tp) {
      for (int pp = 1; tp * pp <= world; ++pp) {
        if (world % (tp * pp)) continue;
        const auto l = make_layout(world, tp, pp);
        for (auto [g, size] : {std::pair{GroupKind::TP, l.tp}, std::pair{GroupKind::PP, l.pp},
                               std::pair{GroupKind::DP, l.dp}, std::pair{GroupKind::World, world}}) {
          std::set<int> seen;
          for (int r = 0; r < world; ++r) {
            const auto m = group_members(l, r, g);
            ASSERT_EQ(static_cast<int>(m.size()), size) << l.str() << " " << group_name(g);
            ASSERT_NE(std::find(m.begin(), m.end(), r), m.end());
            for (int x : m) ASSERT_EQ(group_members(l, x, g), m) << l.str() << " " << group_name(g);
            seen.insert(m.begin(), m.end());
          }
          EXPECT_EQ(static_cast<int>(seen.size()), world);
        }
        for (int r = 0; r < world; ++r) {
          const auto c = grid_coord(l, r);
          EXPECT_EQ(global_rank_of(l, c.tp, c.dp, c.pp), r);
          // The group's rank order is the coordinate along it.
          EXPECT_EQ(group_members(l, r, GroupKind::TP)[c.tp], r);
          EXPECT_EQ(group_members(l, r, GroupKind::DP)[c.dp], r);
          EXPECT_EQ(group_members(l, r, GroupKind::PP)[c.pp], r);
        }
      }
    }
  }
}

}  // namespace
}  // namespace llm
