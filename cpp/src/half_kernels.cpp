// float16 vectors: the full-precision side of the cache (bits = 0, and keys that protection
// keeps in float16) and the residual window.
#include "avx2_helpers.hpp"
#include "kernels.hpp"
#include "turbokv/half.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace turbokv {
namespace kernels {
namespace {

void to_half_scalar(const float* x, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_half(x[i]);
}

void from_half_scalar(const uint16_t* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(x[i]);
}

void dot_half_scalar(const float* q, int m, const uint16_t* halves, int64_t n, int d, float* out,
                     int64_t out_stride) {
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* v = halves + j * d;
    for (int a = 0; a < m; ++a) {
      float acc = 0.0f;
      for (int i = 0; i < d; ++i) acc += q[static_cast<int64_t>(a) * d + i] * half_to_float(v[i]);
      out[a * out_stride + j] = acc;
    }
  }
}

void axpy_half_scalar(const float* w, int64_t w_stride, int m, const uint16_t* halves, int64_t n,
                      int d, float* acc) {
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* v = halves + j * d;
    for (int a = 0; a < m; ++a) {
      const float weight = w[a * w_stride + j];
      if (weight == 0.0f) continue;
      float* acc_a = acc + static_cast<int64_t>(a) * d;
      for (int i = 0; i < d; ++i) acc_a[i] += weight * half_to_float(v[i]);
    }
  }
}

#if TURBOKV_X86
// F16C conversions round to nearest even, like float_to_half, so stored halves never depend on
// the SIMD level.
TURBOKV_TARGET_AVX2 void to_half_avx2(const float* x, uint16_t* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  }
  // GCC turns the call below into a jump without clearing the upper register halves first
  // (KernelsReturnWithCleanUpperHalves).
  _mm256_zeroupper();
  to_half_scalar(x + i, out + i, n - i);
}

TURBOKV_TARGET_AVX2 void from_half_avx2(const uint16_t* x, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  }
  from_half_scalar(x + i, out + i, n - i);
}

// Scores and values on float16 vectors with the skeletons of the packed-code kernels
// (avx2_helpers.hpp): each 16 converted coordinates serve up to 4 queries (the scalar loops
// converted every coordinate in software once per query). head_dim a multiple of 16.
struct HalfKey {  // coordinates c..c+15 of one vector
  const uint16_t* v;
  TURBOKV_TARGET_AVX2 void operator()(int c, __m256& v0, __m256& v1) const {
    v0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + c)));
    v1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + c + 8)));
  }
};

struct HalfColumns {  // coordinates c..c+15 of vector j
  const uint16_t* halves;
  int d, c;
  TURBOKV_TARGET_AVX2 void operator()(int64_t j, __m256& v0, __m256& v1) const {
    HalfKey{halves + j * d}(c, v0, v1);
  }
};

TURBOKV_TARGET_AVX2 void dot_half_avx2(const float* q, int m, const uint16_t* halves, int64_t n,
                                       int d, float* out, int64_t out_stride) {
  if (d % 16 != 0) return dot_half_scalar(q, m, halves, n, d, out, out_stride);
  for (int64_t j = 0; j < n; ++j) {
    const HalfKey key{halves + j * d};
    int a = 0;
    for (; a + 4 <= m; a += 4) dot16_tile_avx2<4>(q + static_cast<int64_t>(a) * d, d, key, out + a * out_stride + j, out_stride);
    if (a < m) dot16_rest_avx2(m - a, q + static_cast<int64_t>(a) * d, d, key, out + a * out_stride + j, out_stride);
  }
}

TURBOKV_TARGET_AVX2 void axpy_half_avx2(const float* w, int64_t w_stride, int m,
                                        const uint16_t* halves, int64_t n, int d, float* acc) {
  if (d % 16 != 0) return axpy_half_scalar(w, w_stride, m, halves, n, d, acc);
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    for (int c = 0; c < d; c += 16) {
      accumulate16_avx2<4>(w + a * w_stride, w_stride, n, HalfColumns{halves, d, c}, d, c, acc + static_cast<int64_t>(a) * d);
    }
  }
  if (a == m) return;
  // The last 1-3 queries in one pass (one pass per query converted the halves again for each).
  for (int c = 0; c < d; c += 16) {
    const HalfColumns columns{halves, d, c};
    float* rest = acc + static_cast<int64_t>(a) * d;
    switch (m - a) {
      case 3: accumulate16_avx2<3>(w + a * w_stride, w_stride, n, columns, d, c, rest); break;
      case 2: accumulate16_avx2<2>(w + a * w_stride, w_stride, n, columns, d, c, rest); break;
      default: accumulate16_avx2<1>(w + a * w_stride, w_stride, n, columns, d, c, rest); break;
    }
  }
}

TURBOKV_TARGET_AVX512 __m512 load_half16(const uint16_t* x, __mmask16 mask) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, x));
}

TURBOKV_TARGET_AVX512 void dot_half_avx512(const float* q, int m, const uint16_t* halves,
                                           int64_t n, int d, float* out, int64_t out_stride) {
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* v = halves + j * d;
    for (int a = 0; a < m; ++a) {
      const float* qa = q + static_cast<int64_t>(a) * d;
      __m512 acc = _mm512_setzero_ps();
      for (int i = 0; i < d; i += 16) {
        const auto mask = static_cast<__mmask16>(d - i >= 16 ? 0xFFFFu : (1u << (d - i)) - 1u);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, qa + i), load_half16(v + i, mask), acc);
      }
      out[a * out_stride + j] = _mm512_reduce_add_ps(acc);
    }
  }
}

