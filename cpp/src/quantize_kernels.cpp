// Nearest-centroid quantisation by midpoint boundaries (paper, eq. (4)): the index of x is the
// number of boundaries <= x. The scalar reference finds it by a branch-free binary search; the SIMD
// variants count it other ways (compares, a boundary grid) that give the same integer, and a value
// exactly on a boundary goes to the upper cell at every level, so codes are bit-identical.
#include "boundary_grid.hpp"
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "avx2_helpers.hpp"
#include "encode_avx512.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

void quantize_scalar(const float* x, float scale, const float* boundaries, const float* centroids,
                     const BoundaryGrid*, int bits, uint8_t* idx, float* residual, int n) {
  const int levels = 1 << bits;
  for (int i = 0; i < n; ++i) {
    const float v = x[i] * scale;
    int lo = 0;
    for (int step = levels / 2; step >= 1; step /= 2) {
      if (v >= boundaries[lo + step - 1]) lo += step;
    }
    idx[i] = static_cast<uint8_t>(lo);
    if (residual != nullptr) residual[i] = v - centroids[lo];
  }
}

#if TURBOKV_X86
// table[index lane] by 8 scalar loads (the lanes spilled once) where gathers are microcoded
// (kGathersAreSlow, avx2_helpers.hpp), else a gather.
TURBOKV_TARGET_AVX2 __m256 lookup8_lanes(const float* table, __m256i index) {
  if (!kGathersAreSlow) return _mm256_i32gather_ps(table, index, 4);
  alignas(32) int32_t lane[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lane), index);
  return _mm256_setr_ps(table[lane[0]], table[lane[1]], table[lane[2]], table[lane[3]],
                        table[lane[4]], table[lane[5]], table[lane[6]], table[lane[7]]);
}

// Up to 8 levels: one permute; 16: two permutes and a blend on bit 3; more: scalar loads.
TURBOKV_TARGET_AVX2 __m256 lookup8(const float* table, __m256i index, int bits) {
  if (bits <= 3) return _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), index);
  if (bits == 4) {
    const __m256 low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), index);
    const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 8), index);
    const __m256i upper = _mm256_slli_epi32(index, 28);  // bit 3 -> sign bit, for blendv
    return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(upper));
  }
  return lookup8_lanes(table, index);
}

// The low byte of each of 8 int32 lanes, stored as 8 bytes.
TURBOKV_TARGET_AVX2 void store_bytes_avx2(__m256i lanes, uint8_t* out) {
  const __m256i first_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                               -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                               -1, -1, -1, -1);
  const __m256i bytes = _mm256_shuffle_epi8(lanes, first_bytes);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes),
                                                                       _mm256_extracti128_si256(bytes, 1)));
}

// Up to 4 bits the index is counted directly: one compare per boundary against a broadcast
// constant (15 at 4 bits), all independent, instead of 4 dependent permute-lookup steps.
template <int kBits>
TURBOKV_TARGET_AVX2 __m256i count_below_avx2(__m256 v, const __m256* bounds) {
  constexpr int kCount = (1 << kBits) - 1;
  __m256i even = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
  for (int k = 0; k < kCount; ++k) {
    const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(v, bounds[k], _CMP_GE_OQ));  // -1 or 0
    if (k % 2 == 0) even = _mm256_sub_epi32(even, ge); else odd = _mm256_sub_epi32(odd, ge);
  }
  return _mm256_add_epi32(even, odd);
}

