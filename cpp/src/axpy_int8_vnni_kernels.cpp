// Int8 values on AVX-512 with VNNI and VBMI (Ice Lake, Sapphire Rapids, Zen 4 and later). The
// contract and the scalar reference are in axpy_int8_kernels.cpp; this kernel computes the same
// integers and performs the same float steps, so it returns the same floats.
//
// vpdpbusd adds 4 neighbouring byte products into each int32 lane, so a lane must hold 4 tokens'
// bytes of one coordinate: the rows are transposed to steps of 4 tokens (byte 4k + t = row t's byte
// k): 4-bit rows in registers as they are summed (accumulate_tile_from_rows), the others once per
// call into memory (transpose_rows; 3-bit rows are rewritten as the 4-bit rows of their indices on
// the way, ThreeBitNibbles). The fields of each byte (the 2, 4 or 8 indices it packs) are masked
// out in place and looked up by
// vpshufb in the int8 centroids, and each (field, query) pair costs one vpdpbusd against the
// query's 4 weight bytes broadcast: 64 products per instruction where a float FMA does 16, with
// the lookups shared by the queries.
#include <algorithm>
#include <cfloat>
#include <stdexcept>
#include <vector>

#include "aligned_bytes.hpp"
#include "avx512_helpers.hpp"
#include "dpbusd_in_place.hpp"
#include "int8_layout.hpp"
#include "kernels.hpp"
#include "three_bit_nibbles_vbmi.hpp"

namespace turbokv {
namespace kernels {

#if TURBOKV_X86
bool int8_values_vnni_fit(int bits, int64_t code_bytes, int d) {
  return kHasAvx512Vnni && kHasAvx512Vbmi &&
         (int8_packed_lanes(bits, code_bytes, d) || (bits == 3 && int8_three_bit_in_registers(code_bytes, d)));
}

// The one route decision: int8_values_vnni_in_registers and axpy_int8_fields both ask it.
constexpr bool rows_in_registers(int bits) { return bits == 4; }

bool int8_values_vnni_in_registers(int bits, int64_t code_bytes, int d) {
  return int8_values_vnni_fit(bits, code_bytes, d) && rows_in_registers(bits);
}

namespace {

#define TURBOKV_TARGET_AVX512_VNNI_VBMI                                                       \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi,avx2,fma," \
                        "bmi,bmi2,f16c")))

constexpr int kTokensPerStep = 4;  // the 4 bytes that vpdpbusd sums into one lane
constexpr int kStepsPerGroup = kInt8ValueGroup / kTokensPerStep;

// What a call shares across its query tiles. The rows come as stored (codes: 4-bit rows,
// accumulate_tile_from_rows) or transposed (rows, steps: the others, accumulate_tile).
struct ValueCall {
  const uint8_t* rows;   // steps of 4 tokens: per chunk, 64 transposed bytes (transpose_rows)
  int64_t steps;         // groups * kStepsPerGroup
  const uint8_t* codes;  // n rows of code_bytes, as stored
  int64_t code_bytes;
  int64_t n;
  int chunks;            // 16-byte chunks per row
  int64_t groups;        // weight groups: ceil(n / kInt8ValueGroup)
  const uint8_t* w8;     // per query: groups * kInt8ValueGroup weight bytes, zero past n
  const float* scales;   // per query: one scale per group
  float* acc;            // per query: d floats in lane order (chunk, field, lane)
  int d;
};

// Bytes [16 g0, 16 g0 + 64) of a row as transpose_rows reads them: the code bytes (zero past the
// row's end: a masked load reads no byte outside the codes), or for 3-bit rows the nibble bytes of
// indices 32 g0 .. 32 g0 + 127.
template <bool kThreeBit>
TURBOKV_TARGET_AVX512_VNNI_VBMI inline __m512i row_block(const ThreeBitNibbles& nibbles, const uint8_t* row,
                                                         int64_t code_bytes, int g0) {
  if constexpr (kThreeBit) return nibbles(row, code_bytes, g0 / 4);
  const int64_t left = code_bytes - 16 * int64_t{g0};
  const __mmask64 valid = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
  return _mm512_maskz_loadu_epi8(valid, row + 16 * g0);
}

