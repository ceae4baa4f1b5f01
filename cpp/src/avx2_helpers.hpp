// Internal: small AVX2 building blocks shared by the lookup and packed-code kernels.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "boundary_grid.hpp"
#include "kernels.hpp"

#if TURBOKV_X86
namespace turbokv {
namespace kernels {

// Lookups into tables of more than 16 floats (5-8 bits) and the quantiser's grid cells by scalar
// loads on AMD Zen 1-4, where vgatherdps is slow: 1.6x on a Zen 1 EPYC (BM_Lookup8); on a Zen 3
// EPYC 8-bit scores 1.5x, values 1.4x, 8-bit encode 1.6x; on a Zen 4 EPYC decode at the AVX2 level
// K8V4 1.31-1.50x, K7V7 int8 scores 1.63x (bench/results/kernel_choices_avx2.md). Elsewhere
// vgatherdps: on a Sapphire Rapids Xeon it was 1.7x faster than loads in one run and 1.1x slower
// in another; on a 2-core Emerald Rapids VM scalar loads cost 1.15-1.37x at 7-8 bits (round 43); Zen
// 5 was never measured. Also where Intel's Gather Data Sampling microcode mitigation slows gathers
// (gather_speed.hpp, not measured here: no affected CPU was at hand). Same table values either
// way; set once, before main (amd_zen.hpp, gather_speed.hpp).
extern const bool kGathersAreSlow;
// Zen 1 (AMD family 17h models 00-2F) runs vperm2f128 as 8 micro-ops, one per 3 cycles
// (Zen 2 and Intel: 1): the FWHT's 4-apart butterflies there use 128-bit halves instead
// (hadamard_kernels.cpp; the same adds and subtracts, so the same floats).
extern const bool kLaneSwapIsSlow;
// Zen 1 and 2 run pdep/pext in microcode (tens to hundreds of cycles, growing with the mask's set
// bits; one micro-op on Intel since Haswell and on Zen 3): code that spreads bit fields with
// pdep keeps a SIMD route for them.
extern const bool kPdepIsSlow;

// spread_indices' pdep mask: the low `bits` bits of every byte.
inline uint64_t spread_mask(int bits) { return 0x0101010101010101ull * ((1u << bits) - 1); }

// Whether 5-7-bit codes are read by spread_indices: where pdep is fast (kPdepIsSlow).
inline bool spread_fits(int bits, int d) { return bits > 4 && bits < 8 && d % 16 == 0 && !kPdepIsSlow; }

// Indices c .. c + 7 (c a multiple of 8) of a 5-7-bit key of d codes, one per byte, straight from
// its packed bytes: they fill `bits` bytes from byte c / 8 * bits (packing.hpp), and one pdep with
// a mask of `bits` low bits per byte (spread_mask) spreads them to bytes. The key's last group
// loads the 8 bytes that end with it, so nothing past the row is read (the one before may load
// from the last group's bytes: 8 <= 2 * bits).
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline uint64_t spread_indices(const uint8_t* key, int c, int bits, int d, uint64_t mask) {
  const uint8_t* group = key + c / 8 * bits;
  uint64_t w;
  if (c + 8 < d) {
    std::memcpy(&w, group, 8);
  } else {
    std::memcpy(&w, group + bits - 8, 8);
    w >>= 64 - 8 * bits;
  }
  return _pdep_u64(w, mask);
}

// Indices c .. c + 31 of a 5-7-bit key, one per byte in order (4 spread_indices).
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline __m256i spread_indices32(const uint8_t* key, int c, int bits,
                                                                                 int d, uint64_t mask) {
  return _mm256_setr_epi64x(static_cast<long long>(spread_indices(key, c, bits, d, mask)),
                            static_cast<long long>(spread_indices(key, c + 8, bits, d, mask)),
                            static_cast<long long>(spread_indices(key, c + 16, bits, d, mask)),
                            static_cast<long long>(spread_indices(key, c + 24, bits, d, mask)));
}

// Index byte t of w by one bextr (BMI1, which the AVX2 level requires): movzbl and a shift of the
// word take two operations, a copy, a shift and a mask three.
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline uint64_t index_at(uint64_t w, int t) {
  return _bextr_u64(w, static_cast<unsigned>(8 * t), 8u);
}

// table[index byte k of w], k < 8, by scalar loads: the indices taken apart by bextr (ALU work)
// rather than 8 byte loads, since the load ports are what this route is short of.
TURBOKV_TARGET_AVX2 inline __m256 lookup8_loads_word(const float* table, uint64_t w) {
  const __m128 low = _mm_setr_ps(table[index_at(w, 0)], table[index_at(w, 1)], table[index_at(w, 2)],
                                 table[index_at(w, 3)]);
  const __m128 high = _mm_setr_ps(table[index_at(w, 4)], table[index_at(w, 5)], table[index_at(w, 6)],
                                  table[index_at(w, 7)]);
  return _mm256_set_m128(high, low);
}

TURBOKV_TARGET_AVX2 inline __m256 lookup8_gather_word(const float* table, uint64_t w) {
  const __m256i index = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(w)));
  return _mm256_i32gather_ps(table, index, 4);
}

