#include "core/cpu/blas_runtime.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace llm {

const char* blas_core_name() { return openblas_get_corename(); }

static const char* best_core_for_this_cpu() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

void ensure_native_blas_kernels(char** argv, bool announce) {
  if (std::getenv("OPENBLAS_CORETYPE")) return;  // the user's choice stands
  const char* current = openblas_get_corename();
  const bool generic = current && (std::strcmp(current, "Prescott") == 0 || std::strcmp(current, "Core2") == 0 ||
                                   std::strcmp(current, "Nehalem") == 0 || std::strcmp(current, "Sandybridge") == 0);
  const char* best = best_core_for_this_cpu();
  if (!generic || !best) return;
  setenv("OPENBLAS_CORETYPE", best, 1);
  static char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return;
  self[n] = '\0';
  if (announce)
    std::fprintf(stderr, "note: OpenBLAS chose its generic '%s' kernels on this CPU; restarting with "
                       "OPENBLAS_CORETYPE=%s (set OPENBLAS_CORETYPE yourself to override)\n", current, best);
  execv(self, argv);
  unsetenv("OPENBLAS_CORETYPE");  // exec failed: carry on with the generic kernels
}

}  // namespace llm
