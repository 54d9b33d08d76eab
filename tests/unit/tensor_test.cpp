#include <gtest/gtest.h>

#include "core/tensor.h"

using namespace llm;

TEST(Tensor, AllocationIsChargedToItsCategoryAndPeakIsKept) {
  auto& tr = memory_tracker(Device::cpu());
  const size_t before = tr.current(MemoryCategory::Workspace);
  {
    Tensor a = Tensor::zeros({128, 64}, DType::F32, MemoryCategory::Workspace);
    EXPECT_EQ(tr.current(MemoryCategory::Workspace), before + 128 * 64 * 4);
    Tensor v = a.view({64, 128});  // a view allocates nothing
    EXPECT_EQ(tr.current(MemoryCategory::Workspace), before + 128 * 64 * 4);
  }
  EXPECT_EQ(tr.current(MemoryCategory::Workspace), before);
  EXPECT_GE(tr.peak(MemoryCategory::Workspace), before + 128 * 64 * 4);
}

TEST(Tensor, SliceRowsSharesStorage) {
  Tensor a = Tensor::zeros({4, 3}, DType::I32, MemoryCategory::Other);
  Tensor s = a.slice_rows(2, 4);
  s.data<int32_t>()[0] = 7;
  EXPECT_EQ(a.data<int32_t>()[6], 7);
  EXPECT_THROW(a.slice_rows(3, 5), std::out_of_range);
  EXPECT_THROW(a.data<float>(), std::logic_error);
  EXPECT_THROW(a.view({5}), std::invalid_argument);
}

TEST(Tensor, Bf16RoundsToNearestEven) {
  EXPECT_EQ(static_cast<float>(bf16(1.0f)), 1.0f);
  // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1+2^-7: ties go to even (1).
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
}
