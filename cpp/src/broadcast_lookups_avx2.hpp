// Internal: scores of 5-8-bit codes by broadcast lookups, where vgatherdps is slow
// (kGathersAreSlow: AMD Zen 1-4). Each looked-up centroid is broadcast from the table by a load
// (vbroadcastss m32: a load-port operation, no shuffle) and multiplies the queries' coordinate
// lying side by side in one register, up to 8 queries per FMA: qt[kLanes i + a] = q[a d + i].
// (Values the same way, each coordinate's queries in a register across the keys: 1.00-1.12x the
// time of accumulate16_avx2's loads; not kept.) The scalar-load route it replaces spends a load and a vinsertps (a shuffle
// port that the FMAs share) per index, then one FMA per query. Index bytes come out of a 64-bit
// word by bextr (index_at), the byte loops unrolled so that each control is a constant: with
// broadcast and FMA about 3.5 operations per lookup where movzbl and a shift of the word made 4,
// which Zen 3's 6-wide dispatch bound near 0.67 cycles per lookup (measured 0.65-0.7). On Zen 3
// (kernel_choices_avx2.md round 32) K8V4 decode took 0.94-0.95x the time, 5-8 queries per KV head
// 0.92x; 5-7-bit words at 4 queries keep movzbl and a shift (by bextr K7V7 took 1.03-1.06x).
// Half the index bytes loaded from the rows instead (one operation fewer, one load more) left it
// load-bound: 1.09-1.31x the time (round 26).
#pragma once

#include <cstdint>
#include <cstring>

#include "avx2_helpers.hpp"
#include "kernels.hpp"

#if TURBOKV_X86
namespace turbokv {
namespace kernels {

// Whether scores of m queries on 5-8-bit codes take this route: where gathers are slow, up to 8
// queries, 8-bit codes in place or 5-7-bit ones spread by pdep (spread_fits). On Zen 3, one thread,
// 32K keys against the fused scalar loads (kernel_choices_avx2.md, round 26): 8-bit keys 0.92x the
// time at 4 queries per KV head, 0.93-0.96 at 2-3, 0.53-0.58 at 5-8 (the loads kept a row of
// lookups for tiles of 4 queries), but 1.04 at one query, which keeps the loads; 7-bit keys
// 0.77-0.82 at 1-4 queries, 0.55 at 7; 5-6-bit keys at 5-8 queries 0.75-0.82 against their
// signed byte planes (which keep 1-4 queries).
inline bool broadcast_fits(int m, int bits, int d) {
  return kGathersAreSlow && m <= 8 && (m > 1 || bits < 8) && d % 8 == 0 && (bits == 8 || spread_fits(bits, d));
}

// Index byte 0 of w, then w >>= 8 (movzbl and a shift; compilers spend a copy, a shift and a mask).
__attribute__((always_inline)) inline uint64_t next_index(uint64_t& w) {
  uint64_t index;
  asm("movzbl %b1, %k0\n\tshrq $8, %1" : "=&r"(index), "+r"(w));
  return index;
}

// m rows (row a at rows + a * stride, `count` floats each) side by side: out[kLanes i + a] =
// rows[a * stride + i], lanes a >= m zero. Queries (count = d) or softmax weights (count = keys).
template <int kLanes>
inline void interleave_rows(const float* rows, int64_t stride, int m, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    for (int a = 0; a < kLanes; ++a) out[kLanes * i + a] = a < m ? rows[a * stride + i] : 0.0f;
  }
}

// The 8 indices c .. c + 7 of key j as one word, byte t = index c + t: 8-bit codes in place.
struct InPlaceWords {
  static constexpr bool kBextrPairs = true;  // two_centroids by bextr (K8V4 0.94-0.95x the time)
  const uint8_t* codes;
  int64_t code_bytes;
  uint64_t operator()(int64_t j, int c) const {
    uint64_t w;
    std::memcpy(&w, codes + j * code_bytes + c, 8);
    return w;
  }
};

// As InPlaceWords for 5-7-bit codes, spread from the packed bytes by pdep (spread_indices).
struct SpreadWords {
  static constexpr bool kBextrPairs = false;  // by bextr K7V7 at 4 queries took 1.03-1.06x the time
  const uint8_t* codes;
  int64_t code_bytes;
  int bits, d;
  uint64_t mask;
  TURBOKV_TARGET_AVX2 uint64_t operator()(int64_t j, int c) const {
    return spread_indices(codes + j * code_bytes, c, bits, d, mask);
  }
};

// The centroids of two neighbouring indices of w as one register of two halves, each broadcast to
// 4 lanes: the multiplier of two coordinates' 4 queries. kBextr: bytes t and t + 1 of w by bextr;
// else the next two bytes by next_index, shifting w.
template <bool kBextr>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline __m256 two_centroids(const float* table, uint64_t& w, int t) {
  const uint64_t i0 = kBextr ? index_at(w, t) : next_index(w);
  const uint64_t i1 = kBextr ? index_at(w, t + 1) : next_index(w);
  return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_broadcast_ss(table + i0)), _mm_broadcast_ss(table + i1), 1);
}

