// Rows of floats rounded to int8 or int16 with one scale each (KernelSet::quantize_rows_int8 /
// _int16): the rotated queries of int8 and int16 scores, once per row of every decode call. The
// scalar level is quantize_int8 / quantize_int16 row by row; AVX2 and AVX-512 take the largest
// magnitude and round 8 or 16 coordinates at a time with the same floats (row_rounding,
// round_scaled), so every level returns the same integers and scales. Scalar, 32 query rows of
// head_dim 128 took 13% of a decode call over a short cache (16 tokens, 8 KV heads; session 56).
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

void quantize_rows_int8_scalar(const float* x, int64_t rows, int d, int8_t* out, float* scales) {
  for (int64_t r = 0; r < rows; ++r) scales[r] = quantize_int8(x + r * d, d, out + r * d);
}

void require_int16_top(int top) {
  if (top < 1 || top > 32767) throw std::invalid_argument("quantize_int16: top must be in [1, 32767]");
}

void quantize_rows_int16_scalar(const float* x, int64_t rows, int d, int top, int16_t* out, float* scales) {
  require_int16_top(top);  // also with no rows, as every level
  for (int64_t r = 0; r < rows; ++r) scales[r] = quantize_int16(x + r * d, d, top, out + r * d);
}

#if TURBOKV_X86
// The largest |x_i| as the scalar loop takes it: max_ps returns its second operand where the
// first is NaN, so a NaN coordinate leaves the maximum as it was (std::max(top, NaN) == top).
TURBOKV_TARGET_AVX2 float largest_magnitude_avx2(const float* x, int d) {
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 top = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= d; i += 8) top = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), magnitude), top);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, top);
  float best = 0.0f;
  for (float lane : lanes) best = std::max(best, lane);
  for (; i < d; ++i) best = std::max(best, std::fabs(x[i]));
  return best;
}

// 8 coordinates rounded as round_scaled rounds each (integral floats in +-limit, or 0).
TURBOKV_TARGET_AVX2 __m256i round_eight_avx2(__m256 v, __m256 pre, __m256 inv, __m256 limit) {
  const __m256 k_round = _mm256_set1_ps(12582912.0f);
  v = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(v, pre), inv), k_round), k_round);
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 inside = _mm256_cmp_ps(_mm256_and_ps(v, magnitude), limit, _CMP_LE_OQ);  // false for NaN
  const __m256 zero = _mm256_setzero_ps();
  const __m256 outside = _mm256_or_ps(_mm256_and_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ), limit),
                                      _mm256_and_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ), _mm256_sub_ps(zero, limit)));
  return _mm256_cvttps_epi32(_mm256_blendv_ps(outside, v, inside));  // integral: truncation is exact
}

template <typename Int>
TURBOKV_TARGET_AVX2 float quantize_row_avx2(const float* x, int d, int top_int, Int* out) {
  const float top = largest_magnitude_avx2(x, d);
  if (!(top > 0.0f)) {
    std::fill(out, out + d, Int{0});
    return 0.0f;
  }
  const RowRounding r = row_rounding(top, top_int);
  const __m256 pre = _mm256_set1_ps(r.pre), inv = _mm256_set1_ps(r.inv), limit = _mm256_set1_ps(r.limit);
  int i = 0;
  for (; i + 8 <= d; i += 8) {
    const __m256i v = round_eight_avx2(_mm256_loadu_ps(x + i), pre, inv, limit);
    // In +-top_int <= 32767: the saturating packs are exact.
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    if constexpr (sizeof(Int) == 1) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packs_epi16(words, words));
    } else {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), words);
    }
  }
  for (; i < d; ++i) out[i] = static_cast<Int>(static_cast<int>(round_scaled(x[i], r)));
  return top / static_cast<float>(top_int);
}

