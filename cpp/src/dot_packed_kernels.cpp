// Fused scores: inner products of queries with table lookups of packed codes, straight from the
// packed bytes. This is the loop that makes compressed attention faster than dense attention.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "avx2_helpers.hpp"
#include "avx512_helpers.hpp"
#include "broadcast_lookups_avx2.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

// Portable version: unpack each key's indices once, then one lookup-dot per query.
void dot_packed_generic(DotLookupFn dot, UnpackFn unpack, const float* q, int m,
                        const uint8_t* codes, int64_t code_bytes, int64_t n, const float* table,
                        int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  std::vector<uint8_t> idx(static_cast<size_t>(d));
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
    unpack(codes + j * code_bytes, d, bits, idx.data());
    for (int a = 0; a < m; ++a) out[a * out_stride + j] = dot(q + a * d, idx.data(), table, bits, d);
  }
}

void axpy_packed_generic(AxpyLookupFn axpy, UnpackFn unpack, const float* w, int64_t w_stride,
                         int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                         const float* table, int bits, int d, float* acc) {
  std::vector<uint8_t> idx(static_cast<size_t>(d));
  for (int64_t j = 0; j < n; ++j) {
    unpack(codes + j * code_bytes, d, bits, idx.data());
    for (int a = 0; a < m; ++a) {
      const float weight = w[a * w_stride + j];
      if (weight != 0.0f) axpy(weight, idx.data(), table, bits, acc + static_cast<int64_t>(a) * d, d);
    }
  }
}

void axpy_packed_scalar(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                        int64_t code_bytes, int64_t n, const float* table, int bits, int d,
                        float* acc) {
  axpy_packed_generic(select_axpy_lookup(SimdLevel::kScalar), select_unpack(SimdLevel::kScalar), w,
                      w_stride, m, codes, code_bytes, n, table, bits, d, acc);
}

void dot_packed_scalar(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                       const float* table, int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  dot_packed_generic(select_dot_lookup(SimdLevel::kScalar), select_unpack(SimdLevel::kScalar), q,
                     m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead);
}

#if TURBOKV_X86
// Coordinates c..c+15 of token j by byte planes. kPacked = 1, 2, 4: the 16 fields come straight
// from 2, 4 or 8 packed code bytes, each lane left holding its field at bit 0 or 2 (1 bit: at bit
// 0-3) of its byte, i.e. a lane value v in 0..15 whose centroid float_byte_planes() stores at v;
// kPacked = 3: the 6 packed bytes taken apart in registers (unpack3_x16_avx2; rows `stride`
// bytes long); kPacked = 0: 16 unpacked index bytes (3 bits). Four pshufb fetch the 4 bytes of each centroid
// from the table's byte planes and two rounds of unpacks reassemble the floats exactly.
template <int kPacked>
struct PlaneValues {
  const uint8_t* indices;
  int64_t stride;
  int c;
  const __m128i* planes;
  TURBOKV_TARGET_AVX2 void operator()(int64_t j, __m256& v0, __m256& v1) const {
    const uint8_t* key = indices + j * stride;
    __m128i idx;
    if constexpr (kPacked == 4) {
      const __m128i low_nibbles = _mm_set1_epi8(0x0F);
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(key + c / 2));
      idx = _mm_unpacklo_epi8(_mm_and_si128(bytes, low_nibbles),
                              _mm_and_si128(_mm_srli_epi16(bytes, 4), low_nibbles));
    } else if constexpr (kPacked == 2 || kPacked == 1) {
      // Byte k of the group, repeated for its 8 / kPacked fields; field s keeps its bits where
      // they are in the low nibble (s < 4 / kPacked) or the high one shifted down.
      constexpr int kBytes = 2 * kPacked;
      int32_t raw = 0;
      std::memcpy(&raw, key + c * kPacked / 8, kBytes);
      const __m128i repeat = kPacked == 2 ? _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3)
                                          : _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
      const __m128i low = kPacked == 2 ? _mm_setr_epi8(3, 12, 0, 0, 3, 12, 0, 0, 3, 12, 0, 0, 3, 12, 0, 0)
                                       : _mm_setr_epi8(1, 2, 4, 8, 0, 0, 0, 0, 1, 2, 4, 8, 0, 0, 0, 0);
      const __m128i high = kPacked == 2 ? _mm_setr_epi8(0, 0, 3, 12, 0, 0, 3, 12, 0, 0, 3, 12, 0, 0, 3, 12)
                                        : _mm_setr_epi8(0, 0, 0, 0, 1, 2, 4, 8, 0, 0, 0, 0, 1, 2, 4, 8);
      const __m128i r = _mm_shuffle_epi8(_mm_cvtsi32_si128(raw), repeat);
      idx = _mm_or_si128(_mm_and_si128(r, low), _mm_and_si128(_mm_srli_epi16(r, 4), high));
    } else if constexpr (kPacked == 3) {
      idx = unpack3_x16_avx2(key + c * 3 / 8, key + stride);
    } else {
      idx = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key + c));
    }
    const __m128i b0 = _mm_shuffle_epi8(planes[0], idx), b1 = _mm_shuffle_epi8(planes[1], idx);
    const __m128i b2 = _mm_shuffle_epi8(planes[2], idx), b3 = _mm_shuffle_epi8(planes[3], idx);
    const __m128i t0 = _mm_unpacklo_epi8(b0, b1), t1 = _mm_unpackhi_epi8(b0, b1);
    const __m128i t2 = _mm_unpacklo_epi8(b2, b3), t3 = _mm_unpackhi_epi8(b2, b3);
    v0 = _mm256_castsi256_ps(_mm256_set_m128i(_mm_unpackhi_epi16(t0, t2), _mm_unpacklo_epi16(t0, t2)));
    v1 = _mm256_castsi256_ps(_mm256_set_m128i(_mm_unpackhi_epi16(t1, t3), _mm_unpacklo_epi16(t1, t3)));
  }
};

// The 16 floats PlaneValues<kPacked> looks up, as byte planes (plane k holds byte k of each):
// lane value v means centroid v (kPacked 4, 3 and 0), (v & 3) | (v >> 2) (2 bits: v is the field
// or the field << 2), or v != 0 (1 bit: v is 0 or a power of two). Tables are padded to 16.
TURBOKV_TARGET_AVX2 void float_byte_planes(const float* table, int packed, __m128i* planes) {
  alignas(16) uint8_t bytes[4][16];
  for (int v = 0; v < 16; ++v) {
    const int entry = packed == 2 ? ((v & 3) | (v >> 2)) : packed == 1 ? (v != 0) : v;
    uint32_t word;
    std::memcpy(&word, table + entry, 4);
    for (int k = 0; k < 4; ++k) bytes[k][v] = static_cast<uint8_t>(word >> (8 * k));
  }
  for (int k = 0; k < 4; ++k) planes[k] = _mm_load_si128(reinterpret_cast<const __m128i*>(bytes[k]));
}

// The floats whose 4 bytes are lane-wise in b[0..3] (byte planes looked up for 32 codes, lane 0:
// coordinates c..c+15, lane 1: c+16..c+31), in to_lane_order32's order: two rounds of unpacks.
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void floats_from_planes32(const __m256i* b, __m256* v) {
  const __m256i t0 = _mm256_unpacklo_epi8(b[0], b[1]), t1 = _mm256_unpackhi_epi8(b[0], b[1]);
  const __m256i t2 = _mm256_unpacklo_epi8(b[2], b[3]), t3 = _mm256_unpackhi_epi8(b[2], b[3]);
  v[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(t0, t2));
  v[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(t0, t2));
  v[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(t1, t3));
  v[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(t1, t3));
}

// Coordinates c..c+31 of a key from `bytes`: the code bytes of coordinate c on (kPacked = 2, 3 or
// 4 bits; 3: the 12 bytes of c..c+31 taken apart in registers by unpack3_x16_avx2, reading no
// byte at or past the row's `end`). Byte planes in both 128-bit
// lanes at once: lane 0 gets the lane values (PlaneValues' meaning; planes as float_byte_planes
// gives them, in both lanes) of coordinates c..c+15, lane 1 those of c+16..c+31; four lookups and
// two rounds of unpacks then reassemble the floats in to_lane_order32's order. 4 bits: each byte
// widened to a word whose low byte is its low nibble (coordinate 2k) and high byte its high one;
// 2 bits: each lane repeats its 4 bytes and masks each field in place, as PlaneValues does per 16
// (1-bit codes keep the 16-wide route). 12-14 shuffles per 32 coordinates against 28-32 for two
// 16-wide PlaneValues (Zen 3, 4-bit, 4 queries: scores 36.8 -> 23.6 ns per key, values 30-33 ->
// 20-21 ns per token; kernel_choices_avx2.md, round 14).
// kPdep (3 bits, where pdep is fast): the 32 indices become the 16 nibble bytes of their 4-bit row
// by two pdep (sixteen_nibbles) and take the 4-bit steps: ~4 shuffle-port micro-ops where two
// unpack3_x16_avx2 and an insert take 9 (kernel_choices_avx2.md, round 20).
template <int kPacked, bool kPdep = false>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void planes32_avx2(const uint8_t* bytes,
                                                                           const uint8_t* end,
                                                                           const __m256i* planes,
                                                                           __m256* v) {
  __m256i idx;
  if constexpr (kPacked == 3 && !kPdep) {  // lane 0 gets c..c+15, lane 1 c+16..c+31
    idx = _mm256_set_m128i(unpack3_x16_avx2(bytes + 6, end), unpack3_x16_avx2(bytes, end));
  } else if constexpr (kPacked == 4 || kPacked == 3) {
    const __m128i row = kPacked == 4 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes))
                                     : _mm_set_epi64x(static_cast<long long>(sixteen_nibbles(bytes + 6, end)),
                                                      static_cast<long long>(sixteen_nibbles(bytes, end)));
    const __m256i words = _mm256_cvtepu8_epi16(row);
    idx = _mm256_or_si256(_mm256_and_si256(words, _mm256_set1_epi16(0x000F)),
                          _mm256_and_si256(_mm256_slli_epi16(words, 4), _mm256_set1_epi16(0x0F00)));
  } else {
    static_assert(kPacked == 2, "2, 3 or 4 bits");
    // 8 bytes: lane 0 reads bytes 0-3 (coordinates c..c+15), lane 1 bytes 4-7.
    int64_t word;
    std::memcpy(&word, bytes, 8);
    const __m256i repeat = _mm256_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                            4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
    const __m256i r = _mm256_shuffle_epi8(_mm256_set1_epi64x(word), repeat);
    const __m256i low = _mm256_set1_epi32(0x00000C03), high = _mm256_set1_epi32(0x0C030000);  // (3, 12, 0, 0), (0, 0, 3, 12)
    idx = _mm256_or_si256(_mm256_and_si256(r, low), _mm256_and_si256(_mm256_srli_epi16(r, 4), high));
  }
  const __m256i b[4] = {_mm256_shuffle_epi8(planes[0], idx), _mm256_shuffle_epi8(planes[1], idx),
                        _mm256_shuffle_epi8(planes[2], idx), _mm256_shuffle_epi8(planes[3], idx)};
  floats_from_planes32(b, v);
}

