// Dense matrix-vector product in column order, used by the dense rotation (head_dims that are not
// powers of two) and by the QJL sketch. y[r] accumulates x[c] * column_c[r] for c = 0, 1, ... with a
// separate multiply and add, so every SIMD level rounds identically.
#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

void matvec_columns_scalar(const float* columns, int rows, int cols, const float* x, float* y) {
  for (int r = 0; r < rows; ++r) y[r] = 0.0f;
  for (int c = 0; c < cols; ++c) {
    const float xc = x[c];
    const float* col = columns + static_cast<int64_t>(c) * rows;
    for (int r = 0; r < rows; ++r) y[r] += xc * col[r];
  }
}

#if TURBOKV_X86
TURBOKV_TARGET_AVX2 void matvec_columns_avx2(const float* columns, int rows, int cols,
                                             const float* x, float* y) {
  constexpr int kBlock = 64;  // 8 accumulators of 8 rows
  int r0 = 0;
  for (; r0 + kBlock <= rows; r0 += kBlock) {
    __m256 acc[8];
    for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
    for (int c = 0; c < cols; ++c) {
      const __m256 xc = _mm256_set1_ps(x[c]);
      const float* col = columns + static_cast<int64_t>(c) * rows + r0;
      for (int k = 0; k < 8; ++k) {
        acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(xc, _mm256_loadu_ps(col + 8 * k)));
      }
    }
    for (int k = 0; k < 8; ++k) _mm256_storeu_ps(y + r0 + 8 * k, acc[k]);
  }
  for (; r0 < rows; r0 += 8) {
    const int width = rows - r0 < 8 ? rows - r0 : 8;
    if (width < 8) {
      for (int r = r0; r < rows; ++r) y[r] = 0.0f;
      for (int c = 0; c < cols; ++c) {
        const float* col = columns + static_cast<int64_t>(c) * rows;
        for (int r = r0; r < rows; ++r) y[r] += x[c] * col[r];
      }
      break;
    }
    __m256 acc = _mm256_setzero_ps();
    for (int c = 0; c < cols; ++c) {
      const float* col = columns + static_cast<int64_t>(c) * rows + r0;
      acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(x[c]), _mm256_loadu_ps(col)));
    }
    _mm256_storeu_ps(y + r0, acc);
  }
}

TURBOKV_TARGET_AVX512 void matvec_columns_avx512(const float* columns, int rows, int cols,
                                                 const float* x, float* y) {
  constexpr int kBlock = 128;  // 8 accumulators of 16 rows
  int r0 = 0;
  for (; r0 + kBlock <= rows; r0 += kBlock) {
    __m512 acc[8];
    for (int k = 0; k < 8; ++k) acc[k] = _mm512_setzero_ps();
    for (int c = 0; c < cols; ++c) {
      const __m512 xc = _mm512_set1_ps(x[c]);
      const float* col = columns + static_cast<int64_t>(c) * rows + r0;
      for (int k = 0; k < 8; ++k) {
        acc[k] = _mm512_add_ps(acc[k], _mm512_mul_ps(xc, _mm512_loadu_ps(col + 16 * k)));
      }
    }
    for (int k = 0; k < 8; ++k) _mm512_storeu_ps(y + r0 + 16 * k, acc[k]);
  }
  for (; r0 < rows; r0 += 16) {
    const int width = rows - r0 < 16 ? rows - r0 : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1u);
    __m512 acc = _mm512_setzero_ps();
    for (int c = 0; c < cols; ++c) {
      const float* col = columns + static_cast<int64_t>(c) * rows + r0;
      acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(x[c]), _mm512_maskz_loadu_ps(mask, col)));
    }
    _mm512_mask_storeu_ps(y + r0, mask, acc);
  }
}
#endif

}  // namespace

MatvecFn select_matvec_columns(SimdLevel level) {
  return TURBOKV_PICK(level, matvec_columns_scalar, matvec_columns_avx2, matvec_columns_avx512);
}

}  // namespace kernels
}  // namespace turbokv
