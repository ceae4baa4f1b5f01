// Int8 values (#13 item 3): the value side of attention with its multiply-adds in integers.
//
// Per query and per group of kInt8ValueGroup tokens (counted from the call's first token), the
// weights are rounded to 7-bit bytes on the group's largest, u_j = nearest(w_j * 127 / max), the
// centroids are the codebook's int8 form (quantize_int8 to +-kInt8CentroidTop = 63; plain AVX2's
// maddubs then sums two steps of products in int16 without saturating: 2 * 2 * 127 * 63 < 2^15),
// the products u_j * c8[idx] summed exactly in int32 and added once per group:
// acc = fma((max / 127) * table_scale, float(sum), acc).
// Integer sums are exact and the float steps are the same at every level, so every level returns
// the same floats. Scaling per group of kInt8ValueGroup (32) tokens keeps a heavy token (an
// attention sink) from rounding its neighbours' weights away beyond its own group: a weight's
// rounding error is at most 1/254 of its group's largest.
//
// This file holds the scalar reference, the AVX2 kernels (axpy_int8_avx2_kernel.inc, plain and with
// AVX-VNNI) and the selector; the AVX-512 kernel (vpdpbusd: 64 products per instruction against 16
// per float FMA) is axpy_int8_vnni_kernels.cpp.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "aligned_bytes.hpp"
#include "avx2_helpers.hpp"
#include "int8_layout.hpp"
#include "kernels.hpp"
#include "lane_order.hpp"

namespace turbokv {
namespace kernels {

const char* const kBadWeights = "int8 values need finite weights >= 0 (softmax weights)";

float quantize_group_weights(const float* w, int64_t count, float table_scale, uint8_t* out) {
  float top = 0.0f;
  bool bad = false;
  for (int64_t j = 0; j < count; ++j) {
    top = std::max(top, w[j]);
    bad |= !(w[j] >= 0.0f && w[j] <= FLT_MAX);  // negative, NaN or Inf: nothing to round on
  }
  if (bad) throw std::invalid_argument(kBadWeights);
  const float inv = top >= kSmallestGroupMax ? 127.0f / top : 0.0f;
  // w_j * inv <= 127 up to one rounding, which nearest-even keeps at 127.
  for (int64_t j = 0; j < count; ++j) out[j] = static_cast<uint8_t>(std::nearbyint(w[j] * inv));
  return top >= kSmallestGroupMax ? (top / 127.0f) * table_scale : 0.0f;
}

namespace {

// All weights are rounded before anything is added, so a refused one leaves acc untouched.
void axpy_packed_int8_scalar(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                             int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                             int bits, int d, float* acc) {
  require_int8_centroids(table8);
  const int64_t groups = (n + kInt8ValueGroup - 1) / kInt8ValueGroup;
  std::vector<uint8_t> u(static_cast<size_t>(m * groups * kInt8ValueGroup));
  std::vector<float> scales(static_cast<size_t>(m * groups));
  for (int a = 0; a < m; ++a) {
    for (int64_t group = 0; group < groups; ++group) {
      const int64_t j0 = group * kInt8ValueGroup;
      scales[a * groups + group] = quantize_group_weights(
          w + a * w_stride + j0, std::min<int64_t>(kInt8ValueGroup, n - j0), table_scale, &u[(a * groups + group) * kInt8ValueGroup]);
    }
  }
  const UnpackFn unpack = select_unpack(SimdLevel::kScalar);
  std::vector<uint8_t> idx(static_cast<size_t>(d));
  std::vector<int32_t> sums(static_cast<size_t>(d));
  for (int a = 0; a < m; ++a) {
    float* acc_a = acc + static_cast<int64_t>(a) * d;
    for (int64_t group = 0; group < groups; ++group) {
      const int64_t j0 = group * kInt8ValueGroup;
      const uint8_t* ua = &u[(a * groups + group) * kInt8ValueGroup];
      std::fill(sums.begin(), sums.end(), 0);
      for (int64_t j = 0; j < std::min<int64_t>(kInt8ValueGroup, n - j0); ++j) {
        unpack(codes + (j0 + j) * code_bytes, d, bits, idx.data());
        for (int i = 0; i < d; ++i) sums[i] += int32_t{ua[j]} * int32_t{table8[idx[i]]};
      }
      // |sum| <= 16 * 127 * 63 < 2^24: the conversion is exact.
      const float scale = scales[a * groups + group];
      for (int i = 0; i < d; ++i) acc_a[i] = std::fma(scale, static_cast<float>(sums[i]), acc_a[i]);
    }
  }
}

#if TURBOKV_X86
constexpr int kTokensPerStep = 4;  // the 4 bytes that one int32 lane sums
constexpr int kStepsPerGroup = kInt8ValueGroup / kTokensPerStep;

// Per-thread scratch of the AVX2 kernels, kept across calls (decode calls once per block).
struct ValueScratch {
  std::vector<uint8_t> w8, indices;
  std::vector<float> scales, lanes;
  AlignedBytes rows;
};

ValueScratch& value_scratch() {
  thread_local ValueScratch scratch;
  return scratch;
}

// What one call shares across its query tiles (axpy_int8_avx2_kernel.inc).
struct ValueCallAvx2 {
  const uint8_t* rows;      // transposed: per chunk and step of 4 tokens, 64 bytes
  int64_t steps;            // groups * kStepsPerGroup
  int chunks;               // 16-byte chunks per row
  int64_t groups;           // ceil(n / kInt8ValueGroup)
  const uint8_t* w8;        // per query: groups * kInt8ValueGroup weight bytes, zero past n
  const float* scales;      // per query: one per group
  float* acc;               // per query: lanes_per_query floats in lane order (8 lanes)
  int64_t lanes_per_query;  // chunks * 16 * fields
};

// True if any of x's lanes is negative, NaN or infinite (quantize_group_weights refuses them).
TURBOKV_TARGET_AVX2 inline __m256 bad_weights(__m256 x) {
  return _mm256_or_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NGE_UQ),
                      _mm256_cmp_ps(x, _mm256_set1_ps(FLT_MAX), _CMP_GT_OQ));
}

// Group g's 16 weights (v0, v1) times inv, rounded to nearest-even bytes at out.
TURBOKV_TARGET_AVX2 inline void store_rounded(__m256 v0, __m256 v1, __m256 inv, uint8_t* out) {
  const __m256i u0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, inv));
  const __m256i u1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, inv));
  const __m128i words0 = _mm_packs_epi32(_mm256_castsi256_si128(u0), _mm256_extracti128_si256(u0, 1));
  const __m128i words1 = _mm_packs_epi32(_mm256_castsi256_si128(u1), _mm256_extracti128_si256(u1, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(words0, words1));
}

