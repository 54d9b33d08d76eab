// Shared by the `gpu` tests: skip (with the reason) when no CUDA device is
// present, so the suite stays green on the GPU-less build machines.
#pragma once
#include <gtest/gtest.h>

#include "core/allocator.h"

#define LLM_REQUIRE_GPU()                                                                     \
  do {                                                                                        \
    if (!::llm::cuda::available()) GTEST_SKIP() << "no CUDA device found: gpu test skipped"; \
  } while (0)