// Lloyd-Max boundaries are symmetric with a zero in the middle (b[P + j] = -b[P - j], P = 2^(b-1)
// - 1; checked before this route is taken), so half the compares suffice. With a = |v| and p_j the
// P positive boundaries: v >= 0 has P + 1 + #(a >= p_j) boundaries below it; v < 0 has
// #(-p_j <= v) = P - #(a > p_j), and a > p_j is a' >= p_j for a' = a one ulp down (a > 0 there).
// So idx = P + 1 + (c XOR m) with c counted on a (or a') and m = -1 where v < 0: the same index as
// the full count, ties included, in 4 + 2P operations instead of 2(2P + 1).
template <int kBits, bool kPositiveGrid>
TURBOKV_TARGET_AVX2 __m256i count_symmetric_avx2(__m256 v, const __m256* positive) {
  constexpr int kP = (1 << (kBits - 1)) - 1;
  const __m256i negative = _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
  const __m256i magnitude = _mm256_andnot_si256(_mm256_set1_epi32(INT32_MIN), _mm256_castps_si256(v));
  const __m256 a = _mm256_castsi256_ps(_mm256_add_epi32(magnitude, negative));  // one ulp down if v < 0
  __m256i count;
  if constexpr (kPositiveGrid) {
    // The positive boundaries on at most 8 cells from 0 (BoundaryGrid::Positive): a's cell, then
    // its candidate and count by one vpermps each, count = below + (a >= candidate). positive[0]
    // holds inv_width, [1] the last cell, [2] the candidates, [3] the counts (as float bits).
    const __m256i cell = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_mul_ps(a, positive[0]), positive[1]));
    const __m256 candidate = _mm256_permutevar8x32_ps(positive[2], cell);
    const __m256i below = _mm256_permutevar8x32_epi32(_mm256_castps_si256(positive[3]), cell);
    count = _mm256_sub_epi32(below, _mm256_castps_si256(_mm256_cmp_ps(a, candidate, _CMP_GE_OQ)));
  } else if constexpr (kBits == 4) {
    // The 7 positive boundaries p_0..p_6 by a 3-step search (10 operations instead of 14 for
    // the compare-and-count): a >= p_3, then p_1 or p_5 by blend, then p_0, p_2, p_4 or p_6 by an
    // in-lane permute of the two steps' outcome. The same count for sorted boundaries, ties included.
    // The steps' outcomes are -1 / 0 masks: minus = -(2 * [a >= p_3] + [a >= mid]) in -3 ... 0
    // selects the last boundary by its low two bits (positive[7] holds p_0, p_6, p_4, p_2 in
    // that order), and count = -(2 * minus + [a >= last]). Adds only: no constants to hold.
    const __m256i ge3 = _mm256_castps_si256(_mm256_cmp_ps(a, positive[3], _CMP_GE_OQ));
    const __m256 mid = _mm256_blendv_ps(positive[1], positive[5], _mm256_castsi256_ps(ge3));
    const __m256i ge_mid = _mm256_castps_si256(_mm256_cmp_ps(a, mid, _CMP_GE_OQ));
    const __m256i minus = _mm256_add_epi32(_mm256_add_epi32(ge3, ge3), ge_mid);
    const __m256 last = _mm256_permutevar_ps(positive[7], minus);
    const __m256i ge_last = _mm256_castps_si256(_mm256_cmp_ps(a, last, _CMP_GE_OQ));
    count = _mm256_sub_epi32(_mm256_setzero_si256(),
                             _mm256_add_epi32(_mm256_add_epi32(minus, minus), ge_last));
  } else {
    __m256i even = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
    for (int j = 0; j < kP; ++j) {
      const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(a, positive[j], _CMP_GE_OQ));
      if (j % 2 == 0) even = _mm256_sub_epi32(even, ge); else odd = _mm256_sub_epi32(odd, ge);
    }
    count = _mm256_add_epi32(even, odd);
  }
  return _mm256_add_epi32(_mm256_set1_epi32(kP + 1), _mm256_xor_si256(count, negative));
}

// The broadcast boundaries the counts compare against, set up once per call. kSymmetric: the
// positive half only (the check that the boundaries allow it is the grid's); kPositiveGrid (4
// bits, symmetric): the positive half on the grid's 8 cells instead (BoundaryGrid::Positive).
template <int kBits, bool kSymmetric, bool kPositiveGrid = false>
struct CountBounds {
  static_assert(!kPositiveGrid || (kSymmetric && kBits == 4), "the positive grid serves 4 symmetric bits");
  static constexpr int kCount = (1 << kBits) - 1, kUsed = kSymmetric ? kCount / 2 : kCount;
  // One more register for the symmetric 4-bit search: its last step's table, p_0, p_6, p_4, p_2
  // (the order count_symmetric_avx2 indexes it in).
  __m256 b[kUsed + 1];
};

template <int kBits, bool kSymmetric, bool kPositiveGrid>
TURBOKV_TARGET_AVX2 void set_bounds_avx2(const float* boundaries, const BoundaryGrid* grid,
                                         CountBounds<kBits, kSymmetric, kPositiveGrid>* out) {
  using B = CountBounds<kBits, kSymmetric, kPositiveGrid>;
  if constexpr (kPositiveGrid) {
    const BoundaryGrid::Positive& p = grid->positive;
    out->b[0] = _mm256_set1_ps(p.inv_width);
    out->b[1] = _mm256_set1_ps(static_cast<float>(p.cells - 1));
    out->b[2] = _mm256_load_ps(p.candidate);
    out->b[3] = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p.below)));
    return;
  }
  (void)grid;
  const float* used = kSymmetric ? boundaries + B::kCount / 2 + 1 : boundaries;
  for (int k = 0; k < B::kUsed; ++k) out->b[k] = _mm256_set1_ps(used[k]);
  if constexpr (kSymmetric && kBits == 4) {
    out->b[B::kUsed] = _mm256_setr_ps(used[0], used[6], used[4], used[2], used[0], used[6], used[4], used[2]);
  }
}