TURBOKV_TARGET_AVX2 inline __m256 lookup8_loads(const float* table, const uint8_t* idx) {
  uint64_t w;  // the 8 indices in one 64-bit load
  std::memcpy(&w, idx, 8);
  return lookup8_loads_word(table, w);
}

TURBOKV_TARGET_AVX2 inline __m256 lookup8_gather(const float* table, const uint8_t* idx) {
  const __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(idx)));
  return _mm256_i32gather_ps(table, index, 4);
}

// The grid cells of 8 indices held in memory (quantize_grid_avx2), as their candidates and below
// counts. Loads: each cell is one 64-bit load, two per register half, and two shuffles split the
// pairs (16 loads per 8 values instead of the 32 of two separate scalar-load lookups). The indices
// must have been stored well before: read back right after a 256-bit store, they wait for store
// forwarding (on Zen 3 8-bit quantisation took 1.55x as long that way).
TURBOKV_TARGET_AVX2 inline void grid_cells_loads(const GridCell* table, const int32_t* cell,
                                                 __m256* candidate, __m256i* below) {
  const auto two_cells = [table](int32_t first_cell, int32_t second_cell) {
    const __m128d first = _mm_load_sd(reinterpret_cast<const double*>(table + first_cell));
    return _mm_castpd_ps(_mm_loadh_pd(first, reinterpret_cast<const double*>(table + second_cell)));
  };
  const __m256 cells_0145 = _mm256_set_m128(two_cells(cell[4], cell[5]), two_cells(cell[0], cell[1]));
  const __m256 cells_2367 = _mm256_set_m128(two_cells(cell[6], cell[7]), two_cells(cell[2], cell[3]));
  *candidate = _mm256_shuffle_ps(cells_0145, cells_2367, 0x88);  // even floats: lanes 0-3 | 4-7
  *below = _mm256_castps_si256(_mm256_shuffle_ps(cells_0145, cells_2367, 0xDD));
}

// table[idx[0..8)] for a table padded to 16 floats: one permute up to 3 bits, two and a blend at
// 4, loads or a gather above.
TURBOKV_TARGET_AVX2 inline __m256 gather8(const float* table, const uint8_t* idx, int bits) {
  if (bits > 4) return kGathersAreSlow ? lookup8_loads(table, idx) : lookup8_gather(table, idx);
  const __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(idx)));
  if (bits <= 3) return _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), index);
  const __m256 low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), index);
  const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 8), index);
  return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));  // bit 3
}

// For unpacking 16 indices: 16-bit lane k gets bytes (k B / 8, k B / 8 + 1) of the 2B packed bytes.
template <int B>
constexpr std::array<int8_t, 32> unpack_order() {
  std::array<int8_t, 32> order{};
  for (int k = 0; k < 16; ++k) {
    const int byte = k * B / 8;
    order[2 * k] = static_cast<int8_t>(byte);
    order[2 * k + 1] = static_cast<int8_t>(byte + 1 < 2 * B ? byte + 1 : -1);
  }
  return order;
}

template <int B>
constexpr std::array<uint16_t, 16> unpack_multiplier() {
  std::array<uint16_t, 16> m{};
  for (int k = 0; k < 16; ++k) m[k] = static_cast<uint16_t>(1u << (16 - k * B % 8 - B));
  return m;
}

