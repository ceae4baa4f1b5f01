// Internal: AVX-512 steps of encoding, shared by the stage kernels (hadamard_kernels.cpp,
// quantize_kernels.cpp) and the fused row encoder (encode_kernels.cpp), so that both perform the
// same float operations in the same order (the bit-identity contract, kernels.hpp).
#pragma once
#include <cstdint>

#include "boundary_grid.hpp"
#include "kernels.hpp"

#if TURBOKV_X86
namespace turbokv {
namespace kernels {

// The 16 partial sums of sum_squares folded 16 -> 8 -> 4 -> 2 -> 1, exactly as fold16 does.
TURBOKV_TARGET_AVX512 inline float fold16_avx512(__m512 acc) {
  const __m256 v8 = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
  const __m128 v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
  const __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
  return _mm_cvtss_f32(_mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 0x55)));
}

// The Walsh-Hadamard butterflies 1, 2, 4 and 8 apart within one register (lane j pairs with
// j ^ h): partner + v * sign is a + b in the lower lane and a - b in the upper one, exactly (the
// product by +-1 is exact, so the fused multiply-add rounds like the plain add or subtract).
TURBOKV_TARGET_AVX512 inline __m512 butterflies_within_avx512(__m512 v) {
  const __m512 s1 = _mm512_setr_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
  const __m512 s2 = _mm512_setr_ps(1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1);
  const __m512 s4 = _mm512_setr_ps(1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1);
  const __m512 s8 = _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
  v = _mm512_fmadd_ps(v, s1, _mm512_permute_ps(v, 0xB1));
  v = _mm512_fmadd_ps(v, s2, _mm512_permute_ps(v, 0x4E));
  v = _mm512_fmadd_ps(v, s4, _mm512_shuffle_f32x4(v, v, 0xB1));
  return _mm512_fmadd_ps(v, s8, _mm512_shuffle_f32x4(v, v, 0x4E));
}

// The whole unnormalised transform of 16 kRegs floats held in r: the butterflies within each
// register, then those kRegs / 2, ..., 1 registers apart, stage by stage.
template <int kRegs>
TURBOKV_TARGET_AVX512 inline void fwht_in_registers_avx512(__m512* r) {
  for (int k = 0; k < kRegs; ++k) r[k] = butterflies_within_avx512(r[k]);
  for (int h = 1; h < kRegs; h *= 2) {
    for (int k = 0; k < kRegs; ++k) {
      if (k & h) continue;
      const __m512 a = r[k], b = r[k + h];
      r[k] = _mm512_add_ps(a, b);
      r[k + h] = _mm512_sub_ps(a, b);
    }
  }
}

// 4 bits on the narrow grid (at most 32 cells): index = below[cell] + (v >= candidate[cell]),
// the cell from BoundaryGrid::cell's float operations, candidate and count looked up in registers
// by two-register permutes. Three shuffle-port operations per 16 values instead of the binary
// search's eight (a permute and a compare per step).
struct NarrowGridAvx512 {
  __m512 origin, inv_width, last_cell, candidate_lo, candidate_hi;
  __m512i below_lo, below_hi;
};

TURBOKV_TARGET_AVX512 inline NarrowGridAvx512 load_narrow_grid(const BoundaryGrid::Narrow& g) {
  return {_mm512_set1_ps(g.origin),           _mm512_set1_ps(g.inv_width),
          _mm512_set1_ps(static_cast<float>(g.cells - 1)),
          _mm512_load_ps(g.candidate),        _mm512_load_ps(g.candidate + 16),
          _mm512_load_si512(g.below),         _mm512_load_si512(g.below + 16)};
}

// BoundaryGrid::cell's float operations, 16 lanes at once (both grids).
TURBOKV_TARGET_AVX512 inline __m512i grid_cell_avx512(__m512 v, __m512 origin, __m512 inv_width, __m512 last_cell) {
  const __m512 t = _mm512_mul_ps(_mm512_sub_ps(v, origin), inv_width);
  return _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), last_cell));
}

// Lanes 2i (even) or 2i + 1 (odd) of a then b: one two-register permute's index.
TURBOKV_TARGET_AVX512 inline __m512i even_lanes() {
  return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
TURBOKV_TARGET_AVX512 inline __m512i odd_lanes() { return _mm512_add_epi32(even_lanes(), _mm512_set1_epi32(1)); }

TURBOKV_TARGET_AVX512 inline __m512i grid_index(const NarrowGridAvx512& g, __m512 v) {
  const __m512i cell = grid_cell_avx512(v, g.origin, g.inv_width, g.last_cell);
  const __m512 candidate = _mm512_permutex2var_ps(g.candidate_lo, cell, g.candidate_hi);
  const __m512i below = _mm512_permutex2var_epi32(g.below_lo, cell, g.below_hi);
  return _mm512_mask_add_epi32(below, _mm512_cmp_ps_mask(v, candidate, _CMP_GE_OQ), below,
                               _mm512_set1_epi32(1));
}

// 5+ bits on the grid (boundary_grid.hpp): each cell's candidate and count come in one 64-bit
// gather element, so 16 values gather 16 elements (two 32-bit gathers per 8 values read 32), and
// two two-register permutes split the pairs.
struct GridAvx512 {
  __m512 origin, inv_width, last_cell;
  const void* table;
};

TURBOKV_TARGET_AVX512 inline GridAvx512 load_grid(const BoundaryGrid& g) {
  return {_mm512_set1_ps(g.origin), _mm512_set1_ps(g.inv_width), _mm512_set1_ps(static_cast<float>(g.cells - 1)),
          g.table.data()};
}

TURBOKV_TARGET_AVX512 inline __m512i grid_index(const GridAvx512& g, __m512 v) {
  const __m512i cell = grid_cell_avx512(v, g.origin, g.inv_width, g.last_cell);
  const __m512i first = _mm512_i32gather_epi64(_mm512_castsi512_si256(cell), g.table, sizeof(GridCell));
  const __m512i second = _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(cell, 1), g.table, sizeof(GridCell));
  const __m512 candidate = _mm512_castsi512_ps(_mm512_permutex2var_epi32(first, even_lanes(), second));
  const __m512i below = _mm512_permutex2var_epi32(first, odd_lanes(), second);
  return _mm512_mask_add_epi32(below, _mm512_cmp_ps_mask(v, candidate, _CMP_GE_OQ), below, _mm512_set1_epi32(1));
}

// Lane i = index 2i | index 2i + 1 << kShift for 32 indices, a = those of values [0, 16), b = [16,
// 32): two two-register permutes take the even and the odd values' indices (pack's order).
template <int kShift>
TURBOKV_TARGET_AVX512 inline __m512i pair_lanes(__m512i a, __m512i b) {
  return _mm512_or_si512(_mm512_permutex2var_epi32(a, even_lanes(), b),
                         _mm512_slli_epi32(_mm512_permutex2var_epi32(a, odd_lanes(), b), kShift));
}

// The 4-bit codes of 32 indices as 16 bytes: 6 operations where two vpmovqb took 9. 2-bit codes
// are nibbles of pair_lanes<2> (pairs, then pairs of pairs).
TURBOKV_TARGET_AVX512 inline __m128i nibbles_avx512(__m512i a, __m512i b) {
  return _mm512_cvtepi32_epi8(pair_lanes<4>(a, b));
}

}  // namespace kernels
}  // namespace turbokv
#endif