// Scores of m <= kLanes queries (qt: interleave_rows of the queries) on keys j .. j + 7 of
// `words`: one accumulator per key. kLanes 8: a coordinate's 8 queries per FMA; kLanes 4: two
// coordinates' (even | odd) per FMA, so that 8 chains of d / 2 FMAs cover the FMA latency at 16
// lookups per round (one coordinate per FMA left the FMA latency, 4 cycles per 8 lookups, binding).
// out[a * out_stride + j + k] for a < m, k < 8. head_dim a multiple of 8.
template <int kLanes, typename Words>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void dot_eight_keys_broadcast(
    const float* qt, int m, int d, const float* table, const Words& words, int64_t j, float* out,
    int64_t out_stride) {
  __m256 acc[8];
  for (auto& v : acc) v = _mm256_setzero_ps();
  for (int c = 0; c < d; c += 8) {
    uint64_t w[8];
    for (int k = 0; k < 8; ++k) w[k] = words(j + k, c);
    if constexpr (kLanes == 8) {
#pragma GCC unroll 8
      for (int t = 0; t < 8; ++t) {
        const __m256 qc = _mm256_loadu_ps(qt + 8 * (c + t));
        for (int k = 0; k < 8; ++k) acc[k] = _mm256_fmadd_ps(qc, _mm256_broadcast_ss(table + index_at(w[k], t)), acc[k]);
      }
    } else {
#pragma GCC unroll 4
      for (int t = 0; t < 8; t += 2) {
        const __m256 qc = _mm256_loadu_ps(qt + 4 * (c + t));
        for (int k = 0; k < 8; ++k) acc[k] = _mm256_fmadd_ps(qc, two_centroids<Words::kBextrPairs>(table, w[k], t), acc[k]);
      }
    }
  }
  alignas(32) float sums[8][8];
  for (int k = 0; k < 8; ++k) _mm256_store_ps(sums[k], acc[k]);
  for (int a = 0; a < m; ++a) {
    for (int k = 0; k < 8; ++k) out[a * out_stride + j + k] = kLanes == 8 ? sums[k][a] : sums[k][a] + sums[k][4 + a];
  }
}

// Values of 5-8 queries (wt: interleave_rows<8> of their weights, n keys) into acc (m rows of d),
// 8 coordinates at a time: each coordinate's m sums in one register across all n keys, each
// running over the keys in order (as accumulate16_avx2: the same floats). Tiles of 4 queries
// looked every index up once per tile; here once for all. head_dim a multiple of 8.
template <typename Words>
TURBOKV_TARGET_AVX2 void axpy_eight_queries_broadcast(const float* wt, int m, int64_t n, const Words& words,
                                                      const float* table, int d, float* acc) {
  alignas(32) float lanes[8][8] = {};
  for (int i = 0; i < d; i += 8) {
    for (int t = 0; t < 8; ++t) {
      for (int a = 0; a < m; ++a) lanes[t][a] = acc[a * d + i + t];
    }
    __m256 sums[8];
    for (int t = 0; t < 8; ++t) sums[t] = _mm256_load_ps(lanes[t]);
    for (int64_t j = 0; j < n; ++j) {
      const __m256 weights = _mm256_loadu_ps(wt + 8 * j);
      const uint64_t word = words(j, i);
      for (int t = 0; t < 8; ++t) sums[t] = _mm256_fmadd_ps(weights, _mm256_broadcast_ss(table + index_at(word, t)), sums[t]);
    }
    for (int t = 0; t < 8; ++t) _mm256_store_ps(lanes[t], sums[t]);
    for (int t = 0; t < 8; ++t) {
      for (int a = 0; a < m; ++a) acc[a * d + i + t] = lanes[t][a];
    }
  }
}

}  // namespace kernels
}  // namespace turbokv
#endif
