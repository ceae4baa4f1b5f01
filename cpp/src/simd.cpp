#include "turbokv/simd.hpp"

#include <cstdlib>
#include <stdexcept>

namespace turbokv {

SimdLevel detect_simd() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // The AVX2 level's kernels use BMI1 (bextr) and BMI2 (pdep) beside AVX2 and FMA (their target).
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl");
  if (avx512) return SimdLevel::kAvx512;
  if (avx2) return SimdLevel::kAvx2;
#elif defined(__aarch64__)
  return SimdLevel::kNeon;
#endif
  return SimdLevel::kScalar;
}

std::vector<SimdLevel> supported_simd() {
  const SimdLevel best = detect_simd();
  if (best == SimdLevel::kNeon) return {SimdLevel::kScalar, SimdLevel::kNeon};
  std::vector<SimdLevel> out;
  for (int l = 0; l <= static_cast<int>(best); ++l) out.push_back(static_cast<SimdLevel>(l));
  return out;
}

bool simd_supported(SimdLevel level) {
  for (SimdLevel l : supported_simd()) {
    if (l == level) return true;
  }
  return false;
}

const char* simd_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::kAvx512: return "avx512";
    case SimdLevel::kAvx2: return "avx2";
    case SimdLevel::kNeon: return "neon";
    default: return "scalar";
  }
}

SimdLevel parse_simd(const std::string& name) {
  if (name == "auto" || name.empty()) return detect_simd();
  if (name == "scalar") return SimdLevel::kScalar;
  if (name == "avx2") return SimdLevel::kAvx2;
  if (name == "avx512") return SimdLevel::kAvx512;
  if (name == "neon") return SimdLevel::kNeon;
  throw std::invalid_argument("unknown SIMD level '" + name +
                              "': use one of auto, scalar, avx2, avx512, neon");
}

SimdLevel default_simd() {
  const char* env = std::getenv("TURBOKV_SIMD");
  const SimdLevel best = detect_simd();
  if (env == nullptr) return best;
  const SimdLevel asked = parse_simd(env);
  if (!simd_supported(asked)) {
    throw std::runtime_error(std::string("TURBOKV_SIMD=") + env + " but this CPU supports at most " +
                             simd_name(best));
  }
  return asked;
}

}  // namespace turbokv