// float_byte_planes of a 2-, 3- or 4-bit table, each plane in both 128-bit lanes.
TURBOKV_TARGET_AVX2 void planes32_table(const float* table, int packed, __m256i* planes) {
  __m128i narrow[4];
  float_byte_planes(table, packed, narrow);
  for (int k = 0; k < 4; ++k) planes[k] = _mm256_broadcastsi128_si256(narrow[k]);
}

// Token j's coordinates c..c+31 (values) and key j's coordinates c..c+31 (scores).
template <int kPacked, bool kPdep = false>
struct PlaneValues32 {
  const uint8_t* codes;
  int64_t code_bytes;
  int c;
  const __m256i* planes;
  TURBOKV_TARGET_AVX2 void operator()(int64_t j, __m256* v) const {
    const uint8_t* row = codes + j * code_bytes;
    planes32_avx2<kPacked, kPdep>(row + c * kPacked / 8, row + code_bytes, planes, v);
  }
};
template <int kPacked, bool kPdep = false>
struct PlaneKey32 {
  const uint8_t* key;
  int64_t code_bytes;
  const __m256i* planes;
  TURBOKV_TARGET_AVX2 void operator()(int c, __m256* v) const {
    planes32_avx2<kPacked, kPdep>(key + c * kPacked / 8, key + code_bytes, planes, v);
  }
  // Coordinates c..c+15 in coordinate order (head_dims 16 more than a multiple of 32), by the
  // 16-wide planes: each plane's low 128-bit lane.
  static constexpr bool kHasLast16 = true;
  TURBOKV_TARGET_AVX2 void last16(int c, __m256& v0, __m256& v1) const {
    const __m128i narrow[4] = {_mm256_castsi256_si128(planes[0]), _mm256_castsi256_si128(planes[1]),
                               _mm256_castsi256_si128(planes[2]), _mm256_castsi256_si128(planes[3])};
    PlaneValues<kPacked>{key, code_bytes, c, narrow}(0, v0, v1);
  }
};

// 2-, 3- and 4-bit codes (kPacked = bits), head_dim a multiple of 32, read from the packed rows:
// scores, the queries copied into the lane order once per call.
template <int kPacked, bool kPdep = false>
TURBOKV_TARGET_AVX2 void dot_planes32_avx2(const float* q, int m, const uint8_t* codes,
                                           int64_t code_bytes, int64_t n, const float* table, int d,
                                           float* out, int64_t out_stride, RowsAhead ahead) {
  __m256i planes[4];
  planes32_table(table, kPacked, planes);
  PermutedScratch lanes(static_cast<int64_t>(m) * d);  // no allocation per block up to 4 x 512
  to_lane_order32(q, m, d, lanes.data());
  int64_t j = 0;
  if (m == 4) {  // keys two at a time (dot_two_keys_avx2)
    for (; j + 2 <= n; j += 2) {
      ahead.fetch(j);
      ahead.fetch(j + 1);
      const uint8_t* key = codes + j * code_bytes;
      const PlaneKey32<kPacked, kPdep> ka{key, code_bytes, planes}, kb{key + code_bytes, code_bytes, planes};
      dot_two_keys_avx2<32>(lanes.data(), d, ka, kb, out + j, out_stride);
    }
  }
  for (; j < n; ++j) {
    ahead.fetch(j);
    const PlaneKey32<kPacked, kPdep> key{codes + j * code_bytes, code_bytes, planes};
    int a = 0;
    for (; a + 4 <= m; a += 4) dot32_tile_avx2<4>(lanes.data() + static_cast<int64_t>(a) * d, d, key, out + a * out_stride + j, out_stride);
    if (a < m) dot32_rest_avx2(m - a, lanes.data() + static_cast<int64_t>(a) * d, d, key, out + a * out_stride + j, out_stride);
  }
}

// 2-, 3- and 4-bit codes (kPacked = bits), coordinates [0, d32) of rows of head_dim d (d32 a
// multiple of 32; the caller takes any last 16), read from the packed rows: values, up to 4 queries
// per pass.
template <int kPacked, bool kPdep = false>
TURBOKV_TARGET_AVX2 void axpy_planes32_avx2(const float* w, int64_t w_stride, int m,
                                            const uint8_t* codes, int64_t code_bytes, int64_t n,
                                            const float* table, int d, float* acc, int d32) {
  __m256i planes[4];
  planes32_table(table, kPacked, planes);
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    for (int c = 0; c < d32; c += 32) {
      accumulate32_avx2<4>(w + a * w_stride, w_stride, n, PlaneValues32<kPacked, kPdep>{codes, code_bytes, c, planes}, d, c, acc + static_cast<int64_t>(a) * d);
    }
  }
  if (a == m) return;
  // The last 1-3 queries in one pass (GQA 3, 6, ...: one pass per query repeated the lookups).
  for (int c = 0; c < d32; c += 32) {
    const PlaneValues32<kPacked, kPdep> values{codes, code_bytes, c, planes};
    float* rest = acc + static_cast<int64_t>(a) * d;
    switch (m - a) {
      case 3: accumulate32_avx2<3>(w + a * w_stride, w_stride, n, values, d, c, rest); break;
      case 2: accumulate32_avx2<2>(w + a * w_stride, w_stride, n, values, d, c, rest); break;
      default: accumulate32_avx2<1>(w + a * w_stride, w_stride, n, values, d, c, rest); break;
    }
  }
}

// The byte planes of an antisymmetric table's magnitudes (planes_avx2_signed): plane[h][k] holds
// byte k of entries half + 16 h .. half + 16 h + 15, XORed with sub-table h - 1's (the staircase
// lookup XORs them back), in both 128-bit lanes.
struct SignedPlanes32 {
  __m256i plane[2][4];
};

TURBOKV_TARGET_AVX2 void signed_planes32_table(const float* table, int bits, SignedPlanes32* p) {
  const int half = 1 << (bits - 1);
  for (int h = 0; h < half / 16; ++h) {
    alignas(32) uint8_t bytes[4][32];
    for (int l = 0; l < 16; ++l) {
      uint32_t word, before = 0;
      std::memcpy(&word, table + half + 16 * h + l, 4);
      if (h > 0) std::memcpy(&before, table + half + 16 * (h - 1) + l, 4);
      for (int k = 0; k < 4; ++k) bytes[k][l] = bytes[k][l + 16] = static_cast<uint8_t>((word ^ before) >> (8 * k));
    }
    for (int k = 0; k < 4; ++k) p->plane[h][k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(bytes[k]));
  }
}

// Coordinates c..c+31 of a row of 5- or 6-bit codes (kBits) of an antisymmetric table, in
// to_lane_order32's order. The 32 indices are spread to bytes by pdep (spread_indices32); each is
// a sign (negative below half) and a magnitude m (index - half, or half - 1 - index). Sub-table
// h's planes are looked up at m - 16 h, which pshufb zeroes below 0 (bit 7 set) and reads at m's
// low nibble from 0 up, so the XOR of the staircase leaves entry m; the sign is bit 7 of byte 3.
// Same floats as the table: 4 pshufb per sub-table of 16 where the rows route spends a load (Zen
// 1-3) or a gather lane per index (kernel_choices_avx2.md, round 24).
template <int kBits>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void signed_planes32_avx2(const uint8_t* row, int c, int d,
                                                                                  const SignedPlanes32& p, __m256* v) {
  static_assert(kBits == 5 || kBits == 6, "one or two sub-tables of 16 magnitudes");
  constexpr int kTables = 1 << (kBits - 5), half = 16 * kTables;
  const __m256i idx = spread_indices32(row, c, kBits, d, spread_mask(kBits));
  const __m256i upper = _mm256_cmpgt_epi8(idx, _mm256_set1_epi8(half - 1));
  const __m256i m = _mm256_andnot_si256(_mm256_xor_si256(idx, upper), _mm256_set1_epi8(half - 1));
  __m256i b[4];
  for (int k = 0; k < 4; ++k) b[k] = _mm256_shuffle_epi8(p.plane[0][k], m);
  if constexpr (kTables == 2) {
    const __m256i step = _mm256_sub_epi8(m, _mm256_set1_epi8(16));
    for (int k = 0; k < 4; ++k) b[k] = _mm256_xor_si256(b[k], _mm256_shuffle_epi8(p.plane[1][k], step));
  }
  b[3] = _mm256_xor_si256(b[3], _mm256_andnot_si256(upper, _mm256_set1_epi8(static_cast<char>(0x80))));
  floats_from_planes32(b, v);
}

template <int kBits>
struct SignedPlaneKey32 {
  const uint8_t* key;
  int d;
  const SignedPlanes32* planes;
  TURBOKV_TARGET_AVX2 void operator()(int c, __m256* v) const { signed_planes32_avx2<kBits>(key, c, d, *planes, v); }
};
template <int kBits>
struct SignedPlaneValues32 {
  const uint8_t* codes;
  int64_t code_bytes;
  int c, d;
  const SignedPlanes32* planes;
  TURBOKV_TARGET_AVX2 void operator()(int64_t j, __m256* v) const { signed_planes32_avx2<kBits>(codes + j * code_bytes, c, d, *planes, v); }
};