template <int B>
alignas(32) inline constexpr std::array<int8_t, 32> kUnpackOrder = unpack_order<B>();
template <int B>
alignas(32) inline constexpr std::array<uint16_t, 16> kUnpackMultiplier = unpack_multiplier<B>();

// 16 indices of B < 8 bits from the 2B packed bytes at the start of raw (packing.hpp's layout),
// as 16 bytes: each 16-bit lane gets the two bytes its index starts in, a multiply by
// 2^(16 - shift - B) moves the index to the top of the lane (the bits above fall off), and a
// shift brings it down. unpack_avx2 stores them; the int8 scores of 3-bit keys use them in place.
template <int B>
TURBOKV_TARGET_AVX2 inline __m128i unpack16_register_avx2(__m128i raw) {
  const __m256i both = _mm256_broadcastsi128_si256(raw);
  __m256i v = _mm256_shuffle_epi8(both, _mm256_load_si256(reinterpret_cast<const __m256i*>(kUnpackOrder<B>.data())));
  v = _mm256_mullo_epi16(v, _mm256_load_si256(reinterpret_cast<const __m256i*>(kUnpackMultiplier<B>.data())));
  v = _mm256_srli_epi16(v, 16 - B);
  return _mm_packus_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

// pshufb indices that move bytes [s, 16) of a register to [0, 16 - s) and zero the rest, at
// kSlideDown + s.
alignas(16) inline constexpr int8_t kSlideDown[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                                      -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};

// 16 3-bit indices from the 6 packed bytes at p (p + 6 <= end) by unpack16_register_avx2, reading
// 8 bytes that end at most at `end`: a row's last group (p + 8 > end, p - 2 >= the row's start)
// loads from up to 2 bytes earlier and slides its bytes down.
TURBOKV_TARGET_AVX2 inline __m128i unpack3_x16_avx2(const uint8_t* p, const uint8_t* end) {
  if (p + 8 <= end) return unpack16_register_avx2<3>(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const uint8_t* from = end - 8;
  const __m128i raw = _mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(from)),
                                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(kSlideDown + (p - from))));
  return unpack16_register_avx2<3>(raw);
}

// The 16 3-bit indices packed in the 6 bytes at p (p + 6 <= end, the row at least 8 bytes long) as
// 16 nibbles (packing.hpp's 4-bit layout): one pdep spreads each 3-bit field to a 4-bit one. The
// 8-byte load ends at `end` at most: only a row's last group loads from end - 8 and shifts. A
// branch, not a select: it goes the same way at a given offset of every row, so it is predicted,
// where the select's address arithmetic ran for every group (Zen 3, K3V3 int8 decode 0.93x the
// time without it; kernel_choices_avx2.md, round 31). Microcoded on Zen 1 and 2 (kPdepIsSlow).
TURBOKV_TARGET_AVX2 inline uint64_t sixteen_nibbles(const uint8_t* p, const uint8_t* end) {
  uint64_t word;
  if (__builtin_expect(p + 8 <= end, 1)) {
    std::memcpy(&word, p, 8);
    return _pdep_u64(word, 0x7777777777777777ull);
  }
  std::memcpy(&word, end - 8, 8);
  return _pdep_u64(word >> (8 * (p - (end - 8))), 0x7777777777777777ull);
}

// The 64 3-bit indices packed in the 24 bytes at p as 32 nibble bytes (packing.hpp's 4-bit layout),
// indices 0-31 in the low 128-bit lane, with no pdep: each dword gets 3 bytes (8 indices) as the
// words (b0 b1) and (b1 b2); a multiply by 16 and a shift leave 12 bits (4 indices) in each word,
// its upper 6 (2 indices) move to its high byte, and x + (x & 0x38) moves each byte's second
// index up a bit.
// Reads [p, p + 24) only (lane 1 loads from p + 8).
TURBOKV_TARGET_AVX2 inline __m256i sixty_four_nibbles_avx2(const uint8_t* p) {
  const __m256i raw = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)), 1);
  const __m256i words = _mm256_setr_epi8(0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 7, 8, 9, 10, 10, 11,
                                         4, 5, 5, 6, 7, 8, 8, 9, 10, 11, 11, 12, 13, 14, 14, 15);
  __m256i x = _mm256_shuffle_epi8(raw, words);
  x = _mm256_srli_epi16(_mm256_mullo_epi16(x, _mm256_set1_epi32(0x00010010)), 4);
  x = _mm256_or_si256(_mm256_and_si256(x, _mm256_set1_epi16(0x003F)),
                      _mm256_and_si256(_mm256_slli_epi16(x, 2), _mm256_set1_epi16(0x3F00)));
  return _mm256_add_epi8(x, _mm256_and_si256(x, _mm256_set1_epi8(0x38)));
}