// The codes as steps of 4 tokens, chunk-major: out[(g * steps + s) * 64 + 4k + t] is token 4s + t's
// byte 16 g + k, steps = groups * kStepsPerGroup. Per 4 chunks, each row's 64 bytes are loaded
// once; per chunk two vpermt2b take bytes 16 g + k of rows (0, 1) and (2, 3) and a blend keeps
// t = 0, 1 from the first (3 inserts and a vpermb per chunk cost 1.3x the time). Tokens past n
// repeat the last one: their weight bytes are zero. Done once per call, so query tiles share it.
// kThreeBit: the rows hold 3-bit codes, transposed as their 4-bit rows (chunks = head_dim / 32).
template <bool kThreeBit>
TURBOKV_TARGET_AVX512_VNNI_VBMI void transpose_rows(const uint8_t* codes, int64_t code_bytes,
                                                    int64_t n, int chunks, uint8_t* out) {
  const ThreeBitNibbles nibbles;
  alignas(64) uint8_t order[4][64];
  for (int c = 0; c < 4; ++c) {
    for (int k = 0; k < 16; ++k) {
      for (int t = 0; t < kTokensPerStep; ++t) order[c][4 * k + t] = static_cast<uint8_t>((t & 1) * 64 + 16 * c + k);
    }
  }
  const __mmask64 upper_pair = 0xCCCCCCCCCCCCCCCCull;  // bytes 4k + 2 and 4k + 3
  const int64_t steps = (n + kInt8ValueGroup - 1) / kInt8ValueGroup * kStepsPerGroup;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t j = s * kTokensPerStep;
    const uint8_t* r[4];
    for (int t = 0; t < 4; ++t) r[t] = codes + std::min(j + t, n - 1) * code_bytes;
    for (int g0 = 0; g0 < chunks; g0 += 4) {
      const __m512i x0 = row_block<kThreeBit>(nibbles, r[0], code_bytes, g0);
      const __m512i x1 = row_block<kThreeBit>(nibbles, r[1], code_bytes, g0);
      const __m512i x2 = row_block<kThreeBit>(nibbles, r[2], code_bytes, g0);
      const __m512i x3 = row_block<kThreeBit>(nibbles, r[3], code_bytes, g0);
      for (int c = 0; c < 4 && g0 + c < chunks; ++c) {
        const __m512i idx = _mm512_load_si512(order[c]);
        const __m512i low = _mm512_permutex2var_epi8(x0, idx, x1);
        const __m512i high = _mm512_permutex2var_epi8(x2, idx, x3);
        _mm512_store_si512(out + ((g0 + c) * steps + s) * 64, _mm512_mask_blend_epi8(upper_pair, low, high));
      }
    }
  }
}