// The indices of x[0, 8) * scale as int32 lanes.
template <int kBits, bool kSymmetric, bool kPositiveGrid>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline __m256i count_avx2(
    const float* x, __m256 vscale, const CountBounds<kBits, kSymmetric, kPositiveGrid>& bounds, __m256* scaled) {
  *scaled = _mm256_mul_ps(_mm256_loadu_ps(x), vscale);
  return kSymmetric ? count_symmetric_avx2<kBits, kPositiveGrid>(*scaled, bounds.b)
                    : count_below_avx2<kBits>(*scaled, bounds.b);
}

// One row, index bytes out.
template <int kBits, bool kSymmetric, bool kPositiveGrid = false>
TURBOKV_TARGET_AVX2 void quantize_rows_avx2(const float* x, __m256 vscale, const float* boundaries,
                                            const BoundaryGrid* grid, const float* centroids, uint8_t* idx,
                                            float* residual, int n) {
  CountBounds<kBits, kSymmetric, kPositiveGrid> bounds;
  set_bounds_avx2(boundaries, grid, &bounds);
  for (int i = 0; i + 8 <= n; i += 8) {
    __m256 v;
    const __m256i lo = count_avx2(x + i, vscale, bounds, &v);
    store_bytes_avx2(lo, idx + i);
    if (residual != nullptr) _mm256_storeu_ps(residual + i, _mm256_sub_ps(v, lookup8(centroids, lo, kBits)));
  }
}

// The indices of x[0, 32) * scale as 32 bytes in the packs' lane order: lane 0 holds indices 0-3,
// 8-11, 16-19, 24-27, lane 1 indices 4-7, 12-15, 20-23, 28-31 (groups of 4 stay in order).
template <int kBits, bool kSymmetric, bool kPositiveGrid>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline __m256i count32_bytes_avx2(
    const float* x, __m256 vscale, const CountBounds<kBits, kSymmetric, kPositiveGrid>& bounds) {
  __m256 v;
  const __m256i c0 = count_avx2(x, vscale, bounds, &v);
  const __m256i c1 = count_avx2(x + 8, vscale, bounds, &v);
  const __m256i p01 = _mm256_packs_epi32(c0, c1);  // packed before c2, c3 exist: fewer live registers
  const __m256i c2 = count_avx2(x + 16, vscale, bounds, &v);
  const __m256i c3 = count_avx2(x + 24, vscale, bounds, &v);
  return _mm256_packus_epi16(p01, _mm256_packs_epi32(c2, c3));
}

// 4 symmetric bits by the positive grid (two vpermps) where the codebook has one, except where
// lane-crossing permutes are slow (Zen 1, kLaneSwapIsSlow), which keeps the 3-step search it was
// measured with. On a Sapphire Rapids core the grid took 0.83-0.89x the search's time
// (kernel_choices_avx2.md, round 17).
inline bool use_positive_grid(const BoundaryGrid* grid) {
  return grid != nullptr && grid->symmetric_with_zero && grid->positive.cells > 0 && !kLaneSwapIsSlow;
}

template <int kBits>
TURBOKV_TARGET_AVX2 void quantize_count_avx2(const float* x, __m256 vscale, const float* boundaries,
                                             const float* centroids, const BoundaryGrid* grid,
                                             uint8_t* idx, float* residual, int n) {
  // The grid, when given, was built from these boundaries (kernels.hpp), so its flag holds here.
  if constexpr (kBits == 4) {
    if (use_positive_grid(grid)) {
      return quantize_rows_avx2<4, true, true>(x, vscale, boundaries, grid, centroids, idx, residual, n);
    }
  }
  if (kBits >= 2 && grid != nullptr && grid->symmetric_with_zero) {
    return quantize_rows_avx2<kBits, kBits >= 2>(x, vscale, boundaries, grid, centroids, idx, residual, n);
  }
  quantize_rows_avx2<kBits, false>(x, vscale, boundaries, grid, centroids, idx, residual, n);
}

TURBOKV_TARGET_AVX2 inline __m256i grid_cell_avx2(__m256 v, __m256 origin, __m256 inv_width, __m256 last) {
  const __m256 t = _mm256_mul_ps(_mm256_sub_ps(v, origin), inv_width);
  return _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), last));
}

// index = below + (v >= candidate) for 8 values (boundary_grid.hpp), stored with their residuals.
TURBOKV_TARGET_AVX2 inline void store_grid_indices_avx2(__m256 v, __m256 candidate, __m256i below,
                                                        const float* centroids, int bits, uint8_t* idx,
                                                        float* residual) {
  const __m256i lo = _mm256_sub_epi32(below, _mm256_castps_si256(_mm256_cmp_ps(v, candidate, _CMP_GE_OQ)));
  store_bytes_avx2(lo, idx);
  if (residual != nullptr) _mm256_storeu_ps(residual, _mm256_sub_ps(v, lookup8(centroids, lo, bits)));
}