TURBOKV_TARGET_AVX2 inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

// acc_a[c, c + 16) += sum_j w[a * w_stride + j] * values(j) for kTile queries, each query's 16
// sums in two registers across all n tokens; values(j, v0, v1) gives coordinates c..c+15.
template <int kTile, typename Values>
TURBOKV_TARGET_AVX2 void accumulate16_avx2(const float* w, int64_t w_stride, int64_t n,
                                           const Values& values, int d, int c, float* acc) {
  __m256 sums[kTile][2];
  for (int a = 0; a < kTile; ++a) {
    sums[a][0] = _mm256_loadu_ps(acc + a * d + c);
    sums[a][1] = _mm256_loadu_ps(acc + a * d + c + 8);
  }
  for (int64_t j = 0; j < n; ++j) {
    __m256 v0, v1;
    values(j, v0, v1);
    for (int a = 0; a < kTile; ++a) {
      const __m256 weight = _mm256_broadcast_ss(w + a * w_stride + j);
      sums[a][0] = _mm256_fmadd_ps(weight, v0, sums[a][0]);
      sums[a][1] = _mm256_fmadd_ps(weight, v1, sums[a][1]);
    }
  }
  for (int a = 0; a < kTile; ++a) {
    _mm256_storeu_ps(acc + a * d + c, sums[a][0]);
    _mm256_storeu_ps(acc + a * d + c + 8, sums[a][1]);
  }
}

// out[a * out_stride] = the sum of query a's two accumulators' lanes, for the tile's queries.
template <int kTile>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void store_tile_sums_avx2(const __m256 (&acc)[kTile][2],
                                                                                  float* out, int64_t out_stride) {
  if constexpr (kTile == 4) {  // four horizontal sums at once: lane a is query a's
    const __m256 h01 = _mm256_hadd_ps(_mm256_add_ps(acc[0][0], acc[0][1]), _mm256_add_ps(acc[1][0], acc[1][1]));
    const __m256 h23 = _mm256_hadd_ps(_mm256_add_ps(acc[2][0], acc[2][1]), _mm256_add_ps(acc[3][0], acc[3][1]));
    const __m256 h = _mm256_hadd_ps(h01, h23);
    alignas(16) float sums[4];
    _mm_store_ps(sums, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
    for (int a = 0; a < 4; ++a) out[a * out_stride] = sums[a];
  } else {
    for (int a = 0; a < kTile; ++a) out[a * out_stride] = horizontal_sum(_mm256_add_ps(acc[a][0], acc[a][1]));
  }
}

// Eight keys' scores of 4 queries at once (the int8 and int16 score kernels' score_eight_keys):
// keys p and p + 4 go together, their 4 query accumulators each reduced to one register
// (pair_sums: [key p: queries 0-3 | key p + 4: queries 0-3], each key's lanes summed as a single
// key's horizontal sum would be); after 4 pairs one in-lane transpose gives each query its 8 keys
// in order (store_eight_keys): one store per query instead of a horizontal sum and 4 scalar
// stores per key.
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline __m256i pair_sums(const __m256i (&p)[4], const __m256i (&p4)[4]) {
  const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
  const __m256i h4 = _mm256_hadd_epi32(_mm256_hadd_epi32(p4[0], p4[1]), _mm256_hadd_epi32(p4[2], p4[3]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(h, h4, 0x20), _mm256_permute2x128_si256(h, h4, 0x31));
}

TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline __m256 pair_sums(const __m256 (&p)[4], const __m256 (&p4)[4]) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(p[0], p[1]), _mm256_hadd_ps(p[2], p[3]));
  const __m256 h4 = _mm256_hadd_ps(_mm256_hadd_ps(p4[0], p4[1]), _mm256_hadd_ps(p4[2], p4[3]));
  return _mm256_add_ps(_mm256_permute2f128_ps(h, h4, 0x20), _mm256_permute2f128_ps(h, h4, 0x31));
}