// The 8 lanes' maxima of m[0..7] as one vector: lane g is max(m[g]).
TURBOKV_TARGET_AVX2 inline __m256 eight_maxima(const __m256 (&m)[8]) {
  __m256 pairs[4], quads[2];
  for (int k = 0; k < 4; ++k) {  // lanes [a0 b0 a1 b1] per half: a = m[2k], b = m[2k + 1]
    pairs[k] = _mm256_max_ps(_mm256_unpacklo_ps(m[2 * k], m[2 * k + 1]), _mm256_unpackhi_ps(m[2 * k], m[2 * k + 1]));
  }
  for (int k = 0; k < 2; ++k) {  // lanes [a b c d] per half
    quads[k] = _mm256_max_ps(_mm256_shuffle_ps(pairs[2 * k], pairs[2 * k + 1], 0x44),
                             _mm256_shuffle_ps(pairs[2 * k], pairs[2 * k + 1], 0xEE));
  }
  return _mm256_max_ps(_mm256_permute2f128_ps(quads[0], quads[1], 0x20),
                       _mm256_permute2f128_ps(quads[0], quads[1], 0x31));
}

// quantize_group_weights for every group of one query (the same maximum, products, divisions and
// nearest-even rounding); false if a weight is negative, NaN or infinite. Whole groups go 8 at a
// time, their maxima, divisions and scales as vectors (one group at a time spent two scalar
// divisions and a horizontal maximum per 16 weights); the rest one group at a time, 8 lanes at once.
TURBOKV_TARGET_AVX2 bool quantize_weights_avx2(const float* w, int64_t n, int64_t groups,
                                               float table_scale, uint8_t* out, float* scales) {
  constexpr int kG = kInt8ValueGroup, kVectors = kG / 8;
  static_assert(kG % 16 == 0, "store_rounded writes 16 bytes");
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 smallest = _mm256_set1_ps(kSmallestGroupMax);
  __m256 bad = _mm256_setzero_ps();
  int64_t group = 0;
  for (; (group + 8) * kG <= n; group += 8) {  // 8 whole groups left
    const float* v = w + group * kG;
    __m256 tops[8];
    for (int g = 0; g < 8; ++g) {
      __m256 top = _mm256_setzero_ps();
      for (int i = 0; i < kVectors; ++i) {
        const __m256 x = _mm256_loadu_ps(v + kG * g + 8 * i);
        bad = _mm256_or_ps(bad, bad_weights(x));
        top = _mm256_max_ps(top, x);
      }
      tops[g] = top;
    }
    const __m256 top = eight_maxima(tops);
    const __m256 kept = _mm256_cmp_ps(top, smallest, _CMP_GE_OQ);
    alignas(32) float inv[8];
    _mm256_store_ps(inv, _mm256_and_ps(kept, _mm256_div_ps(_mm256_set1_ps(127.0f), top)));
    _mm256_storeu_ps(scales + group, _mm256_and_ps(kept, _mm256_mul_ps(_mm256_div_ps(top, _mm256_set1_ps(127.0f)),
                                                                         _mm256_set1_ps(table_scale))));
    for (int g = 0; g < 8; ++g) {
      for (int h = 0; h < kG; h += 16) {
        store_rounded(_mm256_loadu_ps(v + kG * g + h), _mm256_loadu_ps(v + kG * g + h + 8), _mm256_broadcast_ss(inv + g),
                      out + (group + g) * kG + h);
      }
    }
  }
  for (; group < groups; ++group) {
    const int64_t j = group * kG;
    const int count = static_cast<int>(std::min<int64_t>(kG, n - j));
    __m256 v[kVectors];
    __m256 top8 = _mm256_setzero_ps();
    for (int i = 0; i < kVectors; ++i) {
      v[i] = _mm256_maskload_ps(w + j + 8 * i, _mm256_cmpgt_epi32(_mm256_set1_epi32(count - 8 * i), lane));
      bad = _mm256_or_ps(bad, bad_weights(v[i]));
      top8 = _mm256_max_ps(top8, v[i]);
    }
    top8 = _mm256_max_ps(top8, _mm256_permute2f128_ps(top8, top8, 1));
    top8 = _mm256_max_ps(top8, _mm256_shuffle_ps(top8, top8, 0x4E));
    top8 = _mm256_max_ps(top8, _mm256_shuffle_ps(top8, top8, 0xB1));
    const float top = _mm256_cvtss_f32(top8);
    for (int i = 0; i < kVectors; i += 2) {
      store_rounded(v[i], v[i + 1], _mm256_set1_ps(top >= kSmallestGroupMax ? 127.0f / top : 0.0f), out + j + 8 * i);
    }
    scales[group] = top >= kSmallestGroupMax ? (top / 127.0f) * table_scale : 0.0f;
  }
  return _mm256_movemask_ps(bad) == 0;
}

