// Instruction-set levels and the one-time choice between them.
#pragma once
#include <string>
#include <vector>

namespace turbokv {

// x86 levels nest (scalar < avx2 < avx512); NEON is the arm64 level. Compare levels only through
// simd_supported / supported_simd, never by their numbers.
enum class SimdLevel { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kNeon = 3 };

// Best level this CPU supports (AVX2 needs FMA, BMI2 and F16C too; AVX-512 needs F, BW, DQ, VL;
// NEON is part of every arm64 CPU).
SimdLevel detect_simd();

// Every level this CPU can run, scalar first, best last.
std::vector<SimdLevel> supported_simd();
bool simd_supported(SimdLevel level);

// detect_simd(), unless TURBOKV_SIMD=scalar|avx2|avx512|neon asks for another level.
// Asking for a level the CPU lacks throws std::runtime_error rather than crashing later.
SimdLevel default_simd();

const char* simd_name(SimdLevel level);

// Parses "scalar", "avx2", "avx512", "neon" or "auto"; throws std::invalid_argument otherwise.
SimdLevel parse_simd(const std::string& name);

}  // namespace turbokv