// Two keys' scores of 4 queries, [key 0: queries 0-3 | key 1: queries 0-3], to out[a * out_stride
// + 0, 1]: 8 bytes per query.
// kQueries < 4: the rows of queries 0 .. kQueries - 1 only.
template <int kQueries = 4>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void store_two_keys(__m256 pair, float* out, int64_t out_stride) {
  static_assert(kQueries >= 1 && kQueries <= 4, "rows of 1-4 queries");
  const __m128 low = _mm256_castps256_ps128(pair), high = _mm256_extractf128_ps(pair, 1);
  const __m128 q01 = _mm_unpacklo_ps(low, high), q23 = _mm_unpackhi_ps(low, high);
  _mm_storel_pi(reinterpret_cast<__m64*>(out), q01);
  if (kQueries > 1) _mm_storeh_pi(reinterpret_cast<__m64*>(out + out_stride), q01);
  if (kQueries > 2) _mm_storel_pi(reinterpret_cast<__m64*>(out + 2 * out_stride), q23);
  if (kQueries > 3) _mm_storeh_pi(reinterpret_cast<__m64*>(out + 3 * out_stride), q23);
}

// kQueries < 4: the rows of queries 0 .. kQueries - 1 only (the lanes of the others are unused).
template <int kQueries = 4>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void store_eight_keys(const __m256 (&pairs)[4], float* out,
                                                                              int64_t out_stride) {
  static_assert(kQueries >= 1 && kQueries <= 4, "rows of 1-4 queries");
  const __m256 t0 = _mm256_unpacklo_ps(pairs[0], pairs[1]), t1 = _mm256_unpackhi_ps(pairs[0], pairs[1]);
  const __m256 t2 = _mm256_unpacklo_ps(pairs[2], pairs[3]), t3 = _mm256_unpackhi_ps(pairs[2], pairs[3]);
  _mm256_storeu_ps(out, _mm256_shuffle_ps(t0, t2, 0x44));
  if (kQueries > 1) _mm256_storeu_ps(out + out_stride, _mm256_shuffle_ps(t0, t2, 0xEE));
  if (kQueries > 2) _mm256_storeu_ps(out + 2 * out_stride, _mm256_shuffle_ps(t1, t3, 0x44));
  if (kQueries > 3) _mm256_storeu_ps(out + 3 * out_stride, _mm256_shuffle_ps(t1, t3, 0xEE));
}

// Scores of up to 4 queries on one key whose coordinates c..c+15 values(c, v0, v1) looks up:
// each 16 looked-up coordinates serve every query, two accumulators per query (chains of d / 16
// FMAs). head_dim a multiple of 16.
template <int kTile, typename Values>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void dot16_tile_avx2(
    const float* q, int d, const Values& values, float* out, int64_t out_stride) {
  __m256 acc[kTile][2];
  for (int a = 0; a < kTile; ++a) acc[a][0] = acc[a][1] = _mm256_setzero_ps();
  for (int c = 0; c < d; c += 16) {
    __m256 v0, v1;
    values(c, v0, v1);
    for (int a = 0; a < kTile; ++a) {
      acc[a][0] = _mm256_fmadd_ps(_mm256_loadu_ps(q + a * d + c), v0, acc[a][0]);
      acc[a][1] = _mm256_fmadd_ps(_mm256_loadu_ps(q + a * d + c + 8), v1, acc[a][1]);
    }
  }
  store_tile_sums_avx2<kTile>(acc, out, out_stride);
}

// Whether a 32-wide key functor also gives its last 16 coordinates (kHasLast16 and last16(c, v0,
// v1), in coordinate order), so that head_dims 16 more than a multiple of 32 take the 32-wide steps.
template <typename Values, typename = void>
struct HasLast16 : std::false_type {};
template <typename Values>
struct HasLast16<Values, std::enable_if_t<Values::kHasLast16>> : std::true_type {};