// 16 code bytes of a row, zero past its end. A last chunk of 4, 8 or 12 bytes (1 bit at head_dim
// 64 or 96, 2 bits at 96, 4 bits at 80, ...) is read by 4- and 8-byte loads: through a stack copy
// each row's 16-byte reload waited on its smaller stores (no store forwarding), which made the
// int8 value kernel 1.3-1.6x slower at those shapes (kernel_choices_avx2.md round 29).
TURBOKV_TARGET_AVX2 inline __m128i row_chunk(const uint8_t* row, int64_t code_bytes, int g) {
  const int64_t left = code_bytes - 16 * int64_t{g};
  const uint8_t* p = row + 16 * g;
  if (left >= 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (left == 8 || left == 12) {
    const __m128i low = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    if (left == 8) return low;
    int32_t last;
    std::memcpy(&last, p + 8, sizeof last);
    return _mm_insert_epi32(low, last, 2);
  }
  if (left == 4) {
    int32_t only;
    std::memcpy(&only, p, sizeof only);
    return _mm_cvtsi32_si128(only);
  }
  alignas(16) uint8_t tail[16] = {};
  std::memcpy(tail, p, static_cast<size_t>(left));
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
}

// Where the AVX2 value kernel takes a block's rows from: the code rows as stored, or 3-bit rows
// rewritten as the 4-bit rows of their indices (packing.hpp: index 2k in byte k's low nibble, 2k + 1
// in its high one) so that the 4-bit kernel sums them, with no unpacked copy of the block; head_dim
// a multiple of 32 (int8_three_bit_in_registers), or by pdep a multiple of 16. Whole pairs of
// chunks come from sixty_four_nibbles_avx2 in both routes (no pdep); a chunk left alone from pdep
// (two per 32 indices) or, where pdep is slow (kPdepIsSlow), from unpack3_x16_avx2 and maddubs.
enum class ValueRows { kCodes, kThreeBitBySimd, kThreeBitByPdep };

// Chunk g of a 3-bit row (its 32 indices in 12 packed bytes) as 16 nibble bytes by SIMD: the
// indices taken apart (unpack3_x16_avx2; the row holds at least 8 bytes), then paired by maddubs
// (low + 16 * high, at most 119).
TURBOKV_TARGET_AVX2 inline __m128i three_bit_chunk_by_simd(const uint8_t* row, int64_t code_bytes, int g) {
  const __m128i low_plus_16_high = _mm_set1_epi16(0x1001);
  const uint8_t* end = row + code_bytes;
  const __m128i first = _mm_maddubs_epi16(unpack3_x16_avx2(row + 12 * g, end), low_plus_16_high);
  const __m128i second = _mm_maddubs_epi16(unpack3_x16_avx2(row + 12 * g + 6, end), low_plus_16_high);
  return _mm_packus_epi16(first, second);
}

template <ValueRows kRows>
TURBOKV_TARGET_AVX2 inline __m128i value_chunk(const uint8_t* row, int64_t code_bytes, int g) {
  if constexpr (kRows == ValueRows::kThreeBitBySimd) return three_bit_chunk_by_simd(row, code_bytes, g);
  if constexpr (kRows == ValueRows::kThreeBitByPdep) {
    // A row's last chunk may hold 16 indices only (head_dim 16 more than a multiple of 32): its
    // upper 8 nibble bytes stay zero, and no pdep reads past the row.
    const uint8_t* end = row + code_bytes;
    const uint8_t* second = row + 12 * g + 6;
    return _mm_set_epi64x(second < end ? static_cast<long long>(sixteen_nibbles(second, end)) : 0LL,
                          static_cast<long long>(sixteen_nibbles(row + 12 * g, end)));
  }
  return row_chunk(row, code_bytes, g);
}

// Four rows' registers, each two chunks (chunk g in the low 128-bit lane, g + 1 in the high one),
// into the transposed layout at o0 (chunk g) and o1 (g + 1): 256-bit unpacks (bytes then words),
// each 128-bit lane a chunk's quarter, and one lane exchange per output: 20 operations per 32
// bytes of four rows where the 128-bit route (one chunk at a time) takes 36.
TURBOKV_TARGET_AVX2 inline void store_two_chunks(const __m256i (&c)[4], uint8_t* o0, uint8_t* o1) {
  const __m256i p01l = _mm256_unpacklo_epi8(c[0], c[1]), p01h = _mm256_unpackhi_epi8(c[0], c[1]);
  const __m256i p23l = _mm256_unpacklo_epi8(c[2], c[3]), p23h = _mm256_unpackhi_epi8(c[2], c[3]);
  // Bytes 0-3 | 16-19, 4-7 | 20-23, 8-11 | 24-27, 12-15 | 28-31 of the pair, 4 tokens each.
  const __m256i q0 = _mm256_unpacklo_epi16(p01l, p23l), q1 = _mm256_unpackhi_epi16(p01l, p23l);
  const __m256i q2 = _mm256_unpacklo_epi16(p01h, p23h), q3 = _mm256_unpackhi_epi16(p01h, p23h);
  _mm256_store_si256(reinterpret_cast<__m256i*>(o0), _mm256_permute2x128_si256(q0, q1, 0x20));
  _mm256_store_si256(reinterpret_cast<__m256i*>(o0 + 32), _mm256_permute2x128_si256(q2, q3, 0x20));
  _mm256_store_si256(reinterpret_cast<__m256i*>(o1), _mm256_permute2x128_si256(q0, q1, 0x31));
  _mm256_store_si256(reinterpret_cast<__m256i*>(o1 + 32), _mm256_permute2x128_si256(q2, q3, 0x31));
}

// The AVX-512 kernel's transposed layout (out[(g * steps + s) * 64 + 4k + t] = token 4s + t's byte
// 16 g + k; tokens past n repeat the last one, whose weight bytes are zero there): two chunks at a
// time where whole (store_two_chunks; 3-bit rows as nibbles by sixty_four_nibbles_avx2), the rest
// by 32-bit and 64-bit unpacks of four rows' chunks (value_chunk) and one in-lane pshufb per 32 bytes.
template <ValueRows kRows>
TURBOKV_TARGET_AVX2 void transpose_rows_avx2(const uint8_t* codes, int64_t code_bytes, int64_t n,
                                             int chunks, int64_t steps, uint8_t* out) {
  const __m256i order = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                         0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  // Packed bytes per pair of chunks: 32 of codes, 24 of 3-bit rows (64 indices).
  constexpr int64_t kPairBytes = kRows == ValueRows::kCodes ? 32 : 24;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t j = s * kTokensPerStep;
    const uint8_t* r[4];
    for (int t = 0; t < 4; ++t) r[t] = codes + std::min(j + t, n - 1) * code_bytes;
    int g = 0;
    for (; g + 2 <= chunks && kPairBytes / 2 * (g + 2) <= code_bytes; g += 2) {
      __m256i c[4];
      for (int t = 0; t < 4; ++t) {
        const uint8_t* p = r[t] + kPairBytes / 2 * g;
        if constexpr (kRows == ValueRows::kCodes) {
          c[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        } else {
          c[t] = sixty_four_nibbles_avx2(p);
        }
      }
      store_two_chunks(c, out + (g * steps + s) * 64, out + ((g + 1) * steps + s) * 64);
    }
    for (; g < chunks; ++g) {
      __m128i c[4];
      for (int t = 0; t < 4; ++t) {
        c[t] = value_chunk<kRows>(r[t], code_bytes, g);
      }
      // Bytes 4q..4q+3 of the four rows side by side, for q = 0..3.
      const __m128i t0 = _mm_unpacklo_epi32(c[0], c[1]), t1 = _mm_unpackhi_epi32(c[0], c[1]);
      const __m128i t2 = _mm_unpacklo_epi32(c[2], c[3]), t3 = _mm_unpackhi_epi32(c[2], c[3]);
      const __m256i k0 = _mm256_set_m128i(_mm_unpackhi_epi64(t0, t2), _mm_unpacklo_epi64(t0, t2));
      const __m256i k8 = _mm256_set_m128i(_mm_unpackhi_epi64(t1, t3), _mm_unpacklo_epi64(t1, t3));
      uint8_t* o = out + (g * steps + s) * 64;
      _mm256_store_si256(reinterpret_cast<__m256i*>(o), _mm256_shuffle_epi8(k0, order));
      _mm256_store_si256(reinterpret_cast<__m256i*>(o + 32), _mm256_shuffle_epi8(k8, order));
    }
  }
}

// Floats 0, 2, 4, 6 of a shuffle's two 128-bit lanes in order (lane 0's pair, then lane 1's).
TURBOKV_TARGET_AVX2 inline __m256 spread(__m256 x) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(x), 0xD8));
}