// 5- and 6-bit codes of an antisymmetric table (planes_avx2_signed), head_dim a multiple of 32:
// the loops of dot_planes32_avx2 and axpy_planes32_avx2 (one template over both kinds of rows
// measured 1.01-1.05x the time of those at K4V4 on Zen 3, so each keeps its own).
template <int kBits>
TURBOKV_TARGET_AVX2 void dot_signed_planes32_avx2(const float* q, int m, const uint8_t* codes,
                                                  int64_t code_bytes, int64_t n, const float* table, int d,
                                                  float* out, int64_t out_stride, RowsAhead ahead) {
  SignedPlanes32 planes;
  signed_planes32_table(table, kBits, &planes);
  PermutedScratch lanes(static_cast<int64_t>(m) * d);
  to_lane_order32(q, m, d, lanes.data());
  int64_t j = 0;
  // Every line of the key kKeysAhead on, as the 5-8-bit rows kernels: K6V4 decode at 32K from
  // memory 0.90-0.95x the time at 4 queries per KV head, 0.96-1.00x at 1; K5V4 ~1.0x
  // (kernel_choices_avx2.md round 53).
  const RowsAhead own_rows{codes, code_bytes};
  if (m == 4) {  // keys two at a time (dot_two_keys_avx2)
    for (; j + 2 <= n; j += 2) {
      ahead.fetch(j);
      ahead.fetch(j + 1);
      own_rows.fetch_below(j + kKeysAhead, 2, n);
      const uint8_t* key = codes + j * code_bytes;
      const SignedPlaneKey32<kBits> ka{key, d, &planes}, kb{key + code_bytes, d, &planes};
      dot_two_keys_avx2<32>(lanes.data(), d, ka, kb, out + j, out_stride);
    }
  }
  for (; j < n; ++j) {
    ahead.fetch(j);
    own_rows.fetch_below(j + kKeysAhead, 1, n);
    const SignedPlaneKey32<kBits> key{codes + j * code_bytes, d, &planes};
    int a = 0;
    for (; a + 4 <= m; a += 4) dot32_tile_avx2<4>(lanes.data() + static_cast<int64_t>(a) * d, d, key, out + a * out_stride + j, out_stride);
    if (a < m) dot32_rest_avx2(m - a, lanes.data() + static_cast<int64_t>(a) * d, d, key, out + a * out_stride + j, out_stride);
  }
}

template <int kBits>
TURBOKV_TARGET_AVX2 void axpy_signed_planes32_avx2(const float* w, int64_t w_stride, int m,
                                                   const uint8_t* codes, int64_t code_bytes, int64_t n,
                                                   const float* table, int d, float* acc) {
  SignedPlanes32 planes;
  signed_planes32_table(table, kBits, &planes);
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    for (int c = 0; c < d; c += 32) {
      accumulate32_avx2<4>(w + a * w_stride, w_stride, n, SignedPlaneValues32<kBits>{codes, code_bytes, c, d, &planes}, d, c, acc + static_cast<int64_t>(a) * d);
    }
  }
  if (a == m) return;
  for (int c = 0; c < d; c += 32) {
    const SignedPlaneValues32<kBits> values{codes, code_bytes, c, d, &planes};
    float* rest = acc + static_cast<int64_t>(a) * d;
    switch (m - a) {
      case 3: accumulate32_avx2<3>(w + a * w_stride, w_stride, n, values, d, c, rest); break;
      case 2: accumulate32_avx2<2>(w + a * w_stride, w_stride, n, values, d, c, rest); break;
      default: accumulate32_avx2<1>(w + a * w_stride, w_stride, n, values, d, c, rest); break;
    }
  }
}

// The signed planes where planes_avx2_signed holds; false: not taken.
bool dot_signed_planes32(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                         const float* table, int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  if (!planes_avx2_signed(table, bits, d)) return false;
  (bits == 5 ? dot_signed_planes32_avx2<5> : dot_signed_planes32_avx2<6>)(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead);
  return true;
}

bool axpy_signed_planes32(const float* w, int64_t w_stride, int m, const uint8_t* codes, int64_t code_bytes,
                          int64_t n, const float* table, int bits, int d, float* acc) {
  if (!planes_avx2_signed(table, bits, d)) return false;
  (bits == 5 ? axpy_signed_planes32_avx2<5> : axpy_signed_planes32_avx2<6>)(w, w_stride, m, codes, code_bytes, n, table, d, acc);
  return true;
}

// Head_dims the 32-wide planes take: multiples of 32, and 16 more than one (48, 80, 112), whose
// last 16 coordinates the 16-wide planes look up.
inline bool planes32_fit(int d) { return d >= 32 && d % 16 == 0; }

// The 32-wide planes for 2, 3 and 4 bits (planes32_fit; the last 16 coordinates by
// PlaneKey32::last16, a float sum order of their own); false: not taken.
bool dot_planes32(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                  const float* table, int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  if (!planes32_fit(d)) return false;
  switch (bits) {
    case 4: dot_planes32_avx2<4>(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead); return true;
    case 2: dot_planes32_avx2<2>(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead); return true;
    case 3:
      (kPdepIsSlow ? dot_planes32_avx2<3, false> : dot_planes32_avx2<3, true>)(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead);
      return true;
    default: return false;
  }
}

// Coordinates [d - 16, d) of 2-, 3- or 4-bit values (kPacked) by the 16-wide planes (PlaneValues).
template <int kPacked>
TURBOKV_TARGET_AVX2 void axpy_last16_avx2(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                                          int64_t code_bytes, int64_t n, const float* table, int d, float* acc) {
  __m128i planes[4];
  float_byte_planes(table, kPacked, planes);
  const PlaneValues<kPacked> values{codes, code_bytes, d - 16, planes};
  int a = 0;
  for (; a + 4 <= m; a += 4) accumulate16_avx2<4>(w + a * w_stride, w_stride, n, values, d, d - 16, acc + static_cast<int64_t>(a) * d);
  float* const rest = acc + static_cast<int64_t>(a) * d;
  switch (m - a) {
    case 3: return accumulate16_avx2<3>(w + a * w_stride, w_stride, n, values, d, d - 16, rest);
    case 2: return accumulate16_avx2<2>(w + a * w_stride, w_stride, n, values, d, d - 16, rest);
    case 1: return accumulate16_avx2<1>(w + a * w_stride, w_stride, n, values, d, d - 16, rest);
    default: return;
  }
}

// The 32-wide planes for 2, 3 and 4 bits (planes32_fit; a last 16 coordinates by the 16-wide
// planes, whose coordinates sum over the tokens in the same order, so the same floats as 16-wide
// throughout; at head_dim 80 4-bit values took 17.7 ns per token against 14.4 at 96,
// kernel_choices_avx2.md round 29; 3 bits unpacked every row into a buffer there before round 30);
// false: not taken.
bool axpy_planes32(const float* w, int64_t w_stride, int m, const uint8_t* codes, int64_t code_bytes,
                   int64_t n, const float* table, int bits, int d, float* acc) {
  if (!planes32_fit(d) || bits < 2 || bits > 4) return false;
  const int d32 = d - d % 32;
  switch (bits) {
    case 4: axpy_planes32_avx2<4>(w, w_stride, m, codes, code_bytes, n, table, d, acc, d32); break;
    case 2: axpy_planes32_avx2<2>(w, w_stride, m, codes, code_bytes, n, table, d, acc, d32); break;
    default:
      (kPdepIsSlow ? axpy_planes32_avx2<3, false> : axpy_planes32_avx2<3, true>)(w, w_stride, m, codes, code_bytes, n, table, d, acc, d32);
  }
  if (d32 < d) {
    (bits == 4 ? axpy_last16_avx2<4> : bits == 2 ? axpy_last16_avx2<2> : axpy_last16_avx2<3>)(w, w_stride, m, codes, code_bytes, n, table, d, acc);
  }
  return true;
}

// Values of at most 4 bits by byte planes (PlaneValues): the permute pair and blend per 8
// coordinates were the bottleneck on Zen 1 (4-bit values 176 -> 109 cycles per token for 4
// queries). Sums in the same order as the other AVX2 kernels.
template <int kPacked, int kTile>
TURBOKV_TARGET_AVX2 void axpy_planes_tile_avx2(const float* w, int64_t w_stride, int d,
                                               const uint8_t* indices, int64_t stride, int64_t n,
                                               const __m128i* planes, float* acc) {
  for (int c = 0; c < d; c += 16) {
    accumulate16_avx2<kTile>(w, w_stride, n, PlaneValues<kPacked>{indices, stride, c, planes}, d, c, acc);
  }
}

template <int kTile>
TURBOKV_TARGET_AVX2 void axpy_planes_tiles_avx2(int packed, const float* w, int64_t w_stride, int d,
                                                const uint8_t* indices, int64_t stride, int64_t n,
                                                const __m128i* planes, float* acc) {
  switch (packed) {
    case 4: return axpy_planes_tile_avx2<4, kTile>(w, w_stride, d, indices, stride, n, planes, acc);
    case 2: return axpy_planes_tile_avx2<2, kTile>(w, w_stride, d, indices, stride, n, planes, acc);
    case 1: return axpy_planes_tile_avx2<1, kTile>(w, w_stride, d, indices, stride, n, planes, acc);
    default: return axpy_planes_tile_avx2<0, kTile>(w, w_stride, d, indices, stride, n, planes, acc);
  }
}

// head_dim a multiple of 16, bits <= 4: 1-, 2- and 4-bit codes straight from the packed bytes
// (whole bytes per 16 coordinates), 3-bit ones unpacked to index bytes first.
TURBOKV_TARGET_AVX2 void axpy_planes_avx2(const float* w, int64_t w_stride, int m,
                                          const uint8_t* codes, int64_t code_bytes, int64_t n,
                                          const float* table, int bits, int d, float* acc) {
  if (axpy_planes32(w, w_stride, m, codes, code_bytes, n, table, bits, d, acc)) return;
  const int packed = bits == 3 ? 0 : bits;
  __m128i planes[4];
  float_byte_planes(table, packed, planes);
  std::vector<uint8_t> idx(packed ? 0 : static_cast<size_t>(n * d));
  if (!packed) {
    const UnpackFn unpack = select_unpack(SimdLevel::kAvx2);
    for (int64_t j = 0; j < n; ++j) unpack(codes + j * code_bytes, d, bits, idx.data() + j * d);
  }
  const uint8_t* indices = packed ? codes : idx.data();
  const int64_t stride = packed ? code_bytes : d;
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    axpy_planes_tiles_avx2<4>(packed, w + a * w_stride, w_stride, d, indices, stride, n, planes, acc + static_cast<int64_t>(a) * d);
  }
  float* const rest = acc + static_cast<int64_t>(a) * d;
  switch (m - a) {  // the last 1-3 queries in one pass, as axpy_planes32_avx2
    case 3: return axpy_planes_tiles_avx2<3>(packed, w + a * w_stride, w_stride, d, indices, stride, n, planes, rest);
    case 2: return axpy_planes_tiles_avx2<2>(packed, w + a * w_stride, w_stride, d, indices, stride, n, planes, rest);
    case 1: return axpy_planes_tiles_avx2<1>(packed, w + a * w_stride, w_stride, d, indices, stride, n, planes, rest);
    default: return;
  }
}

