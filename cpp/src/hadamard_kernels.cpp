// Fast Walsh-Hadamard transform, O(n log n), in place and unnormalised.
// Every variant computes each butterfly as (a + b, a - b) with a the lower-index element, stage by
// stage, so all levels give bit-identical output (see kernels.hpp).
#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

void butterfly_stage_scalar(float* x, int n, int h) {
  for (int i = 0; i < n; i += 2 * h) {
    for (int j = i; j < i + h; ++j) {
      const float a = x[j], b = x[j + h];
      x[j] = a + b;
      x[j + h] = a - b;
    }
  }
}

void fwht_scalar(float* x, int n) {
  for (int h = 1; h < n; h *= 2) butterfly_stage_scalar(x, n, h);
}

#if TURBOKV_X86
// Within a register, lane j pairs with lane j ^ h. partner + v * sign gives a + b in the lower
// lane (sign +1) and a - b in the upper lane (sign -1, where partner = a, v = b); the product by
// +-1 is exact, so the fused multiply-add rounds exactly like the plain add or subtract.
TURBOKV_TARGET_AVX2 void fwht_avx2(float* x, int n) {
  if (n < 8) return fwht_scalar(x, n);
  const __m256 s1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
  const __m256 s2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
  const __m256 s4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
  for (int i = 0; i < n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    v = _mm256_fmadd_ps(v, s1, _mm256_permute_ps(v, 0xB1));
    v = _mm256_fmadd_ps(v, s2, _mm256_permute_ps(v, 0x4E));
    v = _mm256_fmadd_ps(v, s4, _mm256_permute2f128_ps(v, v, 0x01));
    _mm256_storeu_ps(x + i, v);
  }
  for (int h = 8; h < n; h *= 2) {
    for (int i = 0; i < n; i += 2 * h) {
      for (int j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
        _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(x + j + h, _mm256_sub_ps(a, b));
      }
    }
  }
}

TURBOKV_TARGET_AVX512 void fwht_avx512(float* x, int n) {
  if (n < 16) return fwht_avx2(x, n);
  const __m512 s1 = _mm512_setr_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
  const __m512 s2 = _mm512_setr_ps(1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1);
  const __m512 s4 = _mm512_setr_ps(1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1);
  const __m512 s8 = _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
  for (int i = 0; i < n; i += 16) {
    __m512 v = _mm512_loadu_ps(x + i);
    v = _mm512_fmadd_ps(v, s1, _mm512_permute_ps(v, 0xB1));
    v = _mm512_fmadd_ps(v, s2, _mm512_permute_ps(v, 0x4E));
    v = _mm512_fmadd_ps(v, s4, _mm512_shuffle_f32x4(v, v, 0xB1));
    v = _mm512_fmadd_ps(v, s8, _mm512_shuffle_f32x4(v, v, 0x4E));
    _mm512_storeu_ps(x + i, v);
  }
  for (int h = 16; h < n; h *= 2) {
    for (int i = 0; i < n; i += 2 * h) {
      for (int j = i; j < i + h; j += 16) {
        const __m512 a = _mm512_loadu_ps(x + j), b = _mm512_loadu_ps(x + j + h);
        _mm512_storeu_ps(x + j, _mm512_add_ps(a, b));
        _mm512_storeu_ps(x + j + h, _mm512_sub_ps(a, b));
      }
    }
  }
}
#endif

}  // namespace

FwhtFn select_fwht(SimdLevel level) {
#if TURBOKV_X86
  if (level == SimdLevel::kAvx512) return fwht_avx512;
  if (level == SimdLevel::kAvx2) return fwht_avx2;
#endif
  (void)level;
  return fwht_scalar;
}

}  // namespace kernels
}  // namespace turbokv
