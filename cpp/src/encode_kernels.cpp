// Whole rows encoded in one pass where the stages allow it: the sum of squares, the Hadamard
// rotation and the quantiser of 2-, 4- or 8-bit codes held in registers from the first load to the packed
// bytes, instead of three kernel calls per row with the rotated vector stored and read back in
// between (Codec::encode_one). The same float operations in the same order as those stages
// (encode_avx512.hpp), so the same codes and norms.
#include <cfloat>
#include <cmath>

#include "avx2_helpers.hpp"
#include "encode_avx512.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

#if TURBOKV_X86
// The sum of squares of 16 kRegs floats in sum_squares' order (lane k mod 16, then fold16).
template <int kRegs>
TURBOKV_TARGET_AVX512 inline float sum_squares_registers(const float* in) {
  __m512 acc = _mm512_setzero_ps();
  for (int k = 0; k < kRegs; ++k) {
    const __m512 a = _mm512_loadu_ps(in + 16 * k);
    acc = _mm512_add_ps(acc, _mm512_mul_ps(a, a));
  }
  return fold16_avx512(acc);
}

#define TURBOKV_ROW_PIPELINE_TARGET TURBOKV_TARGET_AVX512
#include "row_pipeline.inc"
#undef TURBOKV_ROW_PIPELINE_TARGET

// One row of 16 kRegs coordinates in registers: its sum of squares, then its transform and codes,
// times scale: 4 bits on the narrow grid (two registers' indices per 16 bytes), 8 bits on the grid
// (the indices are the bytes).
template <int kRegs, class Codes>
struct RowInRegisters {
  const float* pre;
  Codes codes_of;
  TURBOKV_TARGET_AVX512 float sum_squares(const float* in) const { return sum_squares_registers<kRegs>(in); }
  TURBOKV_TARGET_AVX512 void encode(const float* in, float scale, uint8_t* out) const {
    __m512 r[kRegs];
    for (int k = 0; k < kRegs; ++k) r[k] = _mm512_mul_ps(_mm512_loadu_ps(in + 16 * k), _mm512_loadu_ps(pre + 16 * k));
    fwht_in_registers_avx512<kRegs>(r);
    codes_of.template store<kRegs>(r, _mm512_set1_ps(scale), out);
  }
};

struct NibbleCodes {
  static constexpr int kBits = 4;
  NarrowGridAvx512 grid;
  template <int kRegs>
  TURBOKV_TARGET_AVX512 void store(const __m512* r, __m512 scale, uint8_t* out) const {
    for (int k = 0; k < kRegs; k += 2) {
      const __m512i a = grid_index(grid, _mm512_mul_ps(r[k], scale));
      const __m512i b = grid_index(grid, _mm512_mul_ps(r[k + 1], scale));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 8 * k), nibbles_avx512(a, b));
    }
  }
};

// 2 bits: the index is the count of the 3 boundaries <= v (three compares), and each 16 bytes of
// codes come from 4 registers by two rounds of even/odd permutes (pairs, then pairs of pairs).
struct QuadCodes {
  static constexpr int kBits = 2;
  __m512 bounds[3];
  template <int kRegs>
  TURBOKV_TARGET_AVX512 void store(const __m512* r, __m512 scale, uint8_t* out) const {
    for (int k = 0; k < kRegs; k += 4) {
      __m512i index[4];
      for (int q = 0; q < 4; ++q) {
        const __m512 v = _mm512_mul_ps(r[k + q], scale);
        __m512i count = _mm512_setzero_si512();
        for (const __m512& b : bounds) {
          count = _mm512_mask_add_epi32(count, _mm512_cmp_ps_mask(v, b, _CMP_GE_OQ), count, _mm512_set1_epi32(1));
        }
        index[q] = count;
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * k),
                       nibbles_avx512(pair_lanes<2>(index[0], index[1]), pair_lanes<2>(index[2], index[3])));
    }
  }
};

struct ByteCodes {
  static constexpr int kBits = 8;
  GridAvx512 grid;
  template <int kRegs>
  TURBOKV_TARGET_AVX512 void store(const __m512* r, __m512 scale, uint8_t* out) const {
    for (int k = 0; k < kRegs; ++k) {
      const __m512i index = grid_index(grid, _mm512_mul_ps(r[k], scale));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * k), _mm512_cvtepi32_epi8(index));
    }
  }
};