// 32 coordinates x[4 l + s] (l = 0..7, s = 0..3) as the lane order of 4 fields (2 bits),
// out[8 s + l]: four 128-bit rows per register pair swapped into [l | l + 4] halves, then one
// 4 x 4 transpose per half.
TURBOKV_TARGET_AVX2 inline void four_fields_to_lanes(const float* x, float* out) {
  const __m256 a = _mm256_loadu_ps(x), b = _mm256_loadu_ps(x + 8), c = _mm256_loadu_ps(x + 16),
               d = _mm256_loadu_ps(x + 24);
  const __m256 p = _mm256_permute2f128_ps(a, c, 0x20), q = _mm256_permute2f128_ps(a, c, 0x31);
  const __m256 r = _mm256_permute2f128_ps(b, d, 0x20), t = _mm256_permute2f128_ps(b, d, 0x31);
  const __m256 t0 = _mm256_unpacklo_ps(p, q), t1 = _mm256_unpackhi_ps(p, q);
  const __m256 t2 = _mm256_unpacklo_ps(r, t), t3 = _mm256_unpackhi_ps(r, t);
  _mm256_storeu_ps(out, _mm256_shuffle_ps(t0, t2, 0x44));
  _mm256_storeu_ps(out + 8, _mm256_shuffle_ps(t0, t2, 0xEE));
  _mm256_storeu_ps(out + 16, _mm256_shuffle_ps(t1, t3, 0x44));
  _mm256_storeu_ps(out + 24, _mm256_shuffle_ps(t1, t3, 0xEE));
}

