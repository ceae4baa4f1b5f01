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
// Rows [r0, r0 + 8 * kRegs): kRegs independent accumulators, so one column's adds overlap instead
// of waiting on each other (a single accumulator left d = 96 at 685 ns, 3.5x d = 128's two blocks
// of eight).
template <int kRegs>
TURBOKV_TARGET_AVX2 void matvec_block_avx2(const float* columns, int rows, int cols, const float* x,
                                           float* y, int r0) {
  __m256 acc[kRegs];
  for (int k = 0; k < kRegs; ++k) acc[k] = _mm256_setzero_ps();
  for (int c = 0; c < cols; ++c) {
    const __m256 xc = _mm256_set1_ps(x[c]);
    const float* col = columns + static_cast<int64_t>(c) * rows + r0;
    for (int k = 0; k < kRegs; ++k) {
      acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(xc, _mm256_loadu_ps(col + 8 * k)));
    }
  }
  for (int k = 0; k < kRegs; ++k) _mm256_storeu_ps(y + r0 + 8 * k, acc[k]);
}

TURBOKV_TARGET_AVX2 void matvec_columns_avx2(const float* columns, int rows, int cols,
                                             const float* x, float* y) {
  int r0 = 0;
  for (; r0 + 64 <= rows; r0 += 64) matvec_block_avx2<8>(columns, rows, cols, x, y, r0);
  if (r0 + 32 <= rows) { matvec_block_avx2<4>(columns, rows, cols, x, y, r0); r0 += 32; }
  if (r0 + 16 <= rows) { matvec_block_avx2<2>(columns, rows, cols, x, y, r0); r0 += 16; }
  if (r0 + 8 <= rows) { matvec_block_avx2<1>(columns, rows, cols, x, y, r0); r0 += 8; }
  if (r0 == rows) return;
  for (int r = r0; r < rows; ++r) y[r] = 0.0f;
  for (int c = 0; c < cols; ++c) {
    const float* col = columns + static_cast<int64_t>(c) * rows;
    for (int r = r0; r < rows; ++r) y[r] += x[c] * col[r];
  }
}

// As matvec_block_avx2, 16 rows per register; a mask covers a last partial register.
template <int kRegs>
TURBOKV_TARGET_AVX512 void matvec_block_avx512(const float* columns, int rows, int cols,
                                               const float* x, float* y, int r0, __mmask16 last) {
  __m512 acc[kRegs];
  for (int k = 0; k < kRegs; ++k) acc[k] = _mm512_setzero_ps();
  for (int c = 0; c < cols; ++c) {
    const __m512 xc = _mm512_set1_ps(x[c]);
    const float* col = columns + static_cast<int64_t>(c) * rows + r0;
    for (int k = 0; k < kRegs; ++k) {
      const __mmask16 mask = k == kRegs - 1 ? last : static_cast<__mmask16>(0xFFFF);
      acc[k] = _mm512_add_ps(acc[k], _mm512_mul_ps(xc, _mm512_maskz_loadu_ps(mask, col + 16 * k)));
    }
  }
  for (int k = 0; k < kRegs; ++k) {
    _mm512_mask_storeu_ps(y + r0 + 16 * k, k == kRegs - 1 ? last : static_cast<__mmask16>(0xFFFF), acc[k]);
  }
}

TURBOKV_TARGET_AVX512 void matvec_columns_avx512(const float* columns, int rows, int cols,
                                                 const float* x, float* y) {
  constexpr __mmask16 kFull = 0xFFFF;
  int r0 = 0;
  for (; r0 + 128 <= rows; r0 += 128) matvec_block_avx512<8>(columns, rows, cols, x, y, r0, kFull);
  if (r0 + 64 <= rows) { matvec_block_avx512<4>(columns, rows, cols, x, y, r0, kFull); r0 += 64; }
  if (r0 + 32 <= rows) { matvec_block_avx512<2>(columns, rows, cols, x, y, r0, kFull); r0 += 32; }
  for (; r0 < rows; r0 += 16) {
    const int width = rows - r0 < 16 ? rows - r0 : 16;
    matvec_block_avx512<1>(columns, rows, cols, x, y, r0, static_cast<__mmask16>((1u << width) - 1u));
  }
}
#endif

}  // namespace

MatvecFn select_matvec_columns(SimdLevel level) {
  return TURBOKV_PICK(level, matvec_columns_scalar, matvec_columns_avx2, matvec_columns_avx512);
}

}  // namespace kernels
}  // namespace turbokv