TURBOKV_TARGET_AVX2 void quantize_rows_int8_avx2(const float* x, int64_t rows, int d, int8_t* out, float* scales) {
  for (int64_t r = 0; r < rows; ++r) scales[r] = quantize_row_avx2(x + r * d, d, 127, out + r * d);
}

TURBOKV_TARGET_AVX2 void quantize_rows_int16_avx2(const float* x, int64_t rows, int d, int top, int16_t* out,
                                                  float* scales) {
  require_int16_top(top);
  for (int64_t r = 0; r < rows; ++r) scales[r] = quantize_row_avx2(x + r * d, d, top, out + r * d);
}

template <typename Int>
TURBOKV_TARGET_AVX512 float quantize_row_avx512(const float* x, int d, int top_int, Int* out) {
  const __m512 magnitude = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  __m512 largest = _mm512_setzero_ps();
  for (int i = 0; i < d; i += 16) {  // lanes past d load as 0, which changes no maximum
    const __mmask16 mask = static_cast<__mmask16>(d - i >= 16 ? 0xFFFF : (1u << (d - i)) - 1u);
    largest = _mm512_max_ps(_mm512_and_ps(_mm512_maskz_loadu_ps(mask, x + i), magnitude), largest);
  }
  const float top = _mm512_reduce_max_ps(largest);  // no NaN lanes (see largest_magnitude_avx2)
  if (!(top > 0.0f)) {
    std::fill(out, out + d, Int{0});
    return 0.0f;
  }
  const RowRounding r = row_rounding(top, top_int);
  const __m512 pre = _mm512_set1_ps(r.pre), inv = _mm512_set1_ps(r.inv), limit = _mm512_set1_ps(r.limit);
  const __m512 k_round = _mm512_set1_ps(12582912.0f), zero = _mm512_setzero_ps();
  for (int i = 0; i < d; i += 16) {
    const __mmask16 mask = static_cast<__mmask16>(d - i >= 16 ? 0xFFFF : (1u << (d - i)) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
    v = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(v, pre), inv), k_round), k_round);
    const __mmask16 inside = _mm512_cmp_ps_mask(_mm512_and_ps(v, magnitude), limit, _CMP_LE_OQ);
    __m512 outside = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), limit);
    outside = _mm512_mask_mov_ps(outside, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), _mm512_sub_ps(zero, limit));
    const __m512i integers = _mm512_cvttps_epi32(_mm512_mask_mov_ps(outside, inside, v));
    if constexpr (sizeof(Int) == 1) {
      _mm512_mask_cvtsepi32_storeu_epi8(out + i, mask, integers);
    } else {
      _mm512_mask_cvtsepi32_storeu_epi16(out + i, mask, integers);
    }
  }
  return top / static_cast<float>(top_int);
}

TURBOKV_TARGET_AVX512 void quantize_rows_int8_avx512(const float* x, int64_t rows, int d, int8_t* out,
                                                     float* scales) {
  for (int64_t r = 0; r < rows; ++r) scales[r] = quantize_row_avx512(x + r * d, d, 127, out + r * d);
}

TURBOKV_TARGET_AVX512 void quantize_rows_int16_avx512(const float* x, int64_t rows, int d, int top,
                                                      int16_t* out, float* scales) {
  require_int16_top(top);
  for (int64_t r = 0; r < rows; ++r) scales[r] = quantize_row_avx512(x + r * d, d, top, out + r * d);
}
#endif

}  // namespace

QuantizeRowsInt8Fn select_quantize_rows_int8(SimdLevel level) {
  return TURBOKV_PICK(level, quantize_rows_int8_scalar, quantize_rows_int8_avx2, quantize_rows_int8_avx512);
}

QuantizeRowsInt16Fn select_quantize_rows_int16(SimdLevel level) {
  return TURBOKV_PICK(level, quantize_rows_int16_scalar, quantize_rows_int16_avx2, quantize_rows_int16_avx512);
}

}  // namespace kernels
}  // namespace turbokv
