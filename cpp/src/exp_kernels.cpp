// The row operations of fused attention: the online softmax's (one exponential per (query, token)
// pair, so a scalar libm call per score would cost more than the scoring itself) and the per-token
// scalings of scores and weights (scale_rows).
#include <cmath>

#include "kernels.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace turbokv {
namespace kernels {
namespace {

float exp_shifted_scalar(float* x, int64_t n, float shift) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - shift));
  return sum;
}

void scale_rows_scalar(const float* w, int64_t w_stride, int m, const float* v, float c, int64_t n,
                       float* out, int64_t out_stride) {
  for (int a = 0; a < m; ++a) {
    for (int64_t j = 0; j < n; ++j) out[a * out_stride + j] = w[a * w_stride + j] * (v[j] * c);
  }
}

float scale_max_scalar(float* x, int64_t n, float scale) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    x[i] *= scale;
    max = x[i] > max ? x[i] : max;
  }
  return max;
}

#if TURBOKV_X86
TURBOKV_TARGET_AVX2 void scale_rows_avx2(const float* w, int64_t w_stride, int m, const float* v, float c,
                                         int64_t n, float* out, int64_t out_stride) {
  const __m256 vc = _mm256_set1_ps(c);
  for (int a = 0; a < m; ++a) {
    const float* wa = w + a * w_stride;
    float* oa = out + a * out_stride;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      _mm256_storeu_ps(oa + j, _mm256_mul_ps(_mm256_loadu_ps(wa + j), _mm256_mul_ps(_mm256_loadu_ps(v + j), vc)));
    }
    for (; j < n; ++j) oa[j] = wa[j] * (v[j] * c);
  }
}

TURBOKV_TARGET_AVX2 float scale_max_avx2(float* x, int64_t n, float scale) {
  const __m256 vscale = _mm256_set1_ps(scale);
  __m256 max = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vscale);
    _mm256_storeu_ps(x + i, v);
    max = _mm256_max_ps(v, max);  // a NaN v keeps max, as the scalar loop
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, max);
  float top = scale_max_scalar(x + i, n - i, scale);
  for (float lane : lanes) top = lane > top ? lane : top;
  return top;
}

// exp(v) = 2^k * exp(r) as in exp_avx512 below; AVX2 has no scalef, so 2^k is built in the exponent
// field. k comes from adding 1.5 * 2^23 (round to nearest even, ties as vroundps, for |k| < 2^22),
// which leaves k in the low mantissa bits: plus 127 and shifted up by 23 they are 2^k. One factor
// is exact wherever the result is kept (v >= ln FLT_MIN gives k >= -126, r >= 0 at k = -126, so no
// subnormal): the same floats as vroundps and 2^(k/2) 2^(k - k/2), for every float up to 88 (all
// 3.3e9 compared), in 5 fewer vector operations per 8 (K2V2 int8 decode at 32K, 12 layers, one
// thread, model-167 VM: 0.97x the time, kernel_choices_avx2.md round 57).
TURBOKV_TARGET_AVX2 __m256 exp_avx2(__m256 v) {
  const __m256 clamped = _mm256_max_ps(v, _mm256_set1_ps(-104.0f));
  const __m256 shifter = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23
  const __m256 biased = _mm256_add_ps(_mm256_mul_ps(clamped, _mm256_set1_ps(1.44269504088896341f)), shifter);
  const __m256 k = _mm256_sub_ps(biased, shifter);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), clamped);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // Below ln FLT_MIN, k + 127 < 1 and these bits are no power of two: the mask below drops them.
  const __m256 two_k = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(biased), _mm256_set1_epi32(127)), 23));
  const __m256 result = _mm256_mul_ps(p, two_k);
  // Results below FLT_MIN (v < ln FLT_MIN, and -inf) flush to 0: subnormal softmax weights would
  // slow every product that reads them on many CPUs, and weigh < 1.2e-38 against the maximum's 1.
  return _mm256_and_ps(result, _mm256_cmp_ps(v, _mm256_set1_ps(-87.3365478515625f), _CMP_GE_OQ));
}

TURBOKV_TARGET_AVX2 float exp_shifted_avx2(float* x, int64_t n, float shift) {
  const __m256 vshift = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vshift));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  return total + exp_shifted_scalar(x + i, n - i, shift);
}

// exp(v) = 2^k * exp(r), k = round(v / ln 2), r = v - k ln 2 in [-ln2/2, ln2/2] (ln 2 split in
// two parts so r is exact), exp(r) by its Taylor polynomial to degree 6 (error < 2e-7 there).
TURBOKV_TARGET_AVX512 __m512 exp_avx512(__m512 v) {
  const __m512 clamped = _mm512_max_ps(v, _mm512_set1_ps(-104.0f));  // exp < 1e-45: 0 after scalef
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), clamped);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}