// Key j of a PlaneValues stream, by columns.
template <int kPacked>
struct PlaneKey {
  const uint8_t* indices;
  int64_t stride, j;
  const __m128i* planes;
  TURBOKV_TARGET_AVX2 void operator()(int c, __m256& v0, __m256& v1) const {
    PlaneValues<kPacked>{indices, stride, c, planes}(j, v0, v1);
  }
};

// All keys for m queries; kPacked as in PlaneValues (0: each key unpacked first).
template <int kPacked>
TURBOKV_TARGET_AVX2 void dot_planes_keys_avx2(const float* q, int m, const uint8_t* codes,
                                              int64_t code_bytes, int64_t n, const __m128i* planes,
                                              int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  const UnpackFn unpack = select_unpack(SimdLevel::kAvx2);
  std::vector<uint8_t> idx(kPacked ? 0 : static_cast<size_t>(d));
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
    // Packed: key j at codes + j * code_bytes; unpacked: the one key in idx (stride 0).
    if (!kPacked) unpack(codes + j * code_bytes, d, bits, idx.data());
    const uint8_t* indices = kPacked ? codes : idx.data();
    const int64_t stride = kPacked ? code_bytes : 0, key = kPacked ? j : 0;
    const PlaneKey<kPacked> values{indices, stride, key, planes};
    int a = 0;
    for (; a + 4 <= m; a += 4) dot16_tile_avx2<4>(q + static_cast<int64_t>(a) * d, d, values, out + a * out_stride + j, out_stride);
    if (a < m) dot16_rest_avx2(m - a, q + static_cast<int64_t>(a) * d, d, values, out + a * out_stride + j, out_stride);
  }
}

// 2- and 3-bit codes looked up 8 at a time by vpermps, where a lane-crossing permute is one fast
// operation (not Zen 1, kLaneSwapIsSlow; round 9 dropped vpermps lane kernels there): 8 codes are
// kBits row bytes, read as one dword, broadcast, shifted apart per lane (vpsrlvd by kBits e) and
// looked up in the 8-float table (vpermps reads the low 3 bits of each lane; 2 bits: the 4
// centroids repeated). No unpack, 2 vector operations per 8 coordinates, where the byte planes
// spend 4 pshufb and their unpacks per 16 (and at 3 bits a pdep per 8). Zen 4 at the AVX2 level
// (kernel_choices_avx2.md, round 39), 4 queries, d = 128: values (BM_GroupValues) 2 bits 65.0 ->
// 44.6 us, 3 bits 67.4 -> 44.2; scores (BM_GroupScores) 2 bits 81.6 -> 73.7, 3 bits 90.5 -> 72.6
// (one query 0.80-0.82x). 4-bit codes keep the planes (two vpermps and a blend: values 0.95x the
// kernel, decode 0.98-1.01x; scores 1.03x). Zen 2/3 and Intel take these routes unmeasured.
template <int kBits>
struct PermuteLookup {
  static_assert(kBits == 2 || kBits == 3, "2- and 3-bit codes");
  __m256 table;
  __m256i shift;
  TURBOKV_TARGET_AVX2 explicit PermuteLookup(const float* centroids) {
    alignas(32) float entries[8];
    for (int e = 0; e < 8; ++e) entries[e] = centroids[e % (1 << kBits)];
    table = _mm256_load_ps(entries);
    shift = _mm256_setr_epi32(0, kBits, 2 * kBits, 3 * kBits, 4 * kBits, 5 * kBits, 6 * kBits, 7 * kBits);
  }
  // The centroids of codes 8 g .. 8 g + 7 of a row of row_bytes bytes.
  TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline __m256 group(const uint8_t* row, int64_t row_bytes, int g) const {
    uint32_t w;
    if (__builtin_expect(kBits * g + 4 <= row_bytes, 1)) {
      std::memcpy(&w, row + kBits * g, 4);
    } else {  // the row's last group: the 4 bytes that end with it
      std::memcpy(&w, row + kBits * g + kBits - 4, 4);
      w >>= 8 * (4 - kBits);
    }
    return _mm256_permutevar8x32_ps(table, _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(w)), shift));
  }
};

// Shapes the vpermps routes take (where lane swaps are fast: the level passes !kLaneSwapIsSlow).
inline bool permutes_fit(int bits, int d) { return (bits == 2 || bits == 3) && d % 16 == 0; }

// Coordinates c .. c + 15 of one key, for dot16_tile_avx2.
template <int kBits>
struct PermuteKey {
  const uint8_t* row;
  int64_t row_bytes;
  const PermuteLookup<kBits>& lookup;
  TURBOKV_TARGET_AVX2 void operator()(int c, __m256& v0, __m256& v1) const {
    v0 = lookup.group(row, row_bytes, c / 8);
    v1 = lookup.group(row, row_bytes, c / 8 + 1);
  }
};

// Coordinates c .. c + 15 of value j, for accumulate16_avx2.
template <int kBits>
struct PermuteValues {
  const uint8_t* codes;
  int64_t code_bytes;
  int c;
  const PermuteLookup<kBits>& lookup;
  TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void operator()(int64_t j, __m256& v0, __m256& v1) const {
    const uint8_t* row = codes + j * code_bytes;
    v0 = lookup.group(row, code_bytes, c / 8);
    v1 = lookup.group(row, code_bytes, c / 8 + 1);
  }
};

// Scores of 2- and 3-bit keys (permutes_fit).
template <int kBits>
TURBOKV_TARGET_AVX2 void dot_permutes_avx2(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                                           const float* table, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  const PermuteLookup<kBits> lookup(table);
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
    const PermuteKey<kBits> values{codes + j * code_bytes, code_bytes, lookup};
    int a = 0;
    for (; a + 4 <= m; a += 4) dot16_tile_avx2<4>(q + static_cast<int64_t>(a) * d, d, values, out + a * out_stride + j, out_stride);
    if (a < m) dot16_rest_avx2(m - a, q + static_cast<int64_t>(a) * d, d, values, out + a * out_stride + j, out_stride);
  }
}

// Values of 2- and 3-bit codes (permutes_fit): kTile queries' sums of 16 coordinates in registers
// across every token, as axpy_rows_tile_avx2.
template <int kBits, int kTile>
TURBOKV_TARGET_AVX2 void axpy_permutes_tile_avx2(const float* w, int64_t w_stride, const uint8_t* codes,
                                                 int64_t code_bytes, int64_t n, const PermuteLookup<kBits>& lookup,
                                                 int d, float* acc) {
  for (int c = 0; c < d; c += 16) {
    accumulate16_avx2<kTile>(w, w_stride, n, PermuteValues<kBits>{codes, code_bytes, c, lookup}, d, c, acc);
  }
}

template <int kBits>
TURBOKV_TARGET_AVX2 void axpy_permutes_avx2(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                                            int64_t code_bytes, int64_t n, const float* table, int d, float* acc) {
  const PermuteLookup<kBits> lookup(table);
  for (int a = 0; a < m; a += 4) {
    const float* wa = w + a * w_stride;
    float* acc_a = acc + static_cast<int64_t>(a) * d;
    switch (std::min(4, m - a)) {
      case 4: axpy_permutes_tile_avx2<kBits, 4>(wa, w_stride, codes, code_bytes, n, lookup, d, acc_a); break;
      case 3: axpy_permutes_tile_avx2<kBits, 3>(wa, w_stride, codes, code_bytes, n, lookup, d, acc_a); break;
      case 2: axpy_permutes_tile_avx2<kBits, 2>(wa, w_stride, codes, code_bytes, n, lookup, d, acc_a); break;
      default: axpy_permutes_tile_avx2<kBits, 1>(wa, w_stride, codes, code_bytes, n, lookup, d, acc_a); break;
    }
  }
}

// head_dim a multiple of 16, bits <= 4: 1-, 2- and 4-bit codes straight from the packed bytes,
// 3-bit ones unpacked per key.
TURBOKV_TARGET_AVX2 void dot_planes_avx2(const float* q, int m, const uint8_t* codes,
                                         int64_t code_bytes, int64_t n, const float* table,
                                         int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  if (dot_planes32(q, m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead)) return;
  const int packed = bits == 3 ? 0 : bits;
  __m128i planes[4];
  float_byte_planes(table, packed, planes);
  switch (packed) {
    case 4: return dot_planes_keys_avx2<4>(q, m, codes, code_bytes, n, planes, bits, d, out, out_stride, ahead);
    case 2: return dot_planes_keys_avx2<2>(q, m, codes, code_bytes, n, planes, bits, d, out, out_stride, ahead);
    case 1: return dot_planes_keys_avx2<1>(q, m, codes, code_bytes, n, planes, bits, d, out, out_stride, ahead);
    default: return dot_planes_keys_avx2<0>(q, m, codes, code_bytes, n, planes, bits, d, out, out_stride, ahead);
  }
}

// Widths the byte planes do not take (5-8 bits; 3 bits of one query; head_dim not a multiple of
// 16): each key is unpacked and looked up once into d floats that every query then reads (the
// generic route gathers the table again for each query: 8-bit scores for 8 queries cost 7.4x
// those for one).
TURBOKV_TARGET_AVX2 void lookup_row_avx2(const uint8_t* idx, const float* table, int bits, int d,
                                         float* row) {
  int i = 0;
  for (; i + 8 <= d; i += 8) _mm256_storeu_ps(row + i, gather8(table, idx + i, bits));
  for (; i < d; ++i) row[i] = table[idx[i]];
}

// Up to 4 queries against one looked-up row, each with its own accumulator: 4 independent FMA
// chains (one query at a time was a chain of d / 8 dependent FMAs per query).
template <int kTile>
TURBOKV_TARGET_AVX2 void dot_row_tile_avx2(const float* q, int d, const float* row, float* out,
                                           int64_t out_stride) {
  __m256 acc[kTile];
  for (int a = 0; a < kTile; ++a) acc[a] = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= d; i += 8) {
    const __m256 r = _mm256_loadu_ps(row + i);
    for (int a = 0; a < kTile; ++a) acc[a] = _mm256_fmadd_ps(_mm256_loadu_ps(q + a * d + i), r, acc[a]);
  }
  for (int a = 0; a < kTile; ++a) {
    float sum = horizontal_sum(acc[a]);
    for (int t = i; t < d; ++t) sum += q[a * d + t] * row[t];
    out[a * out_stride] = sum;
  }
}

