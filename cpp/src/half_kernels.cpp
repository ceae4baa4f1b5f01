// float16 vectors: the full-precision side of the cache (bits = 0) and the residual window.
#include "kernels.hpp"
#include "turbokv/half.hpp"

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
  to_half_scalar(x + i, out + i, n - i);
}

TURBOKV_TARGET_AVX2 void from_half_avx2(const uint16_t* x, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  }
  from_half_scalar(x + i, out + i, n - i);
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

}  // namespace

ToHalfFn select_to_half(SimdLevel level) {
  return TURBOKV_PICK(level, to_half_scalar, to_half_avx2, to_half_avx2);
}

FromHalfFn select_from_half(SimdLevel level) {
  return TURBOKV_PICK(level, from_half_scalar, from_half_avx2, from_half_avx2);
}

DotHalfFn select_dot_half(SimdLevel level) {
  return TURBOKV_PICK(level, dot_half_scalar, dot_half_scalar, dot_half_avx512);
}

AxpyHalfFn select_axpy_half(SimdLevel level) {
  return TURBOKV_PICK(level, axpy_half_scalar, axpy_half_scalar, axpy_half_avx512);
}

}  // namespace kernels
}  // namespace turbokv