// 5+ bits: the grid's two lookups (see boundary_grid.hpp), the cell computed as in BoundaryGrid::cell.
// The cells of a chunk of values are computed and stored first and read back by 64-bit scalar
// loads in a second pass, so no load waits on the store that wrote its index (grid_cells_loads).
// Loads on every CPU: Zen 1 and Zen 3 microcode gathers, and at a Sapphire Rapids Xeon's AVX2
// level loads took 0.95-0.97x the 32-bit gathers' time from L1 and 0.91-1.05x streamed
// (kernel_choices_avx2.md, round 17), so one route is kept.
TURBOKV_TARGET_AVX2 void quantize_grid_avx2(const float* x, __m256 vscale, const BoundaryGrid& grid,
                                            const float* centroids, int bits, uint8_t* idx,
                                            float* residual, int n) {
  const __m256 origin = _mm256_set1_ps(grid.origin), inv_width = _mm256_set1_ps(grid.inv_width);
  const __m256 last = _mm256_set1_ps(static_cast<float>(grid.cells - 1));
  const GridCell* const table = grid.table.data();
  const int whole = n - n % 8;
  constexpr int kChunk = 128;
  alignas(32) int32_t cells[kChunk];
  for (int start = 0; start < whole; start += kChunk) {
    const int count = whole - start < kChunk ? whole - start : kChunk;
    const float* const xs = x + start;
    for (int i = 0; i < count; i += 8) {
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xs + i), vscale);
      _mm256_store_si256(reinterpret_cast<__m256i*>(cells + i), grid_cell_avx2(v, origin, inv_width, last));
    }
    for (int i = 0; i < count; i += 8) {
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xs + i), vscale);
      __m256 candidate;
      __m256i below;
      grid_cells_loads(table, cells + i, &candidate, &below);
      store_grid_indices_avx2(v, candidate, below, centroids, bits, idx + start + i,
                              residual == nullptr ? nullptr : residual + start + i);
    }
  }
}

// Binary search: bits with no grid.
TURBOKV_TARGET_AVX2 void quantize_search_avx2(const float* x, __m256 vscale, const float* boundaries,
                                              const float* centroids, int bits, uint8_t* idx,
                                              float* residual, int n) {
  const int levels = 1 << bits;
  for (int i = 0; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vscale);
    __m256i lo = _mm256_setzero_si256();
    for (int step = levels / 2; step >= 1; step /= 2) {
      const __m256i probe = _mm256_add_epi32(lo, _mm256_set1_epi32(step - 1));
      const __m256 ge = _mm256_cmp_ps(v, lookup8(boundaries, probe, bits), _CMP_GE_OQ);
      lo = _mm256_add_epi32(lo, _mm256_and_si256(_mm256_castps_si256(ge), _mm256_set1_epi32(step)));
    }
    store_bytes_avx2(lo, idx + i);
    if (residual != nullptr) _mm256_storeu_ps(residual + i, _mm256_sub_ps(v, lookup8(centroids, lo, bits)));
  }
}

TURBOKV_TARGET_AVX2 void quantize_avx2(const float* x, float scale, const float* boundaries,
                                       const float* centroids, const BoundaryGrid* grid, int bits,
                                       uint8_t* idx, float* residual, int n) {
  const __m256 vscale = _mm256_set1_ps(scale);
  switch (bits) {
    case 1: quantize_count_avx2<1>(x, vscale, boundaries, centroids, grid, idx, residual, n); break;
    case 2: quantize_count_avx2<2>(x, vscale, boundaries, centroids, grid, idx, residual, n); break;
    case 3: quantize_count_avx2<3>(x, vscale, boundaries, centroids, grid, idx, residual, n); break;
    case 4: quantize_count_avx2<4>(x, vscale, boundaries, centroids, grid, idx, residual, n); break;
    default:
      if (grid != nullptr && grid->cells > 0) {
        quantize_grid_avx2(x, vscale, *grid, centroids, bits, idx, residual, n);
      } else {
        quantize_search_avx2(x, vscale, boundaries, centroids, bits, idx, residual, n);
      }
  }
  // Where the helpers above are not inlined (the sanitizer build), GCC returns from them, which
  // take vector arguments, assuming clean upper halves that they never cleared
  // (KernelsReturnWithCleanUpperHalves): clear them before the SSE code of the tail.
  _mm256_zeroupper();
  const int i = n - n % 8;
  quantize_scalar(x + i, scale, boundaries, centroids, grid, bits, idx + i,
                  residual == nullptr ? nullptr : residual + i, n - i);
}