template <int kFields, int kTile>
TURBOKV_TARGET_AVX512_VNNI_VBMI void accumulate_tile(const ValueCall& c, int a0, __m512i table) {
  constexpr int kBits = 8 / kFields;
  const __m512i field_mask = _mm512_set1_epi8(static_cast<char>((1 << kBits) - 1));
  const int64_t w8_stride = c.groups * kInt8ValueGroup;
  for (int g = 0; g < c.chunks; ++g) {
    const uint8_t* rows = c.rows + g * c.steps * 64;
    for (int64_t group = 0; group < c.groups; ++group) {
      __m512i sums[kTile][kFields];
      for (int a = 0; a < kTile; ++a) {
        for (int f = 0; f < kFields; ++f) sums[a][f] = _mm512_setzero_si512();
      }
      // Every group has kStepsPerGroup steps (transpose_rows pads them): a fixed trip count,
      // without which GCC 12 copied every accumulator twice per step.
#pragma GCC unroll 4
      for (int64_t s = group * kStepsPerGroup; s < (group + 1) * kStepsPerGroup; ++s) {
        const __m512i bytes = _mm512_load_si512(rows + s * 64);
        __m512i weights[kTile];
        for (int a = 0; a < kTile; ++a) {
          int32_t four;
          __builtin_memcpy(&four, c.w8 + (a0 + a) * w8_stride + s * kTokensPerStep, sizeof four);
          weights[a] = _mm512_set1_epi32(four);
        }
        for (int f = 0; f < kFields; ++f) {
          const __m512i idx = _mm512_and_si512(_mm512_srli_epi16(bytes, f * kBits), field_mask);
          const __m512i centroids = _mm512_shuffle_epi8(table, idx);
          for (int a = 0; a < kTile; ++a) dpbusd(sums[a][f], weights[a], centroids);
        }
      }
      for (int a = 0; a < kTile; ++a) {
        const __m512 scale = _mm512_set1_ps(c.scales[(a0 + a) * c.groups + group]);
        for (int f = 0; f < kFields; ++f) {
          float* p = c.acc + static_cast<int64_t>(a0 + a) * c.d + (g * kFields + f) * 16;
          _mm512_storeu_ps(p, _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums[a][f]), _mm512_loadu_ps(p)));
        }
      }
    }
  }
}

// accumulate_tile's sums for 4-bit rows with the transposition done in registers instead of by
// transpose_rows through memory (K4V4 decode at 32K: 0.92-0.97x the time from memory, ~0.85x from
// L3, both A/B orders; 2-bit rows, with 4 fields per pass, lost 3-6%: kernel_choices_avx2.md round
// 51): per step, 32 bytes of rows 0 and 1 from chunk 2p on fill one register, of rows 2 and 3
// another, and one vpermt2b per chunk gives its step of 4 tokens (byte 4k + t = row t's byte
// 16 c + k). kChunks (2 where the row has an even count) chunks per pass, 16 int32 sums for 4
// queries, so that the queries' broadcast weights serve both. Same integers, same float steps, in
// the same order per accumulator lane, as accumulate_tile.
template <int kTile, int kChunks>
TURBOKV_TARGET_AVX512_VNNI_VBMI void accumulate_tile_from_rows(const ValueCall& c, int a0, __m512i table) {
  constexpr int kFields = 2, kBits = 4;
  const __m512i field_mask = _mm512_set1_epi8(static_cast<char>((1 << kBits) - 1));
  alignas(64) uint8_t order[2][64];
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 16; ++k) {
      for (int t = 0; t < kTokensPerStep; ++t) {
        order[h][4 * k + t] = static_cast<uint8_t>((t >> 1) * 64 + (t & 1) * 32 + 16 * h + k);
      }
    }
  }
  const int64_t w8_stride = c.groups * kInt8ValueGroup;
  for (int g = 0; g < c.chunks; g += kChunks) {
    const int pair = g & ~1;  // the 32 bytes loaded start at chunk `pair`; g is its first or second
    const int64_t left = c.code_bytes - 16 * int64_t{pair};
    const __mmask32 valid = left >= 32 ? ~__mmask32{0} : (__mmask32{1} << left) - 1;
    __m512i order_of[kChunks];
    for (int h = 0; h < kChunks; ++h) order_of[h] = _mm512_load_si512(order[(g & 1) + h]);
    for (int64_t group = 0; group < c.groups; ++group) {
      __m512i sums[kTile][kChunks][kFields];
      for (auto& query : sums) {
        for (auto& chunk : query) {
          for (__m512i& v : chunk) v = _mm512_setzero_si512();
        }
      }
#pragma GCC unroll 2
      for (int64_t s = group * kStepsPerGroup; s < (group + 1) * kStepsPerGroup; ++s) {
        const int64_t j = s * kTokensPerStep;
        __m256i half[4];
        // Tokens past n repeat the last one: their weight bytes are zero. No byte past a row's
        // end is read (masked loads).
        for (int t = 0; t < 4; ++t) {
          half[t] = _mm256_maskz_loadu_epi8(valid, c.codes + std::min(j + t, c.n - 1) * c.code_bytes + 16 * pair);
        }
        const __m512i x01 = _mm512_inserti64x4(_mm512_castsi256_si512(half[0]), half[1], 1);
        const __m512i x23 = _mm512_inserti64x4(_mm512_castsi256_si512(half[2]), half[3], 1);
        __m512i weights[kTile];
        for (int a = 0; a < kTile; ++a) {
          int32_t four;
          __builtin_memcpy(&four, c.w8 + (a0 + a) * w8_stride + j, sizeof four);
          weights[a] = _mm512_set1_epi32(four);
        }
        for (int h = 0; h < kChunks; ++h) {
          const __m512i step = _mm512_permutex2var_epi8(x01, order_of[h], x23);
          for (int f = 0; f < kFields; ++f) {
            const __m512i idx = _mm512_and_si512(_mm512_srli_epi16(step, f * kBits), field_mask);
            const __m512i centroids = _mm512_shuffle_epi8(table, idx);
            for (int a = 0; a < kTile; ++a) dpbusd(sums[a][h][f], weights[a], centroids);
          }
        }
      }
      for (int a = 0; a < kTile; ++a) {
        const __m512 scale = _mm512_set1_ps(c.scales[(a0 + a) * c.groups + group]);
        for (int h = 0; h < kChunks; ++h) {
          for (int f = 0; f < kFields; ++f) {
            float* p = c.acc + static_cast<int64_t>(a0 + a) * c.d + ((g + h) * kFields + f) * 16;
            _mm512_storeu_ps(p, _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums[a][h][f]), _mm512_loadu_ps(p)));
          }
        }
      }
    }
  }
}