// The inverse of four_fields_to_lanes.
TURBOKV_TARGET_AVX2 inline void four_fields_from_lanes(const float* in, float* x) {
  const __m256 o0 = _mm256_loadu_ps(in), o1 = _mm256_loadu_ps(in + 8), o2 = _mm256_loadu_ps(in + 16),
               o3 = _mm256_loadu_ps(in + 24);
  const __m256 u0 = _mm256_unpacklo_ps(o0, o1), u1 = _mm256_unpackhi_ps(o0, o1);
  const __m256 u2 = _mm256_unpacklo_ps(o2, o3), u3 = _mm256_unpackhi_ps(o2, o3);
  const __m256 p = _mm256_shuffle_ps(u0, u2, 0x44), q = _mm256_shuffle_ps(u0, u2, 0xEE);
  const __m256 r = _mm256_shuffle_ps(u1, u3, 0x44), t = _mm256_shuffle_ps(u1, u3, 0xEE);
  _mm256_storeu_ps(x, _mm256_permute2f128_ps(p, q, 0x20));
  _mm256_storeu_ps(x + 8, _mm256_permute2f128_ps(r, t, 0x20));
  _mm256_storeu_ps(x + 16, _mm256_permute2f128_ps(p, q, 0x31));
  _mm256_storeu_ps(x + 24, _mm256_permute2f128_ps(r, t, 0x31));
}