// How 8 indices are looked up, decided once per call (lookup8_route_for): the scalar loads of
// 5-8-bit tables where gathers are slow (lookup8_loads), a gather for the other 5-8-bit tables
// (lookup8_gather), permutes up to 4 bits (gather8). Branching per lookup instead cost 8-bit
// scores 52 against 44 ns per key for 4 queries on Zen 3 (kernel_choices_avx2.md, round 14).
enum class Lookup8 { kLoads, kGather, kPermutes };

inline Lookup8 lookup8_route_for(int bits) {
  if (bits <= 4) return Lookup8::kPermutes;
  return kGathersAreSlow ? Lookup8::kLoads : Lookup8::kGather;
}

template <Lookup8 kRoute>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline __m256 lookup8_route(const float* table,
                                                                             const uint8_t* idx, int bits) {
  if constexpr (kRoute == Lookup8::kLoads) {
    return lookup8_loads(table, idx);
  } else if constexpr (kRoute == Lookup8::kGather) {
    return lookup8_gather(table, idx);
  } else {
    return gather8(table, idx, bits);
  }
}

// One key's indices looked up by columns of 16, for dot16_tile_avx2.
template <Lookup8 kRoute>
struct LookupKey {
  const uint8_t* idx;
  const float* table;
  int bits;
  TURBOKV_TARGET_AVX2 void operator()(int c, __m256& v0, __m256& v1) const {
    v0 = lookup8_route<kRoute>(table, idx + c, bits);
    v1 = lookup8_route<kRoute>(table, idx + c + 8, bits);
  }
};

// One 5-7-bit key's packed codes looked up by columns of 16 without unpacking the key first
// (spread_indices, avx2_helpers.hpp).
template <Lookup8 kRoute>
struct SpreadKey {
  const uint8_t* key;
  const float* table;
  int bits, d;
  uint64_t mask;
  TURBOKV_TARGET_AVX2 uint64_t indices(int c) const { return spread_indices(key, c, bits, d, mask); }
  TURBOKV_TARGET_AVX2 void operator()(int c, __m256& v0, __m256& v1) const {
    static_assert(kRoute != Lookup8::kPermutes, "5-7-bit tables take loads or a gather");
    if constexpr (kRoute == Lookup8::kLoads) {
      v0 = lookup8_loads_word(table, indices(c));
      v1 = lookup8_loads_word(table, indices(c + 8));
    } else {
      v0 = lookup8_gather_word(table, indices(c));
      v1 = lookup8_gather_word(table, indices(c + 8));
    }
  }
};

// 4 queries on keys 0 .. n - n % 2, two at a time (dot_two_keys_avx2), 8-bit ones in place or
// 5-7-bit ones spread from their packed bytes, by gathers (cores where they are fast; unmeasured
// there); returns the keys done. Measured on Zen 3's loads in round 25 (see dot_two_keys_avx2),
// which now take the broadcast lookups instead.
TURBOKV_TARGET_AVX2 int64_t dot_key_pairs_avx2(const float* q, const uint8_t* codes, int64_t code_bytes, int64_t n,
                                               const float* table, int bits, int d, bool spread, float* out,
                                               int64_t out_stride, RowsAhead ahead) {
  const uint64_t mask = spread_mask(bits);
  // Every line of the keys kKeysAhead on (7-8-bit rows span two lines): K8V4 and K7V4 decode at
  // 32K from memory 0.96-0.97x the time, both A/B orders (kernel_choices_avx2.md round 53).
  const RowsAhead own_rows{codes, code_bytes};
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) {
    ahead.fetch(j);
    ahead.fetch(j + 1);
    own_rows.fetch_below(j + kKeysAhead, 2, n);
    const uint8_t* key = codes + j * code_bytes;
    if (spread) {
      using Key = SpreadKey<Lookup8::kGather>;
      dot_two_keys_avx2<16>(q, d, Key{key, table, bits, d, mask}, Key{key + code_bytes, table, bits, d, mask}, out + j,
                            out_stride);
    } else {
      using Key = LookupKey<Lookup8::kGather>;
      dot_two_keys_avx2<16>(q, d, Key{key, table, bits}, Key{key + code_bytes, table, bits}, out + j, out_stride);
    }
  }
  return j;
}

// Scores of keys 0 .. n - n % 8 by broadcast lookups where broadcast_fits; returns the keys done.
template <int kLanes>
TURBOKV_TARGET_AVX2 int64_t dot_broadcast_keys(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                                               const float* table, int bits, int d, float* out, int64_t out_stride,
                                               RowsAhead ahead) {
  std::vector<float> qt(static_cast<size_t>(kLanes * d));
  interleave_rows<kLanes>(q, d, m, d, qt.data());
  const InPlaceWords in_place{codes, code_bytes};
  const SpreadWords spread{codes, code_bytes, bits, d, spread_mask(bits)};
  // Every line of keys kKeysAhead on, as the other 5-8-bit kernels: K8V4 decode at 32K with
  // TURBOKV_GATHERS=slow on the model-167 VM 0.95x the time both A/B orders, K7V4 and 8 queries
  // per KV head 0.98x (kernel_choices_avx2.md round 53; unmeasured on Zen).
  const RowsAhead own_rows{codes, code_bytes};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int k = 0; k < 8; ++k) ahead.fetch(j + k);
    own_rows.fetch_below(j + kKeysAhead, 8, n);
    if (bits == 8) {
      dot_eight_keys_broadcast<kLanes>(qt.data(), m, d, table, in_place, j, out, out_stride);
    } else {
      dot_eight_keys_broadcast<kLanes>(qt.data(), m, d, table, spread, j, out, out_stride);
    }
  }
  return j;
}

TURBOKV_TARGET_AVX2 int64_t dot_broadcast_rows(const float* q, int m, const uint8_t* codes, int64_t code_bytes,
                                               int64_t n, const float* table, int bits, int d, float* out,
                                               int64_t out_stride, RowsAhead ahead) {
  if (!broadcast_fits(m, bits, d)) return 0;
  return (m <= 4 ? dot_broadcast_keys<4> : dot_broadcast_keys<8>)(q, m, codes, code_bytes, n, table, bits, d, out,
                                                                  out_stride, ahead);
}

// Values of 5-8 queries by broadcast lookups where broadcast_fits (7-8-bit values: 5- and 6-bit
// ones keep their signed planes, 1.05x and 0.95x the time by broadcasts); false: not taken. Zen
// 3, one thread, 32K, against tiles of 4 queries and the rest on the loads (kernel_choices round
// 26): K2V8 0.80-0.81x the time at 5, 7 and 8 queries per KV head, K2V7 0.82x at 7.
TURBOKV_TARGET_AVX2 bool axpy_broadcast_rows(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                                             int64_t code_bytes, int64_t n, const float* table, int bits, int d,
                                             float* acc) {
  if (m <= 4 || !broadcast_fits(m, bits, d)) return false;
  std::vector<float> wt(static_cast<size_t>(8 * n));
  interleave_rows<8>(w, w_stride, m, n, wt.data());
  if (bits == 8) {
    axpy_eight_queries_broadcast(wt.data(), m, n, InPlaceWords{codes, code_bytes}, table, d, acc);
  } else {
    axpy_eight_queries_broadcast(wt.data(), m, n, SpreadWords{codes, code_bytes, bits, d, spread_mask(bits)}, table, d, acc);
  }
  return true;
}

TURBOKV_TARGET_AVX2 void dot_packed_rows_avx2(const float* q, int m, const uint8_t* codes,
                                              int64_t code_bytes, int64_t n, const float* table,
                                              int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  // Up to 4 queries and head_dim a multiple of 16: the looked-up columns go straight into the
  // FMAs (dot16_tile_avx2), no row buffer, two chains per query. Zen 1, 8-bit keys of 4 queries:
  // 273 -> 175 cycles per key; K8V4 decode at 32K on one thread 32-45 -> 22-35 ms in 7
  // interleaved pairs. More queries keep the row, which every tile of 4 then reads.
  const bool fused = m <= 4 && d % 16 == 0;
  std::vector<uint8_t> idx(static_cast<size_t>(d));
  std::vector<float> row(fused ? 0 : static_cast<size_t>(d));
  const UnpackFn unpack = select_unpack(SimdLevel::kAvx2);
  const Lookup8 route = lookup8_route_for(bits);
  // 5-7-bit keys read from their packed bytes where pdep is fast (SpreadKey).
  const bool spread = fused && spread_fits(bits, d);
  const uint64_t mask = spread_mask(bits);
  // Where gathers are slow, 8 keys at a time by broadcast lookups (broadcast_fits); elsewhere 4
  // queries take keys in place two at a time.
  int64_t j = dot_broadcast_rows(q, m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead);
  if (j == 0 && fused && m == 4 && (bits == 8 || spread) && route == Lookup8::kGather) {
    j = dot_key_pairs_avx2(q, codes, code_bytes, n, table, bits, d, spread, out, out_stride, ahead);
  }
  // Every line of the key kKeysAhead on. One query per KV head (Phi-2's 32/32 heads), K8V4 decode
  // at 32K from memory: 0.51x the time, K7V4 0.89x, K5V4 1.00x (kernel_choices_avx2.md round 53).
  const RowsAhead own_rows{codes, code_bytes};
  for (; j < n; ++j) {
    ahead.fetch(j);
    own_rows.fetch_below(j + kKeysAhead, 1, n);
    const uint8_t* key = codes + j * code_bytes;
    if (spread) {
      if (route == Lookup8::kLoads) {
        dot16_rest_avx2(m, q, d, SpreadKey<Lookup8::kLoads>{key, table, bits, d, mask}, out + j, out_stride);
      } else {
        dot16_rest_avx2(m, q, d, SpreadKey<Lookup8::kGather>{key, table, bits, d, mask}, out + j, out_stride);
      }
      continue;
    }
    if (bits != 8) {  // 8-bit codes are already one index per byte
      unpack(key, d, bits, idx.data());
      key = idx.data();
    }
    if (fused) {
      switch (route) {
        case Lookup8::kLoads: dot16_rest_avx2(m, q, d, LookupKey<Lookup8::kLoads>{key, table, bits}, out + j, out_stride); break;
        case Lookup8::kGather: dot16_rest_avx2(m, q, d, LookupKey<Lookup8::kGather>{key, table, bits}, out + j, out_stride); break;
        case Lookup8::kPermutes: dot16_rest_avx2(m, q, d, LookupKey<Lookup8::kPermutes>{key, table, bits}, out + j, out_stride); break;
      }
      continue;
    }
    lookup_row_avx2(key, table, bits, d, row.data());
    int a = 0;
    for (; a + 4 <= m; a += 4) dot_row_tile_avx2<4>(q + static_cast<int64_t>(a) * d, d, row.data(), out + a * out_stride + j, out_stride);
    for (; a < m; ++a) dot_row_tile_avx2<1>(q + static_cast<int64_t>(a) * d, d, row.data(), out + a * out_stride + j, out_stride);
  }
}