// As dot16_tile_avx2, 32 coordinates per step: values(c, v) gives coordinates c..c+31 in the lane
// order of to_lane_order32 (v[k] lanes 0-3: c + 4k ..; lanes 4-7: c + 16 + 4k ..), and q holds the
// queries in that order. head_dim a multiple of 32, or (HasLast16) 16 more than one.
template <int kTile, typename Values>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void dot32_tile_avx2(
    const float* q, int d, const Values& values, float* out, int64_t out_stride) {
  __m256 acc[kTile][2];
  for (int a = 0; a < kTile; ++a) acc[a][0] = acc[a][1] = _mm256_setzero_ps();
  int c = 0;
  for (; c + 32 <= d; c += 32) {
    __m256 v[4];
    values(c, v);
    for (int a = 0; a < kTile; ++a) {
      for (int k = 0; k < 4; ++k) acc[a][k % 2] = _mm256_fmadd_ps(_mm256_loadu_ps(q + a * d + c + 8 * k), v[k], acc[a][k % 2]);
    }
  }
  if constexpr (HasLast16<Values>::value) {
    if (c < d) {
      __m256 v0, v1;
      values.last16(c, v0, v1);
      for (int a = 0; a < kTile; ++a) {
        acc[a][0] = _mm256_fmadd_ps(_mm256_loadu_ps(q + a * d + c), v0, acc[a][0]);
        acc[a][1] = _mm256_fmadd_ps(_mm256_loadu_ps(q + a * d + c + 8), v1, acc[a][1]);
      }
    }
  }
  store_tile_sums_avx2<kTile>(acc, out, out_stride);
}

// One step of dot_two_keys_avx2: kVectors x 8 coordinates of two keys (v[key]) against 4 queries
// (q: their first coordinate of the step, queries d apart).
template <int kVectors>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void two_keys_step(const float* q, int d,
                                                                           const __m256 (&v)[2][kVectors],
                                                                           __m256 (&acc)[2][4]) {
  for (int a = 0; a < 4; ++a) {
    for (int k = 0; k < kVectors; ++k) {
      const __m256 qa = _mm256_loadu_ps(q + a * d + 8 * k);
      acc[0][a] = _mm256_fmadd_ps(qa, v[0][k], acc[0][a]);
      acc[1][a] = _mm256_fmadd_ps(qa, v[1][k], acc[1][a]);
    }
  }
}

// As dot16_tile_avx2 (kStep 16: keys(c, v0, v1)) or dot32_tile_avx2 (kStep 32: keys(c, v)) for 4
// queries on two keys at once: each query load serves both keys, one accumulator per query and
// key (a float sum order of its own: a key's score may differ in the last bits from the one-key
// tiles'), one reduction for both keys' 8 sums (pair_sums, store_two_keys). On Zen 3, one thread
// (kernel_choices_avx2.md, round 25): 8-bit keys by loads 0.94-0.96x the time, 7-bit 0.88-0.91x,
// byte planes of 5-6 bits 0.95x, 3 bits 0.96x, 2 and 4 bits 1.00x. kStep 32 with HasLast16: a last
// 16 coordinates by last16, as dot32_tile_avx2.
template <int kStep, typename Values>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void dot_two_keys_avx2(
    const float* q, int d, const Values& ka, const Values& kb, float* out, int64_t out_stride) {
  static_assert(kStep == 16 || kStep == 32, "the one-key tiles' steps");
  constexpr int kVectors = kStep / 8;
  __m256 acc[2][4];
  for (auto& k : acc) {
    for (__m256& v : k) v = _mm256_setzero_ps();
  }
  int c = 0;
  for (; c + kStep <= d; c += kStep) {
    __m256 v[2][kVectors];
    if constexpr (kStep == 16) {
      ka(c, v[0][0], v[0][1]);
      kb(c, v[1][0], v[1][1]);
    } else {
      ka(c, v[0]);
      kb(c, v[1]);
    }
    two_keys_step<kVectors>(q + c, d, v, acc);
  }
  if constexpr (kStep == 32 && HasLast16<Values>::value) {
    if (c < d) {
      __m256 v[2][2];
      ka.last16(c, v[0][0], v[0][1]);
      kb.last16(c, v[1][0], v[1][1]);
      two_keys_step<2>(q + c, d, v, acc);
    }
  }
  store_two_keys(pair_sums(acc[0], acc[1]), out, out_stride);
}