// Lane order with 8 lanes (to_lanes); 2 fields (4 bits) as even and odd coordinates in registers,
// 4 fields (2 bits) by four_fields_to_lanes (the scalar copy took ~5% of K2V2 int8 decode).
TURBOKV_TARGET_AVX2 void values_to_lanes(const float* acc, int m, int d, int chunks, int fields, float* lanes) {
  if (fields == 4 && d == chunks * 64) {
    for (int64_t i = 0; i < static_cast<int64_t>(m) * d; i += 32) four_fields_to_lanes(acc + i, lanes + i);
    return;
  }
  if (fields != 2 || d % 16 != 0 || d != chunks * 32) return to_lanes(acc, m, d, 2 * chunks, fields, 8, lanes);
  for (int64_t i = 0; i < static_cast<int64_t>(m) * d; i += 16) {
    const __m256 a = _mm256_loadu_ps(acc + i), b = _mm256_loadu_ps(acc + i + 8);
    _mm256_storeu_ps(lanes + i, spread(_mm256_shuffle_ps(a, b, 0x88)));
    _mm256_storeu_ps(lanes + i + 8, spread(_mm256_shuffle_ps(a, b, 0xDD)));
  }
}

TURBOKV_TARGET_AVX2 void values_from_lanes(const float* lanes, int m, int d, int chunks, int fields, float* acc) {
  if (fields == 4 && d == chunks * 64) {
    for (int64_t i = 0; i < static_cast<int64_t>(m) * d; i += 32) four_fields_from_lanes(lanes + i, acc + i);
    return;
  }
  if (fields != 2 || d % 16 != 0 || d != chunks * 32) return from_lanes(lanes, m, d, 2 * chunks, fields, 8, acc);
  for (int64_t i = 0; i < static_cast<int64_t>(m) * d; i += 16) {
    const __m256 even = _mm256_loadu_ps(lanes + i), odd = _mm256_loadu_ps(lanes + i + 8);
    const __m256 low = _mm256_unpacklo_ps(even, odd), high = _mm256_unpackhi_ps(even, odd);
    _mm256_storeu_ps(acc + i, _mm256_permute2f128_ps(low, high, 0x20));
    _mm256_storeu_ps(acc + i + 8, _mm256_permute2f128_ps(low, high, 0x31));
  }
}