TURBOKV_TARGET_AVX512 void axpy_half_avx512(const float* w, int64_t w_stride, int m,
                                            const uint16_t* halves, int64_t n, int d, float* acc) {
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* v = halves + j * d;
    for (int a = 0; a < m; ++a) {
      const float weight = w[a * w_stride + j];
      if (weight == 0.0f) continue;
      const __m512 vw = _mm512_set1_ps(weight);
      float* acc_a = acc + static_cast<int64_t>(a) * d;
      for (int i = 0; i < d; i += 16) {
        const auto mask = static_cast<__mmask16>(d - i >= 16 ? 0xFFFFu : (1u << (d - i)) - 1u);
        const __m512 sum = _mm512_fmadd_ps(vw, load_half16(v + i, mask), _mm512_maskz_loadu_ps(mask, acc_a + i));
        _mm512_mask_storeu_ps(acc_a + i, mask, sum);
      }
    }
  }
}
#endif

#if defined(__aarch64__)
// NEON: the hardware conversions round to nearest even (the default FPCR mode) and handle
// subnormals like float_to_half / half_to_float, so stored halves stay level-independent; the
// inputs are finite (the cache refuses NaN, Inf and values beyond the float16 range).
void to_half_neon(const float* x, uint16_t* out, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(out + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
  to_half_scalar(x + i, out + i, n - i);
}

void from_half_neon(const uint16_t* x, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + i))));
  from_half_scalar(x + i, out + i, n - i);
}

inline float32x4_t load_half4(const uint16_t* x) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x))); }

// Up to 4 queries per vector, each 4 converted coordinates serving all of them.
template <int kTile>
void dot_half_tile_neon(const float* q, int d, const uint16_t* v, float* out, int64_t out_stride) {
  float32x4_t acc[kTile];
  for (int a = 0; a < kTile; ++a) acc[a] = vdupq_n_f32(0.0f);
  int i = 0;
  for (; i + 4 <= d; i += 4) {
    const float32x4_t x = load_half4(v + i);
    for (int a = 0; a < kTile; ++a) acc[a] = vfmaq_f32(acc[a], vld1q_f32(q + a * d + i), x);
  }
  for (int a = 0; a < kTile; ++a) {
    float sum = vaddvq_f32(acc[a]);
    for (int t = i; t < d; ++t) sum += q[a * d + t] * half_to_float(v[t]);
    out[a * out_stride] = sum;
  }
}

void dot_half_neon(const float* q, int m, const uint16_t* halves, int64_t n, int d, float* out,
                   int64_t out_stride) {
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* v = halves + j * d;
    int a = 0;
    for (; a + 4 <= m; a += 4) dot_half_tile_neon<4>(q + static_cast<int64_t>(a) * d, d, v, out + a * out_stride + j, out_stride);
    const float* rest_q = q + static_cast<int64_t>(a) * d;  // the last 1-3 queries in one tile
    float* rest_out = out + a * out_stride + j;
    if (m - a == 3) dot_half_tile_neon<3>(rest_q, d, v, rest_out, out_stride);
    if (m - a == 2) dot_half_tile_neon<2>(rest_q, d, v, rest_out, out_stride);
    if (m - a == 1) dot_half_tile_neon<1>(rest_q, d, v, rest_out, out_stride);
  }
}

void axpy_half_neon(const float* w, int64_t w_stride, int m, const uint16_t* halves, int64_t n,
                    int d, float* acc) {
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* v = halves + j * d;
    int i = 0;
    for (; i + 4 <= d; i += 4) {
      const float32x4_t x = load_half4(v + i);
      for (int a = 0; a < m; ++a) {
        float* acc_a = acc + static_cast<int64_t>(a) * d + i;
        vst1q_f32(acc_a, vfmaq_n_f32(vld1q_f32(acc_a), x, w[a * w_stride + j]));
      }
    }
    for (; i < d; ++i) {
      const float x = half_to_float(v[i]);
      for (int a = 0; a < m; ++a) acc[static_cast<int64_t>(a) * d + i] += w[a * w_stride + j] * x;
    }
  }
}
#endif

}  // namespace

ToHalfFn select_to_half(SimdLevel level) {
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return to_half_neon;
#endif
  return TURBOKV_PICK(level, to_half_scalar, to_half_avx2, to_half_avx2);
}

FromHalfFn select_from_half(SimdLevel level) {
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return from_half_neon;
#endif
  return TURBOKV_PICK(level, from_half_scalar, from_half_avx2, from_half_avx2);
}

DotHalfFn select_dot_half(SimdLevel level) {
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return dot_half_neon;
#endif
  return TURBOKV_PICK(level, dot_half_scalar, dot_half_avx2, dot_half_avx512);
}

AxpyHalfFn select_axpy_half(SimdLevel level) {
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return axpy_half_neon;
#endif
  return TURBOKV_PICK(level, axpy_half_scalar, axpy_half_avx2, axpy_half_avx512);
}

}  // namespace kernels
}  // namespace turbokv
