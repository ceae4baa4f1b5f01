// Table lookups on unpacked indices: the inner loops of fused scores and of decode.
// Codebooks of up to 16 levels fit one AVX-512 register, so a lookup is one vpermps.
#include "avx2_helpers.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

float dot_lookup_scalar(const float* q, const uint8_t* idx, const float* table, int /*bits*/,
                        int n) {
  float acc = 0.0f;
  for (int i = 0; i < n; ++i) acc += q[i] * table[idx[i]];
  return acc;
}

void axpy_lookup_scalar(float w, const uint8_t* idx, const float* table, int /*bits*/, float* acc,
                        int n) {
  for (int i = 0; i < n; ++i) acc[i] += w * table[idx[i]];
}

float sign_dot_scalar(const float* v, const uint8_t* signs, int n) {
  float acc = 0.0f;
  for (int i = 0; i < n; ++i) acc += ((signs[i >> 3] >> (i & 7)) & 1u) ? v[i] : -v[i];
  return acc;
}

#if TURBOKV_X86
TURBOKV_TARGET_AVX2 float dot_lookup_avx2(const float* q, const uint8_t* idx, const float* table,
                                          int bits, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), gather8(table, idx + i, bits), acc);
  }
  return horizontal_sum(acc) + dot_lookup_scalar(q + i, idx + i, table, bits, n - i);
}

TURBOKV_TARGET_AVX2 void axpy_lookup_avx2(float w, const uint8_t* idx, const float* table, int bits,
                                          float* acc, int n) {
  const __m256 vw = _mm256_set1_ps(w);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(acc + i,
                     _mm256_fmadd_ps(vw, gather8(table, idx + i, bits), _mm256_loadu_ps(acc + i)));
  }
  axpy_lookup_scalar(w, idx + i, table, bits, acc + i, n - i);
}

TURBOKV_TARGET_AVX2 float sign_dot_avx2(const float* v, const uint8_t* signs, int n) {
  const __m256i bit_of_lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i byte = _mm256_set1_epi32(signs[i >> 3]);
    const __m256i clear = _mm256_cmpeq_epi32(_mm256_and_si256(byte, bit_of_lane), _mm256_setzero_si256());
    // Flip the sign of lanes whose bit is 0.
    const __m256 flip = _mm256_and_ps(_mm256_castsi256_ps(clear), sign_bit);
    acc = _mm256_add_ps(acc, _mm256_xor_ps(_mm256_loadu_ps(v + i), flip));
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += ((signs[i >> 3] >> (i & 7)) & 1u) ? v[i] : -v[i];
  return horizontal_sum(acc) + tail;
}

TURBOKV_TARGET_AVX512 __m512 gather16(const float* table, const uint8_t* idx, int bits,
                                      __mmask16 mask) {
  const __m512i index = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, idx));
  if (bits <= 4) return _mm512_permutexvar_ps(index, _mm512_loadu_ps(table));
  if (bits == 5) {
    return _mm512_permutex2var_ps(_mm512_loadu_ps(table), index, _mm512_loadu_ps(table + 16));
  }
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, index, table, 4);
}

TURBOKV_TARGET_AVX512 float dot_lookup_avx512(const float* q, const uint8_t* idx,
                                              const float* table, int bits, int n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), gather16(table, idx + i, bits, 0xFFFF), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16), gather16(table, idx + i + 16, bits, 0xFFFF),
                           acc1);
  }
  for (; i < n; i += 16) {
    const int width = n - i < 16 ? n - i : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1u);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, q + i), gather16(table, idx + i, bits, mask),
                           acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

TURBOKV_TARGET_AVX512 void axpy_lookup_avx512(float w, const uint8_t* idx, const float* table,
                                              int bits, float* acc, int n) {
  const __m512 vw = _mm512_set1_ps(w);
  for (int i = 0; i < n; i += 16) {
    const int width = n - i < 16 ? n - i : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1u);
    const __m512 sum = _mm512_fmadd_ps(vw, gather16(table, idx + i, bits, mask),
                                       _mm512_maskz_loadu_ps(mask, acc + i));
    _mm512_mask_storeu_ps(acc + i, mask, sum);
  }
}

TURBOKV_TARGET_AVX512 float sign_dot_avx512(const float* v, const uint8_t* signs, int n) {
  __m512 acc = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) {
    const int width = n - i < 16 ? n - i : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1u);
    // Bits i..i+15 of the sign stream; i is a multiple of 16 so they start at a byte boundary.
    __mmask16 positive = signs[i >> 3];
    if (width > 8) positive = static_cast<__mmask16>(positive | (signs[(i >> 3) + 1] << 8));
    const __m512 x = _mm512_maskz_loadu_ps(mask, v + i);
    const __m512 signed_x = _mm512_mask_blend_ps(positive, _mm512_sub_ps(_mm512_setzero_ps(), x), x);
    acc = _mm512_add_ps(acc, signed_x);
  }
  return _mm512_reduce_add_ps(acc);
}
#endif

}  // namespace

DotLookupFn select_dot_lookup(SimdLevel level) {
  return TURBOKV_PICK(level, dot_lookup_scalar, dot_lookup_avx2, dot_lookup_avx512);
}

AxpyLookupFn select_axpy_lookup(SimdLevel level) {
  return TURBOKV_PICK(level, axpy_lookup_scalar, axpy_lookup_avx2, axpy_lookup_avx512);
}

SignDotFn select_sign_dot(SimdLevel level) {
  return TURBOKV_PICK(level, sign_dot_scalar, sign_dot_avx2, sign_dot_avx512);
}

}  // namespace kernels
}  // namespace turbokv