// Weights rounded (refusing negative, NaN and infinite ones before anything is added), rows transposed, the
// accumulators put in lane order: what both AVX2 variants share.
TURBOKV_TARGET_AVX2 ValueCallAvx2 prepare_values_avx2(const float* w, int64_t w_stride, int m,
                                                      const uint8_t* codes, int64_t code_bytes,
                                                      int64_t n, float table_scale, int d, int fields,
                                                      ValueRows rows, const float* acc, ValueScratch& scratch) {
  const int64_t groups = (n + kInt8ValueGroup - 1) / kInt8ValueGroup;
  const int64_t steps = groups * kStepsPerGroup;
  // Three-bit rows are summed as the d / 2 bytes of 4-bit rows: d / 32 whole chunks, and a last
  // half one where head_dim is 16 more (by pdep only).
  const int chunks = static_cast<int>(((rows != ValueRows::kCodes ? d / 2 : code_bytes) + 15) / 16);
  scratch.w8.resize(static_cast<size_t>(m * groups * kInt8ValueGroup));
  scratch.scales.resize(static_cast<size_t>(m * groups));
  for (int a = 0; a < m; ++a) {
    if (!quantize_weights_avx2(w + a * w_stride, n, groups, table_scale,
                               scratch.w8.data() + a * groups * kInt8ValueGroup, scratch.scales.data() + a * groups)) {
      throw std::invalid_argument(kBadWeights);
    }
  }
  scratch.rows.reserve(static_cast<size_t>(steps * chunks * 64));
  const auto transpose = rows == ValueRows::kThreeBitByPdep   ? transpose_rows_avx2<ValueRows::kThreeBitByPdep>
                         : rows == ValueRows::kThreeBitBySimd ? transpose_rows_avx2<ValueRows::kThreeBitBySimd>
                                                              : transpose_rows_avx2<ValueRows::kCodes>;
  transpose(codes, code_bytes, n, chunks, steps, scratch.rows.data());
  const int64_t per_query = static_cast<int64_t>(chunks) * 16 * fields;
  scratch.lanes.resize(static_cast<size_t>(m * per_query));
  values_to_lanes(acc, m, d, chunks, fields, scratch.lanes.data());
  return ValueCallAvx2{scratch.rows.data(), steps, chunks, groups, scratch.w8.data(), scratch.scales.data(),
                       scratch.lanes.data(), per_query};
}

TURBOKV_TARGET_AVX2 void finish_values_avx2(const ValueCallAvx2& call, int m, int d, int fields, float* acc) {
  values_from_lanes(call.acc, m, d, call.chunks, fields, acc);
}

// The AVX2 kernel once per VnniForm (axpy_int8_avx2_kernel.inc).
#define TURBOKV_AVX2_VARIANTS_FILE "axpy_int8_avx2_kernel.inc"
#include "avx2_variants.inc"
#undef TURBOKV_AVX2_VARIANTS_FILE

void axpy_packed_int8_avx2(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                           int bits, int d, float* acc) {
  axpy_packed_int8_avx2_variant(kAvx2VnniForm, !kPdepIsSlow)(w, w_stride, m, codes, code_bytes, n, table8, table_scale,
                                                              bits, d, acc);
}

// AVX-512: the VNNI kernel where it fits, else the AVX2 one (the same integers either way).
void axpy_packed_int8_avx512(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                             int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                             int bits, int d, float* acc) {
  if (int8_values_vnni_fit(bits, code_bytes, d)) {
    require_int8_centroids(table8);
    return axpy_packed_int8_vnni(w, w_stride, m, codes, code_bytes, n, table8, table_scale, bits, d, acc);
  }
  axpy_packed_int8_avx2(w, w_stride, m, codes, code_bytes, n, table8, table_scale, bits, d, acc);
}
#endif

}  // namespace

#if TURBOKV_X86
AxpyPackedInt8Fn axpy_packed_int8_avx2_variant(VnniForm vnni, bool pdep) {
  switch (vnni) {
    case VnniForm::kNone: return pdep ? plain::axpy_packed_int8_with<true> : plain::axpy_packed_int8_with<false>;
#if TURBOKV_VNNI_FORMS
    case VnniForm::kVex: return pdep ? avx_vnni::axpy_packed_int8_with<true> : avx_vnni::axpy_packed_int8_with<false>;
    case VnniForm::kEvex: return pdep ? evex_vnni::axpy_packed_int8_with<true> : evex_vnni::axpy_packed_int8_with<false>;
#else
    case VnniForm::kVex:
    case VnniForm::kEvex: return nullptr;
#endif
  }
  return nullptr;
}
#else
AxpyPackedInt8Fn axpy_packed_int8_avx2_variant(VnniForm, bool) { return nullptr; }
#endif

AxpyPackedInt8Fn select_axpy_packed_int8(SimdLevel level) {
  return TURBOKV_PICK(level, axpy_packed_int8_scalar, axpy_packed_int8_avx2, axpy_packed_int8_avx512);
}

}  // namespace kernels
}  // namespace turbokv
