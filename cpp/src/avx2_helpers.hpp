// Internal: small AVX2 building blocks shared by the lookup and packed-code kernels.
#pragma once
#include "kernels.hpp"

#if TURBOKV_X86
namespace turbokv {
namespace kernels {

// table[idx[0..8)] for a table padded to 16 floats: one permute up to 3 bits, two and a blend at
// 4 (they beat a gather), a gather above.
TURBOKV_TARGET_AVX2 inline __m256 gather8(const float* table, const uint8_t* idx, int bits) {
  const __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(idx)));
  if (bits <= 3) return _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), index);
  if (bits == 4) {
    const __m256 low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), index);
    const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 8), index);
    return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
  }
  return _mm256_i32gather_ps(table, index, 4);
}

TURBOKV_TARGET_AVX2 inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

}  // namespace kernels
}  // namespace turbokv
#endif