// Query tiles of kTile, then the rest in one.
template <int kChunks>
TURBOKV_TARGET_AVX512_VNNI_VBMI void accumulate_from_rows(const ValueCall& c, int m, __m512i table) {
  int a = 0;
  for (; a + 4 <= m; a += 4) accumulate_tile_from_rows<4, kChunks>(c, a, table);
  switch (m - a) {
    case 3: accumulate_tile_from_rows<3, kChunks>(c, a, table); break;
    case 2: accumulate_tile_from_rows<2, kChunks>(c, a, table); break;
    case 1: accumulate_tile_from_rows<1, kChunks>(c, a, table); break;
    default: break;
  }
}

// Lane k of the result: the largest of v[k]'s 16 lanes, for 16 registers at once (a transpose and
// a max tree: 45 instructions where 16 reductions take ~130, each a dependent chain). Exact: the
// maximum does not depend on the order.
TURBOKV_TARGET_AVX512_VNNI_VBMI inline __m512 maxima16(const __m512* v) {
  __m512 pairs[8], quads[4];
  for (int k = 0; k < 8; ++k) {  // per 128-bit lane: [v2k: 0|2, v2k+1: 0|2, v2k: 1|3, v2k+1: 1|3]
    pairs[k] = _mm512_max_ps(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]), _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
  }
  for (int k = 0; k < 4; ++k) {  // per 128-bit lane: registers 4k .. 4k + 3, one lane each
    quads[k] = _mm512_max_ps(_mm512_shuffle_ps(pairs[2 * k], pairs[2 * k + 1], 0x44),
                             _mm512_shuffle_ps(pairs[2 * k], pairs[2 * k + 1], 0xEE));
  }
  // Across the four 128-bit lanes: halves, then quarters (as reduce4 does for sums).
  const __m512 x = _mm512_max_ps(_mm512_shuffle_f32x4(quads[0], quads[1], 0x44),
                                 _mm512_shuffle_f32x4(quads[0], quads[1], 0xEE));
  const __m512 y = _mm512_max_ps(_mm512_shuffle_f32x4(quads[2], quads[3], 0x44),
                                 _mm512_shuffle_f32x4(quads[2], quads[3], 0xEE));
  return _mm512_max_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
}

