// Internal: small AVX-512 building blocks shared by the packed-code kernels.
#pragma once
#include <cstdint>

#include "kernels.hpp"

#if TURBOKV_X86
namespace turbokv {
namespace kernels {

// The four horizontal sums of a, b, c, d as lanes 0..3, in 9 instructions instead of 4 x 8.
TURBOKV_TARGET_AVX512 inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Per 128-bit lane: ab = [a0+a2, b0+b2, a1+a3, b1+b3], likewise cd.
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  // Per 128-bit lane: [a, b, c, d] partial sums.
  const __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
  return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}

// out[a * out_stride] = the horizontal sum of acc[a], for a < kTile.
template <int kTile>
TURBOKV_TARGET_AVX512 inline void store_sums(const __m512* acc, float* out, int64_t out_stride) {
  if constexpr (kTile == 4) {
    const __m128 sums = reduce4(acc[0], acc[1], acc[2], acc[3]);
    out[0] = _mm_cvtss_f32(sums);
    out[out_stride] = _mm_cvtss_f32(_mm_shuffle_ps(sums, sums, 0x55));
    out[2 * out_stride] = _mm_cvtss_f32(_mm_shuffle_ps(sums, sums, 0xAA));
    out[3 * out_stride] = _mm_cvtss_f32(_mm_shuffle_ps(sums, sums, 0xFF));
  } else {
    for (int a = 0; a < kTile; ++a) out[a * out_stride] = _mm512_reduce_add_ps(acc[a]);
  }
}

}  // namespace kernels
}  // namespace turbokv
#endif
