// Instruction-set levels and the one-time choice between them.
#pragma once
#include <string>

namespace turbokv {

enum class SimdLevel { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// Best level this CPU supports (AVX2 needs FMA, BMI2 and F16C too; AVX-512 needs F, BW, DQ, VL).
SimdLevel detect_simd();

// detect_simd(), unless TURBOKV_SIMD=scalar|avx2|avx512 asks for another level.
// Asking for a level the CPU lacks throws std::runtime_error rather than crashing later.
SimdLevel default_simd();

const char* simd_name(SimdLevel level);

// Parses "scalar", "avx2", "avx512" or "auto"; throws std::invalid_argument otherwise.
SimdLevel parse_simd(const std::string& name);

}  // namespace turbokv