TURBOKV_TARGET_AVX512 float exp_shifted_avx512(float* x, int64_t n, float shift) {
  const __m512 vshift = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t width = n - i < 16 ? n - i : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1u);
    const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), vshift);
    const __m512 e = exp_avx512(v);
    _mm512_mask_storeu_ps(x + i, mask, e);
    sum = _mm512_mask_add_ps(sum, mask, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

TURBOKV_TARGET_AVX512 void scale_rows_avx512(const float* w, int64_t w_stride, int m, const float* v, float c,
                                             int64_t n, float* out, int64_t out_stride) {
  const __m512 vc = _mm512_set1_ps(c);
  for (int a = 0; a < m; ++a) {
    const float* wa = w + a * w_stride;
    float* oa = out + a * out_stride;
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 mask = static_cast<__mmask16>(n - j >= 16 ? 0xFFFF : (1u << (n - j)) - 1u);
      const __m512 scaled = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, v + j), vc);
      _mm512_mask_storeu_ps(oa + j, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, wa + j), scaled));
    }
  }
}

TURBOKV_TARGET_AVX512 float scale_max_avx512(float* x, int64_t n, float scale) {
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 max = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t width = n - i < 16 ? n - i : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1u);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), vscale);
    _mm512_mask_storeu_ps(x + i, mask, v);
    max = _mm512_mask_max_ps(max, mask, max, v);
  }
  return _mm512_reduce_max_ps(max);
}
#endif

#if defined(__aarch64__)
// NEON twins of the AVX2 versions: the same range reduction, polynomial and two-factor 2^k.
float scale_max_neon(float* x, int64_t n, float scale) {
  float32x4_t max = vdupq_n_f32(-INFINITY);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vmulq_n_f32(vld1q_f32(x + i), scale);
    vst1q_f32(x + i, v);
    max = vmaxnmq_f32(max, v);  // maxNum: a NaN v keeps max, as the scalar loop
  }
  float lanes[4];
  vst1q_f32(lanes, max);
  float top = scale_max_scalar(x + i, n - i, scale);
  for (float lane : lanes) top = lane > top ? lane : top;
  return top;
}

float32x4_t exp_neon(float32x4_t v) {
  const float32x4_t clamped = vmaxq_f32(v, vdupq_n_f32(-104.0f));
  const float32x4_t k = vrndnq_f32(vmulq_n_f32(clamped, 1.44269504088896341f));
  float32x4_t r = vfmsq_n_f32(clamped, k, 0.693359375f);  // clamped - k ln2_hi
  r = vfmsq_n_f32(r, k, -2.12194440e-4f);
  float32x4_t p = vdupq_n_f32(1.0f / 720);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 120), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 24), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 6), p, r);
  p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  const int32x4_t ki = vcvtq_s32_f32(k);  // k is integral
  const int32x4_t half = vshrq_n_s32(ki, 1);
  const int32x4_t bias = vdupq_n_s32(127);
  const float32x4_t two_half = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(half, bias), 23));
  const float32x4_t two_rest = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vsubq_s32(ki, half), bias), 23));
  const float32x4_t result = vmulq_f32(vmulq_f32(p, two_half), two_rest);
  // Below FLT_MIN (and -inf): 0, as exp_avx2.
  const uint32x4_t normal = vcgeq_f32(v, vdupq_n_f32(-87.3365478515625f));
  return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(result), normal));
}

float exp_shifted_neon(float* x, int64_t n, float shift) {
  const float32x4_t vshift = vdupq_n_f32(shift);
  float32x4_t sum = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t e = exp_neon(vsubq_f32(vld1q_f32(x + i), vshift));
    vst1q_f32(x + i, e);
    sum = vaddq_f32(sum, e);
  }
  float lanes[4];
  vst1q_f32(lanes, sum);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + exp_shifted_scalar(x + i, n - i, shift);
}

void scale_rows_neon(const float* w, int64_t w_stride, int m, const float* v, float c, int64_t n,
                     float* out, int64_t out_stride) {
  for (int a = 0; a < m; ++a) {
    const float* wa = w + a * w_stride;
    float* oa = out + a * out_stride;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) vst1q_f32(oa + j, vmulq_f32(vld1q_f32(wa + j), vmulq_n_f32(vld1q_f32(v + j), c)));
    for (; j < n; ++j) oa[j] = wa[j] * (v[j] * c);
  }
}
#endif

}  // namespace

ScaleRowsFn select_scale_rows(SimdLevel level) {
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return scale_rows_neon;
#endif
  return TURBOKV_PICK(level, scale_rows_scalar, scale_rows_avx2, scale_rows_avx512);
}

ScaleMaxFn select_scale_max(SimdLevel level) {
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return scale_max_neon;
#endif
  return TURBOKV_PICK(level, scale_max_scalar, scale_max_avx2, scale_max_avx512);
}

ExpShiftedFn select_exp_shifted(SimdLevel level) {
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return exp_shifted_neon;
#endif
  return TURBOKV_PICK(level, exp_shifted_scalar, exp_shifted_avx2, exp_shifted_avx512);
}

}  // namespace kernels
}  // namespace turbokv