// The weights of one query as bytes and scales, 16 groups at a time: quantize_group_weights'
// steps (the maximum is exact in any order; the divisions, the product and the nearest-even
// rounding are per lane, so one vector division serves 16 groups).
// Returns false, having written part of out, if a weight is negative, NaN or infinite.
TURBOKV_TARGET_AVX512_VNNI_VBMI bool quantize_weights(const float* w, int64_t n, int64_t groups, float table_scale, uint8_t* out,
                        float* scales) {
  __mmask16 bad = 0;
  for (int64_t g0 = 0; g0 < groups; g0 += 16) {
    const int batch = static_cast<int>(std::min<int64_t>(16, groups - g0));
    // Each group's weights, kVectors of 16 (zero past n), and their lane-wise maximum.
    constexpr int kVectors = kInt8ValueGroup / 16;
    static_assert(kInt8ValueGroup % 16 == 0, "a group is whole 512-bit vectors");
    __m512 v[16][kVectors], tops[16];
    for (int k = 0; k < 16; ++k) {
      const int64_t j = (g0 + k) * kInt8ValueGroup;
      const int64_t count = k < batch ? std::min<int64_t>(kInt8ValueGroup, n - j) : 0;
      tops[k] = _mm512_setzero_ps();
      for (int i = 0; i < kVectors; ++i) {
        const int64_t left = std::clamp<int64_t>(count - 16 * i, 0, 16);
        v[k][i] = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << left) - 1u), w + j + 16 * i);
        bad = _kor_mask16(bad, _kor_mask16(_mm512_cmp_ps_mask(v[k][i], _mm512_setzero_ps(), _CMP_NGE_UQ),  // < 0, NaN
                                           _mm512_cmp_ps_mask(v[k][i], _mm512_set1_ps(FLT_MAX), _CMP_GT_OQ)));  // +Inf
        tops[k] = _mm512_max_ps(tops[k], v[k][i]);
      }
    }
    const __m512 top = maxima16(tops);  // the zeros past n change nothing (weights >= 0)
    // Groups below kSmallestGroupMax (all-zero ones included): inverse and scale +0, not -0.
    const __mmask16 live = _mm512_cmp_ps_mask(top, _mm512_set1_ps(kSmallestGroupMax), _CMP_GE_OQ);
    const __m512 inv = _mm512_maskz_div_ps(live, _mm512_set1_ps(127.0f), top);
    const __m512 scale =
        _mm512_maskz_mul_ps(live, _mm512_div_ps(top, _mm512_set1_ps(127.0f)), _mm512_set1_ps(table_scale));
    _mm512_mask_storeu_ps(scales + g0, static_cast<__mmask16>((1u << batch) - 1u), scale);
    for (int k = 0; k < batch; ++k) {
      const __m512 inv_k = _mm512_permutexvar_ps(_mm512_set1_epi32(k), inv);
      for (int i = 0; i < kVectors; ++i) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (g0 + k) * kInt8ValueGroup + 16 * i),
                         _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v[k][i], inv_k))));
      }
    }
  }
  return bad == 0;
}