// Coordinates i..i+15 of unpacked key j, looked up in the table (lookup8_route).
template <Lookup8 kRoute>
struct RowValues {
  const uint8_t* idx;
  int d, i;
  const float* table;
  int bits;
  TURBOKV_TARGET_AVX2 void operator()(int64_t j, __m256& v0, __m256& v1) const {
    const uint8_t* key = idx + j * d + i;
    v0 = lookup8_route<kRoute>(table, key, bits);
    v1 = lookup8_route<kRoute>(table, key + 8, bits);
  }
};

// Coordinates i..i+15 of packed 5-7-bit key j, read by SpreadKey.
template <Lookup8 kRoute>
struct SpreadValues {
  const uint8_t* codes;
  int64_t code_bytes;
  int d, i;
  const float* table;
  int bits;
  uint64_t mask;
  TURBOKV_TARGET_AVX2 void operator()(int64_t j, __m256& v0, __m256& v1) const {
    SpreadKey<kRoute>{codes + j * code_bytes, table, bits, d, mask}(i, v0, v1);
  }
};

// Values of 5-7-bit codes where spread_fits: as axpy_rows_tile_avx2, each key's columns read from
// its packed bytes, so no unpacked copy of the block (n x d bytes) is written and read back.
template <int kTile>
TURBOKV_TARGET_AVX2 void axpy_spread_tile_avx2(const float* w, int64_t w_stride, const uint8_t* codes,
                                               int64_t code_bytes, int64_t n, const float* table, int bits,
                                               int d, float* acc) {
  const uint64_t mask = spread_mask(bits);
  const bool by_loads = lookup8_route_for(bits) == Lookup8::kLoads;
  for (int i = 0; i < d; i += 16) {
    if (by_loads) {
      accumulate16_avx2<kTile>(w, w_stride, n, SpreadValues<Lookup8::kLoads>{codes, code_bytes, d, i, table, bits, mask}, d, i, acc);
    } else {
      accumulate16_avx2<kTile>(w, w_stride, n, SpreadValues<Lookup8::kGather>{codes, code_bytes, d, i, table, bits, mask}, d, i, acc);
    }
  }
}

// Values: all keys are unpacked first, then each 16-coordinate column keeps the accumulators of
// up to 4 queries in registers across every key (accumulating in memory, key by key, cost 2x).
template <int kTile>
TURBOKV_TARGET_AVX2 void axpy_rows_tile_avx2(const float* w, int64_t w_stride, const uint8_t* idx,
                                             int64_t n, const float* table, int bits, int d,
                                             float* acc) {
  int i = 0;
  const Lookup8 route = lookup8_route_for(bits);
  for (; i + 16 <= d; i += 16) {
    switch (route) {
      case Lookup8::kLoads: accumulate16_avx2<kTile>(w, w_stride, n, RowValues<Lookup8::kLoads>{idx, d, i, table, bits}, d, i, acc); break;
      case Lookup8::kGather: accumulate16_avx2<kTile>(w, w_stride, n, RowValues<Lookup8::kGather>{idx, d, i, table, bits}, d, i, acc); break;
      case Lookup8::kPermutes: accumulate16_avx2<kTile>(w, w_stride, n, RowValues<Lookup8::kPermutes>{idx, d, i, table, bits}, d, i, acc); break;
    }
  }
  for (; i < d; ++i) {
    for (int a = 0; a < kTile; ++a) {
      float sum = acc[a * d + i];
      for (int64_t j = 0; j < n; ++j) sum += w[a * w_stride + j] * table[idx[j * d + i]];
      acc[a * d + i] = sum;
    }
  }
}

TURBOKV_TARGET_AVX2 void axpy_packed_rows_avx2(const float* w, int64_t w_stride, int m,
                                               const uint8_t* codes, int64_t code_bytes, int64_t n,
                                               const float* table, int bits, int d, float* acc) {
  if (spread_fits(bits, d)) {
    int a = 0;
    for (; a + 4 <= m; a += 4) axpy_spread_tile_avx2<4>(w + a * w_stride, w_stride, codes, code_bytes, n, table, bits, d, acc + static_cast<int64_t>(a) * d);
    float* const rest = acc + static_cast<int64_t>(a) * d;
    switch (m - a) {  // the last 1-3 queries in one pass
      case 3: return axpy_spread_tile_avx2<3>(w + a * w_stride, w_stride, codes, code_bytes, n, table, bits, d, rest);
      case 2: return axpy_spread_tile_avx2<2>(w + a * w_stride, w_stride, codes, code_bytes, n, table, bits, d, rest);
      case 1: return axpy_spread_tile_avx2<1>(w + a * w_stride, w_stride, codes, code_bytes, n, table, bits, d, rest);
      default: return;
    }
  }
  const UnpackFn unpack = select_unpack(SimdLevel::kAvx2);
  // 8-bit codes of whole 8-byte groups in rows of d bytes are the indices already: no copy.
  // (A padded stride, code_bytes > d, is copied: the tiles step through indices by d.)
  const bool in_place = bits == 8 && d % 8 == 0 && code_bytes == d;
  std::vector<uint8_t> idx(in_place ? 0 : static_cast<size_t>(n * d) + 8);  // + 8: a tail's 8-byte loads
  if (!in_place) {
    for (int64_t j = 0; j < n; ++j) unpack(codes + j * code_bytes, d, bits, idx.data() + j * d);
  }
  const uint8_t* indices = in_place ? codes : idx.data();
  int a = 0;
  for (; a + 4 <= m; a += 4) axpy_rows_tile_avx2<4>(w + a * w_stride, w_stride, indices, n, table, bits, d, acc + static_cast<int64_t>(a) * d);
  float* const rest = acc + static_cast<int64_t>(a) * d;
  switch (m - a) {  // the last 1-3 queries in one pass, as axpy_planes32_avx2
    case 3: return axpy_rows_tile_avx2<3>(w + a * w_stride, w_stride, indices, n, table, bits, d, rest);
    case 2: return axpy_rows_tile_avx2<2>(w + a * w_stride, w_stride, indices, n, table, bits, d, rest);
    case 1: return axpy_rows_tile_avx2<1>(w + a * w_stride, w_stride, indices, n, table, bits, d, rest);
    default: return;
  }
}

// permutes: whether 2- and 3-bit keys take the vpermps route (the level: !kLaneSwapIsSlow; tests: both).
void dot_packed_avx2_with(bool permutes, const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                          const float* table, int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  // Byte planes (dot_planes_avx2) at 1-4 bits with head_dim a multiple of 16, except 3-bit keys
  // of one query at head_dim 16. Zen 1, cycles per key for 4 queries
  // against the lane kernels they replaced: 1 bit 218 -> 140, 2 bits 213 -> 137, 3 bits 300 ->
  // 170, 4 bits 216 -> 131; one query at 2 bits 116 -> 77, at 4 bits 129 -> 75 (3 bits: 162 ->
  // 136-176 on the 16-wide planes, so those keep the rows route). 2, 3 and 4 bits with head_dim a
  // multiple of 32 go 32 coordinates per step (dot_planes32), 3-bit keys of one query too since
  // they are read from the packed rows: K3V3 decode with 8 query / 8 KV heads 0.76-0.90x the time
  // of the rows route, which unpacks each key (kernel_choices_avx2.md, round 21); 2 and 4 bits at
  // head_dims 48, 80, 112 too, the last 16 by the 16-wide planes (round 30: K4V4 decode at 80 0.84x).
  if (permutes && permutes_fit(bits, d)) {
    return (bits == 2 ? dot_permutes_avx2<2> : dot_permutes_avx2<3>)(q, m, codes, code_bytes, n, table, d, out,
                                                                    out_stride, ahead);
  }
  if (bits <= 4 && d % 16 == 0 && (m > 1 || bits != 3 || planes32_fit(d))) {
    return dot_planes_avx2(q, m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead);
  }
  // 5- and 6-bit codes of an antisymmetric table (every codebook) by its magnitudes' byte planes,
  // up to 4 queries where the broadcast lookups fit (the planes repeat their lookups per 4 queries).
  const bool planes = m <= 4 || !broadcast_fits(m, bits, d);
  if (planes && dot_signed_planes32(q, m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead)) return;
  // The rows route, fused for one query too when head_dim is a multiple of 16 (one query, d =
  // 128: 8 bits 152-179 -> 121-141, 3 bits 139-148 -> 126-131 cycles per key against the
  // generic route).
  if (m > 1 || d % 16 == 0) return dot_packed_rows_avx2(q, m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead);
  dot_packed_generic(select_dot_lookup(SimdLevel::kAvx2), select_unpack(SimdLevel::kAvx2), q, m,
                     codes, code_bytes, n, table, bits, d, out, out_stride, ahead);
}

// permutes: whether 2- and 3-bit values take the vpermps route (as dot_packed_avx2_with).
void axpy_packed_avx2_with(bool permutes, const float* w, int64_t w_stride, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const float* table, int bits, int d, float* acc) {
  // Up to 4 bits and head_dim a multiple of 16: byte-plane lookups (axpy_planes_avx2), which
  // replaced the lane kernels (Zen 1, 4 queries, cycles per token: 1 bit 158 -> 122, 2 bits 161
  // -> 117, 3 bits 196 -> 144, 4 bits 176 -> 103; 2 and 4 bits with head_dim a multiple of 32,
  // or 16 more, since 32 coordinates per step, axpy_planes32). Other shapes: several queries share each
  // key's lookups on the rows route.
  if (permutes && permutes_fit(bits, d)) {
    return (bits == 2 ? axpy_permutes_avx2<2> : axpy_permutes_avx2<3>)(w, w_stride, m, codes, code_bytes, n, table, d, acc);
  }
  if (bits <= 4 && d % 16 == 0) return axpy_planes_avx2(w, w_stride, m, codes, code_bytes, n, table, bits, d, acc);
  if (axpy_signed_planes32(w, w_stride, m, codes, code_bytes, n, table, bits, d, acc)) return;
  if (axpy_broadcast_rows(w, w_stride, m, codes, code_bytes, n, table, bits, d, acc)) return;
  if (m > 1) return axpy_packed_rows_avx2(w, w_stride, m, codes, code_bytes, n, table, bits, d, acc);
  axpy_packed_generic(select_axpy_lookup(SimdLevel::kAvx2), select_unpack(SimdLevel::kAvx2), w,
                      w_stride, m, codes, code_bytes, n, table, bits, d, acc);
}

