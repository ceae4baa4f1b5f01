// Integer scores of 5-8-bit keys (#13 item 2: the int8 query path, widened). An int8 query would
// dominate the error of these codebooks (8-bit centroids are ~1/260 of their range apart), so the
// rotated query and the centroids are rounded to int16_top(d) (4095 at head_dim 128; 1/8190 of
// the largest magnitude at most, ~20x below the 8-bit codec's own error in rms) and the products
// summed exactly in int32: every level returns the same integers, hence bit-identical scores.
// What this buys is arithmetic: vpmaddwd / vpdpwssd take 16 products per 256 bits where an FMA
// takes 8. The lookups stay: a gather per 8 indices on AVX2 (the float32 route's cost), two byte
// planes of vpermi2b per 64 indices on AVX-512 with VBMI (half the float32 planes' four).
#include <cmath>
#include <vector>

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "avx2_helpers.hpp"
#include "int16_queries.hpp"
#include "key_index_rows.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

// Key j's indices: 8-bit codes in place, narrower ones unpacked into a buffer of d bytes.
inline KeyIndexRows key_indices(const uint8_t* codes, int64_t code_bytes, int bits, int d, SimdLevel level) {
  return KeyIndexRows(codes, code_bytes, bits, d, bits != 8, d, level);
}

void dot_packed_int16_scalar(const int16_t* q16, const float* q_scale, int m, const uint8_t* codes,
                             int64_t code_bytes, int64_t n, const int32_t* table, float table_scale,
                             int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  KeyIndexRows keys = key_indices(codes, code_bytes, bits, d, SimdLevel::kScalar);
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
    const uint8_t* idx = keys(j);
    for (int a = 0; a < m; ++a) {
      const int16_t* qa = q16 + static_cast<int64_t>(a) * d;
      int32_t sum = 0;  // |sum| <= d * int16_top(d)^2 < 2^31
      for (int i = 0; i < d; ++i) sum += int32_t{qa[i]} * table[idx[i]];
      out[a * out_stride + j] = static_cast<float>(sum) * (q_scale[a] * table_scale);
    }
  }
}

#if TURBOKV_X86
#define TURBOKV_AVX2_TWICE_FILE "int16_avx2_kernel.inc"
#include "avx2_twice.inc"
#undef TURBOKV_AVX2_TWICE_FILE

void dot_packed_int16_avx2(const int16_t* q16, const float* q_scale, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const int32_t* table, float table_scale,
                           int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  dot_packed_int16_avx2_variant(kHasAvxVnni, !kGathersAreSlow)(
      q16, q_scale, m, codes, code_bytes, n, table, table_scale, bits, d, out, out_stride, ahead);
}

void dot_packed_int16_avx512(const int16_t* q16, const float* q_scale, int m, const uint8_t* codes,
                             int64_t code_bytes, int64_t n, const int32_t* table, float table_scale,
                             int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  (int16_planes_fit(d) ? dot_planes_int16_vbmi : dot_packed_int16_avx2)(
      q16, q_scale, m, codes, code_bytes, n, table, table_scale, bits, d, out, out_stride, ahead);
}
#endif

#if defined(__aarch64__)
// NEON: each key's centroids looked up once into int16 words by scalar loads (NEON has no
// gather; the NEON float32 kernel reads 5-8-bit tables the same way), then per query smlal /
// smlal2 multiply 8 words into two int32 accumulators. Same integers as the scalar kernel.
void dot_packed_int16_neon(const int16_t* q16, const float* q_scale, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const int32_t* table, float table_scale,
                           int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  KeyIndexRows keys = key_indices(codes, code_bytes, bits, d, SimdLevel::kNeon);
  std::vector<int16_t> row(static_cast<size_t>(d));
  const int d8 = d / 8 * 8;
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
    const uint8_t* idx = keys(j);
    for (int i = 0; i < d; ++i) row[i] = static_cast<int16_t>(table[idx[i]]);
    for (int a = 0; a < m; ++a) {
      const int16_t* qa = q16 + static_cast<int64_t>(a) * d;
      int32x4_t low = vdupq_n_s32(0), high = vdupq_n_s32(0);
      for (int i = 0; i < d8; i += 8) {
        const int16x8_t r = vld1q_s16(row.data() + i), q = vld1q_s16(qa + i);
        low = vmlal_s16(low, vget_low_s16(r), vget_low_s16(q));
        high = vmlal_high_s16(high, r, q);
      }
      int32_t sum = vaddvq_s32(vaddq_s32(low, high));
      for (int i = d8; i < d; ++i) sum += int32_t{qa[i]} * row[i];
      out[a * out_stride + j] = static_cast<float>(sum) * (q_scale[a] * table_scale);
    }
  }
}
#endif

}  // namespace

#if TURBOKV_X86
DotPackedInt16Fn dot_packed_int16_avx2_variant(bool avx_vnni, bool gather) {
  if (avx_vnni) return gather ? avx_vnni::dot_packed_int16_with<true> : avx_vnni::dot_packed_int16_with<false>;
  return gather ? plain::dot_packed_int16_with<true> : plain::dot_packed_int16_with<false>;
}
#else
DotPackedInt16Fn dot_packed_int16_avx2_variant(bool, bool) { return nullptr; }
#endif

DotPackedInt16Fn select_dot_packed_int16(SimdLevel level) {
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return dot_packed_int16_neon;
#endif
  return TURBOKV_PICK(level, dot_packed_int16_scalar, dot_packed_int16_avx2, dot_packed_int16_avx512);
}

}  // namespace kernels
}  // namespace turbokv