// kThreeBit: 3-bit codes, summed as their 4-bit rows (kFields 2).
template <int kFields, bool kThreeBit = false>
TURBOKV_TARGET_AVX512_VNNI_VBMI void axpy_int8_fields(const float* w, int64_t w_stride, int m,
                                                      const uint8_t* codes, int64_t code_bytes,
                                                      int64_t n, const int8_t* table8,
                                                      float table_scale, int d, float* acc) {
  if (n <= 0) return;
  const int64_t groups = (n + kInt8ValueGroup - 1) / kInt8ValueGroup;
  const int64_t steps = groups * kStepsPerGroup;
  const int chunks = kThreeBit ? d / 32 : static_cast<int>(code_bytes / 16);
  thread_local std::vector<uint8_t> w8;
  thread_local std::vector<float> scales, lanes;
  thread_local AlignedBytes rows;
  w8.resize(static_cast<size_t>(m * groups * kInt8ValueGroup));
  scales.resize(static_cast<size_t>(m * groups));
  for (int a = 0; a < m; ++a) {
    if (!quantize_weights(w + a * w_stride, n, groups, table_scale, w8.data() + a * groups * kInt8ValueGroup,
                          scales.data() + a * groups)) {
      throw std::invalid_argument(kBadWeights);
    }
  }
  lanes.resize(static_cast<size_t>(m) * d);
  to_lanes_avx512<kFields>(acc, m, d, chunks, lanes.data());
  alignas(64) int8_t repeated[64];
  for (int k = 0; k < 64; ++k) repeated[k] = table8[k & 15];
  const __m512i table = _mm512_load_si512(repeated);
  // Tiles of 4 queries share each lookup where their 4 x fields int32 sums fit in registers (2 and
  // 4 bits: 16 and 8); 1 bit takes 2 queries per tile.
  constexpr int kTile = kFields >= 8 ? 2 : 4;
  if constexpr (rows_in_registers(kThreeBit ? 3 : 8 / kFields)) {
    const ValueCall call{nullptr, 0, codes, code_bytes, n, chunks, groups, w8.data(), scales.data(), lanes.data(), d};
    if (chunks % 2 == 0) {
      accumulate_from_rows<2>(call, m, table);
    } else {
      accumulate_from_rows<1>(call, m, table);
    }
  } else {
    rows.reserve(static_cast<size_t>(steps * chunks * 64));
    transpose_rows<kThreeBit>(codes, code_bytes, n, chunks, rows.data());
    const ValueCall call{rows.data(), steps, nullptr, 0, 0, chunks, groups, w8.data(), scales.data(), lanes.data(), d};
    int a = 0;
    for (; a + kTile <= m; a += kTile) accumulate_tile<kFields, kTile>(call, a, table);
    switch (m - a) {
      case 3: accumulate_tile<kFields, 3>(call, a, table); break;
      case 2: accumulate_tile<kFields, 2>(call, a, table); break;
      case 1: accumulate_tile<kFields, 1>(call, a, table); break;
      default: break;
    }
  }
  from_lanes_avx512<kFields>(lanes.data(), m, d, chunks, acc);
  _mm256_zeroupper();
}

}  // namespace

void axpy_packed_int8_vnni(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                           int bits, int d, float* acc) {
  if (bits == 3) return axpy_int8_fields<2, true>(w, w_stride, m, codes, code_bytes, n, table8, table_scale, d, acc);
  switch (bits) {
    case 1: return axpy_int8_fields<8>(w, w_stride, m, codes, code_bytes, n, table8, table_scale, d, acc);
    case 2: return axpy_int8_fields<4>(w, w_stride, m, codes, code_bytes, n, table8, table_scale, d, acc);
    default: return axpy_int8_fields<2>(w, w_stride, m, codes, code_bytes, n, table8, table_scale, d, acc);
  }
}
#else
bool int8_values_vnni_fit(int, int64_t, int) { return false; }
bool int8_values_vnni_in_registers(int, int64_t, int) { return false; }
void axpy_packed_int8_vnni(const float*, int64_t, int, const uint8_t*, int64_t, int64_t,
                           const int8_t*, float, int, int, float*) {
  throw std::logic_error("axpy_packed_int8_vnni called off x86 (int8_values_vnni_fit is false)");
}
#endif

}  // namespace kernels
}  // namespace turbokv
