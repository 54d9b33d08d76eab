// Makes OpenBLAS use the GEMM kernels this CPU can run.
//
// OpenBLAS picks its kernels once, when the library loads. Debian's 0.3.21
// does not recognise some recent or virtualised Xeons and falls back to its
// SSE3 "Prescott" kernels, 4-6x slower than the AVX-512 ones (measured here:
// 25 vs 100 GFLOP/s on one core). When that happens and the user has not set
// OPENBLAS_CORETYPE, this sets it from the CPU's own feature flags and
// re-executes the program, before MPI or any thread starts. It prints one
// line saying so when `announce`; OPENBLAS_CORETYPE set by the user is always respected.
#pragma once

namespace llm {

// Call first thing in main(). Returns normally when nothing needs to change.
void ensure_native_blas_kernels(char** argv, bool announce = false);

// The kernel family OpenBLAS is using ("SkylakeX", "Haswell", ...).
const char* blas_core_name();

}  // namespace llm