// Quantise and pack in one pass, 64 indices at a time: count32_bytes_avx2 gives each 32 indices'
// bytes in the packs' lane order (lane 0: indices 0-3, 8-11, 16-19, 24-27; lane 1: 4-7, 12-15, ...),
// and a packer per width turns two such registers into the 64 indices' code bytes, so no index
// bytes are stored and read back by a second pass. Every packer joins neighbours by multiply-adds
// (a field never exceeds its int16 / int32 lane) and then undoes the lane order.

// 2 bits: maddubs (1, 4) and madd (1, 16) leave one code byte per dword (lane 0 bytes 0 2 4 6,
// lane 1 bytes 1 3 5 7 of the 32 indices); two packs and an interleave of the lanes order them.
struct QuadPacker {
  static constexpr int kBits = 2;
  TURBOKV_TARGET_AVX2 static void pack64(const __m256i* bytes, uint8_t* out) {
    __m256i quads[2];
    for (int h = 0; h < 2; ++h) {
      quads[h] = _mm256_madd_epi16(_mm256_maddubs_epi16(bytes[h], _mm256_set1_epi16(0x0401)),
                                   _mm256_set1_epi32(0x00100001));
    }
    const __m256i words = _mm256_packus_epi32(quads[0], quads[1]);
    const __m256i packed = _mm256_packus_epi16(words, words);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                     _mm_unpacklo_epi8(_mm256_castsi256_si128(packed), _mm256_extracti128_si256(packed, 1)));
  }
};

// 3 bits: maddubs (1, 8) and madd (1, 64) make a 12-bit field of 4 indices per dword; lane 1's
// fields moved up 12 bits onto lane 0's are the 24 bits of each 8 indices, whose 3 low bytes a
// shuffle gathers (12 code bytes per 32 indices, stored 16 + 8).
struct TriplePacker {
  static constexpr int kBits = 3;
  TURBOKV_TARGET_AVX2 static void pack64(const __m256i* bytes, uint8_t* out) {
    const __m128i low_three_bytes = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    __m128i groups[2];  // 12 code bytes each, then zeros
    for (int h = 0; h < 2; ++h) {
      const __m256i fields = _mm256_madd_epi16(_mm256_maddubs_epi16(bytes[h], _mm256_set1_epi16(0x0801)),
                                               _mm256_set1_epi32(0x00400001));
      const __m128i octets = _mm_or_si128(_mm256_castsi256_si128(fields),
                                          _mm_slli_epi32(_mm256_extracti128_si256(fields, 1), 12));
      groups[h] = _mm_shuffle_epi8(octets, low_three_bytes);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_or_si128(groups[0], _mm_slli_si128(groups[1], 12)));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + 16), _mm_srli_si128(groups[1], 4));
  }
};

// 4 bits: maddubs (1, 16) joins each index pair into its code byte; after a packus, lane 0 holds
// pairs 0 1 4 5 8 9 12 13 | 16 17 ..., lane 1 pairs 2 3 6 7 ...; a qword permute brings pairs
// 0-15 into lane 0 and a shuffle sorts each lane.
struct NibblePacker {
  static constexpr int kBits = 4;
  TURBOKV_TARGET_AVX2 static void pack64(const __m256i* bytes, uint8_t* out) {
    const __m256i order = _mm256_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
                                           0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
    const __m256i weights = _mm256_set1_epi16(0x1001);  // bytes (1, 16)
    const __m256i pairs = _mm256_permute4x64_epi64(
        _mm256_packus_epi16(_mm256_maddubs_epi16(bytes[0], weights), _mm256_maddubs_epi16(bytes[1], weights)), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_shuffle_epi8(pairs, order));
  }
};

// Returns how many leading indices it packed (a multiple of 64). scale is a float, not a __m256:
// GCC leaves the upper register halves dirty on returning from a helper with vector arguments
// (KernelsReturnWithCleanUpperHalves).
template <class Packer, bool kSymmetric, bool kPositiveGrid = false>
TURBOKV_TARGET_AVX2 int quantize_packed_rows_avx2(const float* x, float scale, const float* boundaries,
                                                  const BoundaryGrid* grid, uint8_t* out, int n) {
  const __m256 vscale = _mm256_set1_ps(scale);
  CountBounds<Packer::kBits, kSymmetric, kPositiveGrid> bounds;
  set_bounds_avx2(boundaries, grid, &bounds);
  int i = 0;
  for (; i + 64 <= n; i += 64, out += 8 * Packer::kBits) {
    const __m256i bytes[2] = {count32_bytes_avx2(x + i, vscale, bounds),
                              count32_bytes_avx2(x + i + 32, vscale, bounds)};
    Packer::pack64(bytes, out);
  }
  return i;
}