template <class Codes>
TURBOKV_TARGET_AVX512 int64_t encode_rows_of(const float* x, int64_t n, int64_t row_stride, int d,
                                             const float* pre, float sqrt_dim, float min_sum_squares,
                                             const Codes& codes_of, uint8_t* codes, float* norms) {
  const int64_t bytes = int64_t{d} * Codes::kBits / 8;
  switch (d) {
    case 64:
      return encode_rows_pipelined(RowInRegisters<4, Codes>{pre, codes_of}, x, n, row_stride, d, bytes, sqrt_dim,
                                   min_sum_squares, codes, norms);
    case 128:
      return encode_rows_pipelined(RowInRegisters<8, Codes>{pre, codes_of}, x, n, row_stride, d, bytes, sqrt_dim,
                                   min_sum_squares, codes, norms);
    case 256:
      return encode_rows_pipelined(RowInRegisters<16, Codes>{pre, codes_of}, x, n, row_stride, d, bytes, sqrt_dim,
                                   min_sum_squares, codes, norms);
    default: return 0;
  }
}

// by_gathers: 8-bit codes by ByteCodes' gathers, else by the AVX2 level's row encoder, whose grid
// lookups are scalar loads (where gathers are slow: AMD Zen 1-4, the AVX-512 level on Zen 4).
TURBOKV_TARGET_AVX512 int64_t encode_rows_avx512_routed(bool by_gathers, const float* x, int64_t n,
                                                        int64_t row_stride, int d, int bits, const float* pre,
                                                        float sqrt_dim, float min_sum_squares,
                                                        const float* boundaries, const BoundaryGrid& grid,
                                                        uint8_t* codes, float* norms) {
  if (bits == 4 && grid.narrow.cells > 0) {
    const NibbleCodes nibbles{load_narrow_grid(grid.narrow)};
    return encode_rows_of(x, n, row_stride, d, pre, sqrt_dim, min_sum_squares, nibbles, codes, norms);
  }
  if (bits == 2) {
    const QuadCodes quads{{_mm512_set1_ps(boundaries[0]), _mm512_set1_ps(boundaries[1]), _mm512_set1_ps(boundaries[2])}};
    return encode_rows_of(x, n, row_stride, d, pre, sqrt_dim, min_sum_squares, quads, codes, norms);
  }
  if (bits == 8 && grid.cells > 0) {
    if (!by_gathers) {
      return select_encode_rows_avx2()(x, n, row_stride, d, bits, pre, sqrt_dim, min_sum_squares, boundaries,
                                       grid, codes, norms);
    }
    const ByteCodes bytes{load_grid(grid)};
    return encode_rows_of(x, n, row_stride, d, pre, sqrt_dim, min_sum_squares, bytes, codes, norms);
  }
  return 0;
}

TURBOKV_TARGET_AVX512 int64_t encode_rows_avx512(const float* x, int64_t n, int64_t row_stride, int d,
                                                 int bits, const float* pre, float sqrt_dim,
                                                 float min_sum_squares, const float* boundaries,
                                                 const BoundaryGrid& grid, uint8_t* codes, float* norms) {
  return encode_rows_avx512_routed(!kGathersAreSlow, x, n, row_stride, d, bits, pre, sqrt_dim, min_sum_squares,
                                   boundaries, grid, codes, norms);
}

TURBOKV_TARGET_AVX512 int64_t encode_rows_avx512_gathers(const float* x, int64_t n, int64_t row_stride, int d,
                                                         int bits, const float* pre, float sqrt_dim,
                                                         float min_sum_squares, const float* boundaries,
                                                         const BoundaryGrid& grid, uint8_t* codes, float* norms) {
  return encode_rows_avx512_routed(true, x, n, row_stride, d, bits, pre, sqrt_dim, min_sum_squares, boundaries,
                                   grid, codes, norms);
}
#endif

}  // namespace

bool encode_rows_fit(SimdLevel level, int bits, int d) {
  const bool width = (bits == 4 && codebook_grid(bits).narrow.cells > 0) || (bits == 8 && codebook_grid(bits).cells > 0);
  const bool shape = d == 64 || d == 128 || d == 256;
  if (level == SimdLevel::kAvx512) return shape && (width || bits == 2);
  return level == SimdLevel::kAvx2 && shape && width;
}

EncodeRowsFn select_encode_rows(SimdLevel level) {
#if TURBOKV_X86
  if (level == SimdLevel::kAvx512) return encode_rows_avx512;
  if (level == SimdLevel::kAvx2) return select_encode_rows_avx2();
#endif
  (void)level;
  return nullptr;
}

EncodeRowsFn select_encode_rows_avx512_gathers() {
#if TURBOKV_X86
  return encode_rows_avx512_gathers;
#else
  return nullptr;
#endif
}

}  // namespace kernels
}  // namespace turbokv
