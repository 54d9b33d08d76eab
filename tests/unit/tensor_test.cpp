#include <gtest/gtest.h>

#include <cmath>

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

TEST(Tensor, HalfToFloatCoversNormalsSubnormalsAndSpecials) {
  EXPECT_EQ(half_to_float(0x3C00), 1.0f);
  EXPECT_EQ(half_to_float(0xC000), -2.0f);
  EXPECT_EQ(half_to_float(0x7BFF), 65504.0f);            // largest half
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(half_to_float(0x0200), std::ldexp(1.0f, -15));  // a larger subnormal
  EXPECT_TRUE(std::isinf(half_to_float(0x7C00)));
  EXPECT_TRUE(std::isnan(half_to_float(0x7E00)));
  EXPECT_TRUE(std::signbit(half_to_float(0x8000)));
}

TEST(Tensor, ShapesThatOverflowAreRefused) {
  EXPECT_THROW(shape_numel({int64_t{1} << 32, int64_t{1} << 32}), std::invalid_argument);
  EXPECT_THROW(shape_numel({2, -1}), std::invalid_argument);
}
