// Integer scores of 5-8-bit keys (#13 item 2: the int8 query path, widened). An int8 query would
// dominate the error of these codebooks (8-bit centroids are ~1/260 of their range apart), so the
// rotated query and the centroids are rounded to int16_top(d) (4095 at head_dim 128; 1/8190 of
// the largest magnitude at most, ~20x below the 8-bit codec's own error in rms) and the products
// summed exactly in int32: every level returns the same integers, hence bit-identical scores.
// What this buys is arithmetic: vpmaddwd / vpdpwssd take 16 products per 256 bits where an FMA
// takes 8. The lookups stay: on AVX2 vpshufb on byte planes of the codebook's magnitudes for 5-
// and 6-bit keys, a gather per 8 indices for wider ones (the float32 route's cost); on AVX-512
// with VBMI two byte planes of vpermi2b per 64 indices (half the float32 planes' four).
#include <cmath>
#include <type_traits>
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

// The shuffle route's tables (int16_avx2_kernel.inc, shuffle_words): the low and high bytes of the
// magnitudes table[half + m], 16 per sub-table h, each plane XORed with the one before it (the
// staircase lookup XORs them back), repeated in both 128-bit lanes for vpshufb. count 0: the
// table does not fit (int16_shuffle_fits).
struct ShuffleTables {
  int count = 0;
  alignas(32) uint8_t lo[8][32], hi[8][32];
};

ShuffleTables shuffle_tables(const int32_t* table, int bits) {
  ShuffleTables t;
  if (!int16_shuffle_fits(table, bits)) return t;
  const int half = 1 << (bits - 1);
  t.count = half / 16;
  for (int h = 0; h < t.count; ++h) {
    for (int l = 0; l < 16; ++l) {
      const int32_t v = table[half + 16 * h + l], before = h > 0 ? table[half + 16 * (h - 1) + l] : 0;
      const auto lo = static_cast<uint8_t>((v ^ before) & 0xFF), hi = static_cast<uint8_t>(((v ^ before) >> 8) & 0xFF);
      t.lo[h][l] = t.lo[h][l + 16] = lo;
      t.hi[h][l] = t.hi[h][l + 16] = hi;
    }
  }
  return t;
}

#if TURBOKV_X86
#define TURBOKV_AVX2_VARIANTS_FILE "int16_avx2_kernel.inc"
#include "avx2_variants.inc"
#undef TURBOKV_AVX2_VARIANTS_FILE

void dot_packed_int16_avx2(const int16_t* q16, const float* q_scale, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const int32_t* table, float table_scale,
                           int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  dot_packed_int16_avx2_variant(kAvx2VnniForm, int16_avx2_lookup(bits, m))(
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

bool int16_shuffle_fits(const int32_t* table, int bits) {
  if (bits < 5 || bits > 8) return false;
  const int half = 1 << (bits - 1);
  for (int k = 0; k < half; ++k) {
    if (table[half + k] < 0 || table[half + k] > 32767 || table[half - 1 - k] != -table[half + k]) return false;
  }
  return true;
}

// vpshufb on 1 or 2 sub-tables (5- and 6-bit keys) beat the gathers in one process (bench/ab, K5V4
// 0.78-0.81 one thread, 0.93 on two; K6V4 0.86-0.99, 0.92-1.01); from 4 (7 bits: 1.00-1.14,
// 8 bits: 1.24-1.31) the 2 vpshufb per sub-table on port 5 cost more than 2 gathers per 16
// indices (kernel_choices_avx2.md, round 23). Where gathers are slow (AMD Zen 1-4) 8-bit keys keep
// the scalar loads that were measured there; 7-bit ones take the shuffle route since the 4-query
// tiles score keys two at a time (round 25, Zen 3, one thread: K7V4 0.71-0.88x the time at 1, 3,
// 4 and 7 queries per KV head; 8-bit keys 0.86-0.95x at 1, 4, 6 and 7, but 1.11-1.17x at 2 and 3).
#if TURBOKV_X86
Int16Lookup int16_avx2_lookup(int bits, int m) {
  if (bits <= 6 || (bits == 7 && kGathersAreSlow)) return Int16Lookup::kShuffle;
  // 8-bit keys (8 sub-tables) where gathers are slow, by queries per call (Zen 3, one thread, K8V4
  // at 32K against the loads; kernel_choices_avx2.md, round 26): 0.90-0.96x the time at 1 and 4-8
  // queries, 1.11-1.17x at 2 and 3.
  if (kGathersAreSlow && m != 2 && m != 3) return Int16Lookup::kShuffle;
  return kGathersAreSlow ? Int16Lookup::kLoads : Int16Lookup::kGather;
}

namespace {
template <Int16Lookup kLookup>
DotPackedInt16Fn int16_variant(VnniForm vnni) {
  switch (vnni) {
    case VnniForm::kNone: return plain::dot_packed_int16_with<kLookup>;
#if TURBOKV_VNNI_FORMS
    case VnniForm::kVex: return avx_vnni::dot_packed_int16_with<kLookup>;
    case VnniForm::kEvex: return evex_vnni::dot_packed_int16_with<kLookup>;
#else
    case VnniForm::kVex:
    case VnniForm::kEvex: return nullptr;
#endif
  }
  return nullptr;
}
}  // namespace

DotPackedInt16Fn dot_packed_int16_avx2_variant(VnniForm vnni, Int16Lookup lookup) {
  switch (lookup) {
    case Int16Lookup::kGather: return int16_variant<Int16Lookup::kGather>(vnni);
    case Int16Lookup::kLoads: return int16_variant<Int16Lookup::kLoads>(vnni);
    case Int16Lookup::kShuffle: return int16_variant<Int16Lookup::kShuffle>(vnni);
  }
  return nullptr;
}
#else
Int16Lookup int16_avx2_lookup(int, int) { return Int16Lookup::kGather; }
DotPackedInt16Fn dot_packed_int16_avx2_variant(VnniForm, Int16Lookup) { return nullptr; }
#endif

DotPackedInt16Fn select_dot_packed_int16(SimdLevel level) {
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return dot_packed_int16_neon;
#endif
  return TURBOKV_PICK(level, dot_packed_int16_scalar, dot_packed_int16_avx2, dot_packed_int16_avx512);
}

}  // namespace kernels
}  // namespace turbokv