void dot_packed_avx2(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                     const float* table, int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  dot_packed_avx2_with(!kLaneSwapIsSlow, q, m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead);
}

void axpy_packed_avx2(const float* w, int64_t w_stride, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                      const float* table, int bits, int d, float* acc) {
  axpy_packed_avx2_with(!kLaneSwapIsSlow, w, w_stride, m, codes, code_bytes, n, table, bits, d, acc);
}

// For b in {1, 2, 4} a byte holds 8/b whole indices. Loading 16 code bytes into 16 int32 lanes
// and shifting by s*b puts index (8/b)*byte + s in the low bits of each lane; vpermps reads only
// the low 4 bits, so a 16-entry table that repeats the 2^b centroids (t[j] = c[j mod 2^b]) gives
// the centroid with no masking. The query is permuted once into the same lane order.
// 16 code bytes as 16 int32 lanes. Masked byte loads are slow on some cores: only a partial
// last chunk uses one.
TURBOKV_TARGET_AVX512 __m512i load_chunk(const uint8_t* key, int g, int chunks, int last_bytes,
                                         __mmask16 last_mask) {
  const __m128i raw = (g + 1 < chunks || last_bytes == 16)
                          ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(key + 16 * g))
                          : _mm_maskz_loadu_epi8(last_mask, key + 16 * g);
  return _mm512_cvtepu8_epi32(raw);
}

// Two keys per iteration give the out-of-order core two independent FMA chains per query; a
// compile-time chunk count (kChunks > 0) unrolls the loop over the code bytes of a key.
template <int kBits, int kTile, int kChunks>
TURBOKV_TARGET_AVX512 void dot_packed_tile_avx512(const float* qperm, int dynamic_chunks,
                                                  const uint8_t* codes, int64_t code_bytes,
                                                  int64_t n, __m512 table16, int last_bytes,
                                                  float* out, int64_t out_stride, RowsAhead ahead) {
  constexpr int kPerByte = 8 / kBits;
  const int chunks = kChunks > 0 ? kChunks : dynamic_chunks;
  const int64_t per_query = static_cast<int64_t>(chunks) * kPerByte * 16;
  const __mmask16 last_mask = static_cast<__mmask16>((1u << last_bytes) - 1u);
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) {
    ahead.fetch(j);
    ahead.fetch(j + 1);
    const uint8_t* key0 = codes + j * code_bytes;
    const uint8_t* key1 = key0 + code_bytes;
    _mm_prefetch(reinterpret_cast<const char*>(key0 + 24 * code_bytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(key0 + 25 * code_bytes), _MM_HINT_T0);
    __m512 acc0[kTile], acc1[kTile];
    for (int a = 0; a < kTile; ++a) acc0[a] = acc1[a] = _mm512_setzero_ps();
    for (int g = 0; g < chunks; ++g) {
      const __m512i bytes0 = load_chunk(key0, g, chunks, last_bytes, last_mask),
                    bytes1 = load_chunk(key1, g, chunks, last_bytes, last_mask);
      for (int s = 0; s < kPerByte; ++s) {
        const unsigned shift = static_cast<unsigned>(s * kBits);
        const __m512 v0 = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes0, shift), table16);
        const __m512 v1 = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes1, shift), table16);
        const float* qs = qperm + (static_cast<int64_t>(g) * kPerByte + s) * 16;
        for (int a = 0; a < kTile; ++a) {
          const __m512 qa = _mm512_loadu_ps(qs + a * per_query);
          acc0[a] = _mm512_fmadd_ps(qa, v0, acc0[a]);
          acc1[a] = _mm512_fmadd_ps(qa, v1, acc1[a]);
        }
      }
    }
    store_sums<kTile>(acc0, out + j, out_stride);
    store_sums<kTile>(acc1, out + j + 1, out_stride);
  }
  for (; j < n; ++j) {
    ahead.fetch(j);
    const uint8_t* key = codes + j * code_bytes;
    __m512 acc[kTile];
    for (int a = 0; a < kTile; ++a) acc[a] = _mm512_setzero_ps();
    for (int g = 0; g < chunks; ++g) {
      const __m512i bytes = load_chunk(key, g, chunks, last_bytes, last_mask);
      for (int s = 0; s < kPerByte; ++s) {
        const __m512 values =
            _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, static_cast<unsigned>(s * kBits)), table16);
        const float* qs = qperm + (static_cast<int64_t>(g) * kPerByte + s) * 16;
        for (int a = 0; a < kTile; ++a) {
          acc[a] = _mm512_fmadd_ps(_mm512_loadu_ps(qs + a * per_query), values, acc[a]);
        }
      }
    }
    store_sums<kTile>(acc, out + j, out_stride);
  }
}

template <int kBits, int kTile>
TURBOKV_TARGET_AVX512 void dot_packed_tiles_avx512(const float* qperm, int chunks,
                                                   const uint8_t* codes, int64_t code_bytes,
                                                   int64_t n, __m512 table16, int last_bytes,
                                                   float* out, int64_t out_stride, RowsAhead ahead) {
  switch (chunks) {  // head_dim 64 / 128 / 256 at 4 bits
    case 2: return dot_packed_tile_avx512<kBits, kTile, 2>(qperm, chunks, codes, code_bytes, n, table16, last_bytes, out, out_stride, ahead);
    case 4: return dot_packed_tile_avx512<kBits, kTile, 4>(qperm, chunks, codes, code_bytes, n, table16, last_bytes, out, out_stride, ahead);
    case 8: return dot_packed_tile_avx512<kBits, kTile, 8>(qperm, chunks, codes, code_bytes, n, table16, last_bytes, out, out_stride, ahead);
    default: return dot_packed_tile_avx512<kBits, kTile, 0>(qperm, chunks, codes, code_bytes, n, table16, last_bytes, out, out_stride, ahead);
  }
}

template <int kBits>
TURBOKV_TARGET_AVX512 void dot_packed_bits_avx512(const float* q, int m, const uint8_t* codes,
                                                  int64_t code_bytes, int64_t n,
                                                  const float* table, int d, float* out,
                                                  int64_t out_stride, RowsAhead ahead) {
  constexpr int kPerByte = 8 / kBits;
  const int bytes = (d * kBits + 7) / 8;
  const int chunks = (bytes + 15) / 16;
  const int last_bytes = bytes - 16 * (chunks - 1);
  const int64_t per_query = static_cast<int64_t>(chunks) * kPerByte * 16;
  PermutedScratch qperm(per_query * m);
  to_lanes_avx512<kPerByte>(q, m, d, chunks, qperm.data());
  alignas(64) float repeated[16];
  for (int j = 0; j < 16; ++j) repeated[j] = table[j & ((1 << kBits) - 1)];
  const __m512 table16 = _mm512_load_ps(repeated);
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    dot_packed_tiles_avx512<kBits, 4>(qperm.data() + a * per_query, chunks, codes, code_bytes, n,
                                      table16, last_bytes, out + a * out_stride, out_stride, ahead);
  }
  // The last 1-3 queries in one tile (a tile per query repeated the lookups: GQA 3, 6, ...).
  const float* rest_q = qperm.data() + a * per_query;
  float* rest_out = out + a * out_stride;
  switch (m - a) {
    case 3: dot_packed_tiles_avx512<kBits, 3>(rest_q, chunks, codes, code_bytes, n, table16, last_bytes, rest_out, out_stride, ahead); break;
    case 2: dot_packed_tiles_avx512<kBits, 2>(rest_q, chunks, codes, code_bytes, n, table16, last_bytes, rest_out, out_stride, ahead); break;
    case 1: dot_packed_tiles_avx512<kBits, 1>(rest_q, chunks, codes, code_bytes, n, table16, last_bytes, rest_out, out_stride, ahead); break;
    default: break;
  }
  // GCC leaves the upper halves dirty after a callee that takes a vector argument (table16):
  // clear them here, or SSE code after the call pays the transition penalty.
  _mm256_zeroupper();
}

// Same lane order as dot_packed: the accumulators live permuted for the call and are put back
// in coordinate order at the end (a permutation is exact, and O(m d) against O(m n d) work).
template <int kBits, int kTile>
TURBOKV_TARGET_AVX512 void axpy_packed_tile_avx512(const float* w, int64_t w_stride,
                                                   int chunks, const uint8_t* codes,
                                                   int64_t code_bytes, int64_t n, __m512 table16,
                                                   int last_bytes, float* accperm) {
  constexpr int kPerByte = 8 / kBits;
  const int64_t per_query = static_cast<int64_t>(chunks) * kPerByte * 16;
  const __mmask16 last_mask = static_cast<__mmask16>((1u << last_bytes) - 1u);
  for (int g = 0; g < chunks; ++g) {
    const bool partial = g + 1 == chunks && last_bytes < 16;
    // Accumulators of this 16-byte chunk for every query stay in registers across all keys.
    __m512 acc[kTile][kPerByte];
    for (int a = 0; a < kTile; ++a) {
      for (int s = 0; s < kPerByte; ++s) {
        acc[a][s] = _mm512_loadu_ps(accperm + a * per_query + (g * kPerByte + s) * 16);
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      const uint8_t* src = codes + j * code_bytes + 16 * g;
      if (g == 0) _mm_prefetch(reinterpret_cast<const char*>(src + 24 * code_bytes), _MM_HINT_T0);
      const __m512i bytes = _mm512_cvtepu8_epi32(
          partial ? _mm_maskz_loadu_epi8(last_mask, src)
                  : _mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
      __m512 weight[kTile];
      for (int a = 0; a < kTile; ++a) weight[a] = _mm512_set1_ps(w[a * w_stride + j]);
      for (int s = 0; s < kPerByte; ++s) {
        const __m512 values =
            _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, static_cast<unsigned>(s * kBits)), table16);
        for (int a = 0; a < kTile; ++a) acc[a][s] = _mm512_fmadd_ps(weight[a], values, acc[a][s]);
      }
    }
    for (int a = 0; a < kTile; ++a) {
      for (int s = 0; s < kPerByte; ++s) {
        _mm512_storeu_ps(accperm + a * per_query + (g * kPerByte + s) * 16, acc[a][s]);
      }
    }
  }
}