template <class Packer>
TURBOKV_TARGET_AVX2 int quantize_packed_rows_avx2(const float* x, float scale, const float* boundaries,
                                                  const BoundaryGrid* grid, uint8_t* out, int n) {
  if constexpr (Packer::kBits == 4) {
    if (use_positive_grid(grid)) return quantize_packed_rows_avx2<Packer, true, true>(x, scale, boundaries, grid, out, n);
  }
  return grid != nullptr && grid->symmetric_with_zero
             ? quantize_packed_rows_avx2<Packer, true>(x, scale, boundaries, grid, out, n)
             : quantize_packed_rows_avx2<Packer, false>(x, scale, boundaries, grid, out, n);
}

// pack(quantize(x)) for one row: 2, 3 and 4 bits 64 indices at a time by quantize_packed_rows_avx2,
// 8 bits quantised straight into the codes, the rest (other widths, a tail) quantised to idx and packed.
TURBOKV_TARGET_AVX2 void quantize_packed_avx2(const float* x, float scale, const float* boundaries,
                                              const float* centroids, const BoundaryGrid* grid,
                                              int bits, uint8_t* idx, uint8_t* out, int n) {
  int done = 0;
  switch (bits) {
    case 2: done = quantize_packed_rows_avx2<QuadPacker>(x, scale, boundaries, grid, out, n); break;
    case 3: done = quantize_packed_rows_avx2<TriplePacker>(x, scale, boundaries, grid, out, n); break;
    case 4: done = quantize_packed_rows_avx2<NibblePacker>(x, scale, boundaries, grid, out, n); break;
    default: break;
  }
  if (done == n) return;
  if (bits == 8) {  // the codes are the index bytes: no copy through idx
    quantize_avx2(x, scale, boundaries, centroids, grid, bits, out, nullptr, n);
    return;
  }
  quantize_avx2(x + done, scale, boundaries, centroids, grid, bits, idx, nullptr, n - done);
  select_pack(SimdLevel::kAvx2)(idx, n - done, bits, out + done * bits / 8);
}

#define TURBOKV_ROW_PIPELINE_TARGET TURBOKV_TARGET_AVX2
#include "row_pipeline.inc"
#undef TURBOKV_ROW_PIPELINE_TARGET

// One row by the AVX2 stage kernels: sum_squares, fwht into a buffer, then the 4-bit count and
// packer or the 8-bit grid, without encode_one's per-row set-up.
struct RowByStages {
  SumSquaresFn sum_squares_of;
  FwhtFn fwht;
  const float* pre;
  const float* boundaries;
  const BoundaryGrid* grid;
  int d, bits;
  float* rotated;  // d floats
  float sum_squares(const float* in) const { return sum_squares_of(in, d); }
  TURBOKV_TARGET_AVX2 void encode(const float* in, float scale, uint8_t* out) const {
    fwht(in, pre, nullptr, rotated, d);
    if (bits == 4) {
      quantize_packed_rows_avx2<NibblePacker>(rotated, scale, boundaries, grid, out, d);
    } else {
      quantize_grid_avx2(rotated, _mm256_set1_ps(scale), *grid, nullptr, bits, out, nullptr, d);
    }
  }
};

// The AVX2 level's row encoder (KernelSet::encode_rows).
TURBOKV_TARGET_AVX2 int64_t encode_rows_avx2(const float* x, int64_t n, int64_t row_stride, int d, int bits,
                                             const float* pre, float sqrt_dim, float min_sum_squares,
                                             const float* boundaries, const BoundaryGrid& grid, uint8_t* codes,
                                             float* norms) {
  if (!encode_rows_fit(SimdLevel::kAvx2, bits, d)) return 0;
  alignas(32) float rotated[256];
  const RowByStages row_of{select_sum_squares(SimdLevel::kAvx2), select_fwht(SimdLevel::kAvx2), pre, boundaries,
                           &grid, d, bits, rotated};
  return encode_rows_pipelined(row_of, x, n, row_stride, d, int64_t{d} * bits / 8, sqrt_dim, min_sum_squares, codes,
                               norms);
}

template <int kBits>
TURBOKV_TARGET_AVX512 __m512 lookup16(const float* table, __m512i index) {
  if constexpr (kBits <= 4) return _mm512_permutexvar_ps(index, _mm512_loadu_ps(table));
  if constexpr (kBits == 5) {
    return _mm512_permutex2var_ps(_mm512_loadu_ps(table), index, _mm512_loadu_ps(table + 16));
  }
  return _mm512_i32gather_ps(index, table, 4);
}