// The last 1-3 queries of a key in one tile (one tile per query would repeat the lookups).
template <typename Values>
TURBOKV_TARGET_AVX2 void dot16_rest_avx2(int rest, const float* q, int d, const Values& values,
                                         float* out, int64_t out_stride) {
  switch (rest) {
    case 4: return dot16_tile_avx2<4>(q, d, values, out, out_stride);
    case 3: return dot16_tile_avx2<3>(q, d, values, out, out_stride);
    case 2: return dot16_tile_avx2<2>(q, d, values, out, out_stride);
    case 1: return dot16_tile_avx2<1>(q, d, values, out, out_stride);
    default: return;
  }
}

// The last 1-3 queries of a key in one 32-wide tile.
template <typename Values>
TURBOKV_TARGET_AVX2 void dot32_rest_avx2(int rest, const float* q, int d, const Values& values,
                                         float* out, int64_t out_stride) {
  switch (rest) {
    case 4: return dot32_tile_avx2<4>(q, d, values, out, out_stride);
    case 3: return dot32_tile_avx2<3>(q, d, values, out, out_stride);
    case 2: return dot32_tile_avx2<2>(q, d, values, out, out_stride);
    case 1: return dot32_tile_avx2<1>(q, d, values, out, out_stride);
    default: return;
  }
}

// The 32-wide steps' lane order: position p of each block of 32 holds coordinate
// 16 * (p % 8 >= 4) + 4 * (p / 8) + p % 4 (what two 128-bit lanes of byte-plane lookups give).
// m vectors of d floats copied into that order, each whole block of 32 (a last 16 coordinates,
// which the 32-wide tiles read by last16, stay in coordinate order).
inline void to_lane_order32(const float* x, int m, int d, float* out) {
  for (int a = 0; a < m; ++a) {
    int c = 0;
    for (; c + 32 <= d; c += 32) {
      for (int p = 0; p < 32; ++p) out[a * d + c + p] = x[a * d + c + 16 * (p % 8 >= 4) + 4 * (p / 8) + p % 4];
    }
    for (; c < d; ++c) out[a * d + c] = x[a * d + c];
  }
}

// acc_a[c, c + 32) += sum_j w[a * w_stride + j] * values(j) for kTile queries, values(j, v) giving
// coordinates c..c+31 in the lane order above; acc stays in coordinate order (permuted on the way
// in and out). Each coordinate's sum runs over j in order, as in accumulate16_avx2.
template <int kTile, typename Values>
TURBOKV_TARGET_AVX2 void accumulate32_avx2(const float* w, int64_t w_stride, int64_t n,
                                           const Values& values, int d, int c, float* acc) {
  __m256 sums[kTile][4];
  for (int a = 0; a < kTile; ++a) {
    const float* row = acc + a * d + c;
    const __m256 c0 = _mm256_loadu_ps(row), c8 = _mm256_loadu_ps(row + 8);
    const __m256 c16 = _mm256_loadu_ps(row + 16), c24 = _mm256_loadu_ps(row + 24);
    sums[a][0] = _mm256_permute2f128_ps(c0, c16, 0x20);
    sums[a][1] = _mm256_permute2f128_ps(c0, c16, 0x31);
    sums[a][2] = _mm256_permute2f128_ps(c8, c24, 0x20);
    sums[a][3] = _mm256_permute2f128_ps(c8, c24, 0x31);
  }
  for (int64_t j = 0; j < n; ++j) {
    __m256 v[4];
    values(j, v);
    for (int a = 0; a < kTile; ++a) {
      const __m256 weight = _mm256_broadcast_ss(w + a * w_stride + j);
      for (int k = 0; k < 4; ++k) sums[a][k] = _mm256_fmadd_ps(weight, v[k], sums[a][k]);
    }
  }
  for (int a = 0; a < kTile; ++a) {
    float* row = acc + a * d + c;
    _mm256_storeu_ps(row, _mm256_permute2f128_ps(sums[a][0], sums[a][1], 0x20));
    _mm256_storeu_ps(row + 16, _mm256_permute2f128_ps(sums[a][0], sums[a][1], 0x31));
    _mm256_storeu_ps(row + 8, _mm256_permute2f128_ps(sums[a][2], sums[a][3], 0x20));
    _mm256_storeu_ps(row + 24, _mm256_permute2f128_ps(sums[a][2], sums[a][3], 0x31));
  }
}

}  // namespace kernels
}  // namespace turbokv
#endif