template <int kBits>
TURBOKV_TARGET_AVX512 void axpy_packed_bits_avx512(const float* w, int64_t w_stride, int m,
                                                   const uint8_t* codes, int64_t code_bytes,
                                                   int64_t n, const float* table, int d,
                                                   float* acc) {
  constexpr int kPerByte = 8 / kBits;
  const int bytes = (d * kBits + 7) / 8;
  const int chunks = (bytes + 15) / 16;
  const int last_bytes = bytes - 16 * (chunks - 1);
  const int64_t per_query = static_cast<int64_t>(chunks) * kPerByte * 16;
  PermutedScratch accperm(per_query * m);
  to_lanes_avx512<kPerByte>(acc, m, d, chunks, accperm.data());
  alignas(64) float repeated[16];
  for (int j = 0; j < 16; ++j) repeated[j] = table[j & ((1 << kBits) - 1)];
  const __m512 table16 = _mm512_load_ps(repeated);
  // Tiles of 4 queries share each lookup (GQA 4 in one pass over the codes) where their
  // 4 x (8 / bits) accumulators leave room in the 32 registers (2 and 4 bits: 16 and 8); 1 bit
  // would need 32, so it takes 2 queries per pass.
  constexpr int kTile = kPerByte >= 8 ? 2 : 4;
  int a = 0;
  for (; a + kTile <= m; a += kTile) {
    axpy_packed_tile_avx512<kBits, kTile>(w + a * w_stride, w_stride, chunks, codes, code_bytes, n,
                                          table16, last_bytes, accperm.data() + a * per_query);
  }
  // The last queries in one pass (a pass per query repeated the lookups: GQA 3, 6, ...).
  const float* rest_w = w + a * w_stride;
  float* rest_acc = accperm.data() + a * per_query;
  if (m - a == 3 && kTile == 4) {
    axpy_packed_tile_avx512<kBits, 3>(rest_w, w_stride, chunks, codes, code_bytes, n, table16, last_bytes, rest_acc);
  } else if (m - a == 2) {
    axpy_packed_tile_avx512<kBits, 2>(rest_w, w_stride, chunks, codes, code_bytes, n, table16, last_bytes, rest_acc);
  } else if (m - a == 1) {
    axpy_packed_tile_avx512<kBits, 1>(rest_w, w_stride, chunks, codes, code_bytes, n, table16, last_bytes, rest_acc);
  }
  from_lanes_avx512<kPerByte>(accperm.data(), m, d, chunks, acc);
  _mm256_zeroupper();  // as dot_packed_bits_avx512: GCC may not, after the lane copies
}

TURBOKV_TARGET_AVX512 void axpy_packed_avx512(const float* w, int64_t w_stride, int m,
                                              const uint8_t* codes, int64_t code_bytes, int64_t n,
                                              const float* table, int bits, int d, float* acc) {
  switch (bits) {
    case 1: return axpy_packed_bits_avx512<1>(w, w_stride, m, codes, code_bytes, n, table, d, acc);
    case 2: return axpy_packed_bits_avx512<2>(w, w_stride, m, codes, code_bytes, n, table, d, acc);
    case 4: return axpy_packed_bits_avx512<4>(w, w_stride, m, codes, code_bytes, n, table, d, acc);
    default:
      if (planes_vbmi_fit(bits, d)) return axpy_planes_vbmi(w, w_stride, m, codes, code_bytes, n, table, bits, d, acc);
      // Without VBMI, 3 and 5-8 bits: the AVX2 rows route (each lookup shared by the queries)
      // beat the per-query AVX-512 gathers on a Sapphire Rapids Xeon: decode at 32K K8V4 5.13 -> 2.82 ms,
      // K8V8 10.0 -> 4.3 ms (bench/results/attention_spr_b1.md).
      if (m > 1) return axpy_packed_rows_avx2(w, w_stride, m, codes, code_bytes, n, table, bits, d, acc);
      return axpy_packed_generic(select_axpy_lookup(SimdLevel::kAvx512),
                                 select_unpack(SimdLevel::kAvx512), w, w_stride, m, codes,
                                 code_bytes, n, table, bits, d, acc);
  }
}

TURBOKV_TARGET_AVX512 void dot_packed_avx512(const float* q, int m, const uint8_t* codes,
                                             int64_t code_bytes, int64_t n, const float* table,
                                             int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  switch (bits) {
    case 1: return dot_packed_bits_avx512<1>(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead);
    case 2: return dot_packed_bits_avx512<2>(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead);
    case 4: return dot_packed_bits_avx512<4>(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead);
    default:  // as axpy_packed_avx512
      if (planes_vbmi_fit(bits, d)) return dot_planes_vbmi(q, m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead);
      // 3 bits: byte planes, 120-198 against 132-237 cycles per key on the rows route in two
      // noisy A/B runs on a Sapphire Rapids Xeon (4 queries); one query where head_dim is a
      // multiple of 32 (the planes read the packed rows), as at the AVX2 level.
      if (bits == 3 && d % 16 == 0 && (m > 1 || d % 32 == 0)) return dot_planes_avx2(q, m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead);
      if (m > 1) return dot_packed_rows_avx2(q, m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead);
      return dot_packed_generic(select_dot_lookup(SimdLevel::kAvx512),
                                select_unpack(SimdLevel::kAvx512), q, m, codes, code_bytes, n,
                                table, bits, d, out, out_stride, ahead);
  }
}

// The AVX2 level's dot_packed / axpy_packed with the vpermps routes on or off, for the test variants.
template <bool kPermutes>
void dot_packed_avx2_route(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                           const float* table, int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  dot_packed_avx2_with(kPermutes, q, m, codes, code_bytes, n, table, bits, d, out, out_stride, ahead);
}
template <bool kPermutes>
void axpy_packed_avx2_route(const float* w, int64_t w_stride, int m, const uint8_t* codes, int64_t code_bytes,
                            int64_t n, const float* table, int bits, int d, float* acc) {
  axpy_packed_avx2_with(kPermutes, w, w_stride, m, codes, code_bytes, n, table, bits, d, acc);
}

// dot_packed / axpy_packed's signatures over the 3-bit 32-wide planes (planes32_fit: a last 16 as
// dot_planes32 and axpy_planes32 take them), for the test variants.
inline bool three_bit_planes32_fit(int bits, int d) { return bits == 3 && planes32_fit(d); }
template <bool kPdep>
void dot_three_bit_planes32(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                            const float* table, int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  if (!three_bit_planes32_fit(bits, d)) throw std::invalid_argument("3-bit planes: 3 bits, head_dim a multiple of 32 or 16 more");
  dot_planes32_avx2<3, kPdep>(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead);
}
template <bool kPdep>
void axpy_three_bit_planes32(const float* w, int64_t w_stride, int m, const uint8_t* codes, int64_t code_bytes,
                             int64_t n, const float* table, int bits, int d, float* acc) {
  if (!three_bit_planes32_fit(bits, d)) throw std::invalid_argument("3-bit planes: 3 bits, head_dim a multiple of 32 or 16 more");
  axpy_planes32_avx2<3, kPdep>(w, w_stride, m, codes, code_bytes, n, table, d, acc, d - d % 32);
  if (d % 32 != 0) axpy_last16_avx2<3>(w, w_stride, m, codes, code_bytes, n, table, d, acc);
}
#endif

}  // namespace

#if TURBOKV_X86
DotPackedFn dot_three_bit_planes32_variant(bool pdep) {
  return pdep ? dot_three_bit_planes32<true> : dot_three_bit_planes32<false>;
}
AxpyPackedFn axpy_three_bit_planes32_variant(bool pdep) {
  return pdep ? axpy_three_bit_planes32<true> : axpy_three_bit_planes32<false>;
}
bool rows_spread_by_pdep(int bits, int d) { return spread_fits(bits, d); }
bool lookups_by_permutes(int bits, int d) { return permutes_fit(bits, d) && !kLaneSwapIsSlow; }
DotPackedFn dot_packed_avx2_lane_variant(bool permutes) {
  return permutes ? dot_packed_avx2_route<true> : dot_packed_avx2_route<false>;
}
AxpyPackedFn axpy_packed_avx2_lane_variant(bool permutes) {
  return permutes ? axpy_packed_avx2_route<true> : axpy_packed_avx2_route<false>;
}
bool planes_avx2_signed(const float* table, int bits, int d) {
  return (bits == 5 || bits == 6) && !kPdepIsSlow && d % 32 == 0 && float_table_antisymmetric(table, bits);
}
#else
bool rows_spread_by_pdep(int, int) { return false; }
bool lookups_by_permutes(int, int) { return false; }
DotPackedFn dot_packed_avx2_lane_variant(bool) { return nullptr; }
AxpyPackedFn axpy_packed_avx2_lane_variant(bool) { return nullptr; }
bool planes_avx2_signed(const float*, int, int) { return false; }
DotPackedFn dot_three_bit_planes32_variant(bool) { return nullptr; }
AxpyPackedFn axpy_three_bit_planes32_variant(bool) { return nullptr; }
#endif

bool float_table_antisymmetric(const float* table, int bits) {
  if (bits < 1 || bits > 8) return false;
  const int half = 1 << (bits - 1);
  for (int k = 0; k < half; ++k) {
    uint32_t upper, lower;
    std::memcpy(&upper, table + half + k, 4);
    std::memcpy(&lower, table + half - 1 - k, 4);
    if (lower != (upper ^ 0x80000000u)) return false;
  }
  return true;
}

AxpyPackedFn select_axpy_packed(SimdLevel level) {
  return TURBOKV_PICK(level, axpy_packed_scalar, axpy_packed_avx2, axpy_packed_avx512);
}

DotPackedFn select_dot_packed(SimdLevel level) {
  return TURBOKV_PICK(level, dot_packed_scalar, dot_packed_avx2, dot_packed_avx512);
}

}  // namespace kernels
}  // namespace turbokv