// kLanes registers are searched side by side so that the dependent steps of one binary search
// (add, permute, compare, add) overlap with the others'.
template <int kBits, int kLanes>
TURBOKV_TARGET_AVX512 void quantize_block_avx512(const float* x, __m512 vscale,
                                                 const float* boundaries, const float* centroids,
                                                 uint8_t* idx, float* residual, __mmask16 mask) {
  __m512 v[kLanes];
  __m512i lo[kLanes];
  for (int k = 0; k < kLanes; ++k) {
    v[k] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + 16 * k), vscale);
    lo[k] = _mm512_setzero_si512();
  }
  for (int step = (1 << kBits) / 2; step >= 1; step /= 2) {
    for (int k = 0; k < kLanes; ++k) {
      const __m512i probe = _mm512_add_epi32(lo[k], _mm512_set1_epi32(step - 1));
      const __mmask16 ge = _mm512_cmp_ps_mask(v[k], lookup16<kBits>(boundaries, probe), _CMP_GE_OQ);
      lo[k] = _mm512_mask_add_epi32(lo[k], ge, lo[k], _mm512_set1_epi32(step));
    }
  }
  for (int k = 0; k < kLanes; ++k) {
    _mm_mask_storeu_epi8(idx + 16 * k, mask, _mm512_cvtepi32_epi8(lo[k]));
    if (residual != nullptr) {
      _mm512_mask_storeu_ps(residual + 16 * k, mask,
                            _mm512_sub_ps(v[k], lookup16<kBits>(centroids, lo[k])));
    }
  }
}

template <int kBits>
TURBOKV_TARGET_AVX512 void quantize_bits_avx512(const float* x, float scale,
                                                const float* boundaries, const float* centroids,
                                                uint8_t* idx, float* residual, int n) {
  const __m512 vscale = _mm512_set1_ps(scale);
  int i = 0;
  for (; i + 64 <= n; i += 64) {
    quantize_block_avx512<kBits, 4>(x + i, vscale, boundaries, centroids, idx + i,
                                    residual ? residual + i : nullptr, 0xFFFF);
  }
  for (; i < n; i += 16) {
    const int width = n - i < 16 ? n - i : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1u);
    quantize_block_avx512<kBits, 1>(x + i, vscale, boundaries, centroids, idx + i,
                                    residual ? residual + i : nullptr, mask);
  }
}

// 4-bit codes of the first n - n % 32 values straight from the narrow grid (nibbles_avx512).
// Returns how many values it packed.
TURBOKV_TARGET_AVX512 int quantize_packed_nibbles_avx512(const float* x, float scale,
                                                         const BoundaryGrid& grid, uint8_t* out, int n) {
  const NarrowGridAvx512 g = load_narrow_grid(grid.narrow);
  const __m512 vscale = _mm512_set1_ps(scale);
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512i a = grid_index(g, _mm512_mul_ps(_mm512_loadu_ps(x + i), vscale));
    const __m512i b = grid_index(g, _mm512_mul_ps(_mm512_loadu_ps(x + i + 16), vscale));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i / 2), nibbles_avx512(a, b));
  }
  return i;
}

// The centroids of 16 indices (masked-off lanes 0): a permute of the 4-bit table, a gather above.
TURBOKV_TARGET_AVX512 inline __m512 centroids_of(const NarrowGridAvx512&, const float* centroids, __m512i index,
                                                 __mmask16) {
  return lookup16<4>(centroids, index);
}

TURBOKV_TARGET_AVX512 inline __m512 centroids_of(const GridAvx512&, const float* centroids, __m512i index,
                                                 __mmask16 mask) {
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, index, centroids, 4);
}

// Indices (and residuals) on a grid, 16 values at a time (grid_index, encode_avx512.hpp): the
// narrow grid of 4 bits or the grid of 6-8 bits.
template <class Grid>
TURBOKV_TARGET_AVX512 void quantize_on_grid_avx512(const float* x, float scale, const Grid& g,
                                                   const float* centroids, uint8_t* idx, float* residual,
                                                   int n) {
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    // Masked-off lanes are 0, whose cell is in range: every gathered address is in the table.
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), vscale);
    const __m512i index = grid_index(g, v);
    _mm_mask_storeu_epi8(idx + i, mask, _mm512_cvtepi32_epi8(index));
    if (residual != nullptr) {
      _mm512_mask_storeu_ps(residual + i, mask, _mm512_sub_ps(v, centroids_of(g, centroids, index, mask)));
    }
  }
}

