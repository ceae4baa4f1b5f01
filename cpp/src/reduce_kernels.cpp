// Sum of squares in a fixed order: lane j of 16 accumulates x[i]^2 for i = j (mod 16), then the
// lanes fold pairwise (j += j + 8, j + 4, j + 2, j + 1). The order is what makes norms bit-identical
// across SIMD levels; 16 lanes also keep the rounding error small for long vectors.
#include "encode_avx512.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

float fold16(float* lanes) {
  for (int width = 8; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] = lanes[j] + lanes[j + width];
  }
  return lanes[0];
}

float sum_squares_scalar(const float* x, int n) {
  float lanes[16] = {0};
  for (int i = 0; i < n; ++i) lanes[i % 16] += x[i] * x[i];
  return fold16(lanes);
}

#if TURBOKV_X86
TURBOKV_TARGET_AVX2 float sum_squares_avx2(const float* x, int n) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    lo = _mm256_add_ps(lo, _mm256_mul_ps(a, a));
    hi = _mm256_add_ps(hi, _mm256_mul_ps(b, b));
  }
  if (i == n) {  // fold16 in registers (the lanes' round trip through memory stalled on Zen 1)
    const __m256 v8 = _mm256_add_ps(lo, hi);
    const __m128 v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
    const __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
    return _mm_cvtss_f32(_mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 0x55)));
  }
  alignas(32) float lanes[16];
  _mm256_store_ps(lanes, lo);
  _mm256_store_ps(lanes + 8, hi);
  for (int j = 0; i < n; ++i, ++j) lanes[j] += x[i] * x[i];
  return fold16(lanes);
}

TURBOKV_TARGET_AVX512 float sum_squares_avx512(const float* x, int n) {
  __m512 acc = _mm512_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 a = _mm512_loadu_ps(x + i);
    acc = _mm512_add_ps(acc, _mm512_mul_ps(a, a));
  }
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 a = _mm512_maskz_loadu_ps(tail, x + i);
    acc = _mm512_mask_add_ps(acc, tail, acc, _mm512_mul_ps(a, a));
  }
  return fold16_avx512(acc);
}
#endif

}  // namespace

SumSquaresFn select_sum_squares(SimdLevel level) {
  return TURBOKV_PICK(level, sum_squares_scalar, sum_squares_avx2, sum_squares_avx512);
}

}  // namespace kernels
}  // namespace turbokv