// by_gathers: the 6-8-bit grid's lookups by gathers, else by the AVX2 level's scalar loads.
TURBOKV_TARGET_AVX512 void quantize_avx512_routed(bool by_gathers, const float* x, float scale,
                                                  const float* boundaries, const float* centroids,
                                                  const BoundaryGrid* grid, int bits, uint8_t* idx,
                                                  float* residual, int n) {
  // 4 bits: the narrow grid (encode 0.85-0.87 of the binary search's time, bench/ab/run.sh on a
  // 2-core AVX-512 VM); 2 bits measured 1.18 (two search steps are cheaper than the grid's nine
  // operations) and 3 bits 1.01, so they keep the search.
  if (bits == 4 && grid != nullptr && grid->narrow.cells > 0) {
    quantize_on_grid_avx512(x, scale, load_narrow_grid(grid->narrow), centroids, idx, residual, n);
    _mm256_zeroupper();
    return;
  }
  // 6-8 bits: the grid (two lookups) beat this binary search (6-8 dependent gathers) 1.5x at 8
  // bits on a Sapphire Rapids Xeon. Where gathers are slow (AMD Zen 1-4: the AVX-512 level runs
  // on Zen 4) the AVX2 level's grid, whose lookups are scalar loads. Same indices either way
  // (bit-identity contract).
  if (bits >= 6 && grid != nullptr && grid->cells > 0) {
    if (!by_gathers) return quantize_avx2(x, scale, boundaries, centroids, grid, bits, idx, residual, n);
    quantize_on_grid_avx512(x, scale, load_grid(*grid), centroids, idx, residual, n);
    _mm256_zeroupper();
    return;
  }
  switch (bits) {
    case 0: quantize_bits_avx512<0>(x, scale, boundaries, centroids, idx, residual, n); break;
    case 1: quantize_bits_avx512<1>(x, scale, boundaries, centroids, idx, residual, n); break;
    case 2: quantize_bits_avx512<2>(x, scale, boundaries, centroids, idx, residual, n); break;
    case 3: quantize_bits_avx512<3>(x, scale, boundaries, centroids, idx, residual, n); break;
    case 4: quantize_bits_avx512<4>(x, scale, boundaries, centroids, idx, residual, n); break;
    case 5: quantize_bits_avx512<5>(x, scale, boundaries, centroids, idx, residual, n); break;
    case 6: quantize_bits_avx512<6>(x, scale, boundaries, centroids, idx, residual, n); break;
    case 7: quantize_bits_avx512<7>(x, scale, boundaries, centroids, idx, residual, n); break;
    default: quantize_bits_avx512<8>(x, scale, boundaries, centroids, idx, residual, n); break;
  }
  _mm256_zeroupper();  // as in quantize_avx2: the helpers take vector arguments
}

TURBOKV_TARGET_AVX512 void quantize_avx512(const float* x, float scale, const float* boundaries,
                                           const float* centroids, const BoundaryGrid* grid,
                                           int bits, uint8_t* idx, float* residual, int n) {
  quantize_avx512_routed(!kGathersAreSlow, x, scale, boundaries, centroids, grid, bits, idx, residual, n);
}

TURBOKV_TARGET_AVX512 void quantize_avx512_gathers(const float* x, float scale, const float* boundaries,
                                                   const float* centroids, const BoundaryGrid* grid,
                                                   int bits, uint8_t* idx, float* residual, int n) {
  quantize_avx512_routed(true, x, scale, boundaries, centroids, grid, bits, idx, residual, n);
}

TURBOKV_TARGET_AVX512 void quantize_packed_avx512(const float* x, float scale, const float* boundaries,
                                                  const float* centroids, const BoundaryGrid* grid,
                                                  int bits, uint8_t* idx, uint8_t* out, int n) {
  if (bits == 8) {  // the codes are the index bytes: no copy through idx
    quantize_avx512(x, scale, boundaries, centroids, grid, bits, out, nullptr, n);
    return;
  }
  int done = 0;
  if (bits == 4 && grid != nullptr && grid->narrow.cells > 0) {
    done = quantize_packed_nibbles_avx512(x, scale, *grid, out, n);
    _mm256_zeroupper();
    if (done == n) return;
  }
  quantize_avx512(x + done, scale, boundaries, centroids, grid, bits, idx, nullptr, n - done);
  select_pack(SimdLevel::kAvx512)(idx, n - done, bits, out + done * bits / 8);
}
#endif

}  // namespace

QuantizeFn select_quantize(SimdLevel level) {
  return TURBOKV_PICK(level, quantize_scalar, quantize_avx2, quantize_avx512);
}

QuantizePackedFn select_quantize_packed(SimdLevel level) {
#if TURBOKV_X86
  if (level == SimdLevel::kAvx2) return quantize_packed_avx2;
  if (level == SimdLevel::kAvx512) return quantize_packed_avx512;
#endif
  (void)level;
  return nullptr;
}

QuantizeFn select_quantize_avx512_gathers() {
#if TURBOKV_X86
  return quantize_avx512_gathers;
#else
  return nullptr;
#endif
}

EncodeRowsFn select_encode_rows_avx2() {
#if TURBOKV_X86
  return encode_rows_avx2;
#else
  return nullptr;
#endif
}

}  // namespace kernels
}  // namespace turbokv
