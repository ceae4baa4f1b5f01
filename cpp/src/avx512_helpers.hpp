// Internal: small AVX-512 building blocks shared by the packed-code kernels.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels.hpp"
#include "lane_order.hpp"

#if TURBOKV_X86
namespace turbokv {
namespace kernels {

// The four horizontal sums of a, b, c, d as lanes 0..3, in 9 instructions instead of 4 x 8.
TURBOKV_TARGET_AVX512 inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Per 128-bit lane: ab = [a0+a2, b0+b2, a1+a3, b1+b3], likewise cd.
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  // Per 128-bit lane: [a, b, c, d] partial sums.
  const __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
  return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}

// out[a * out_stride] = the horizontal sum of acc[a], for a < kTile.
template <int kTile>
TURBOKV_TARGET_AVX512 inline void store_sums(const __m512* acc, float* out, int64_t out_stride) {
  if constexpr (kTile == 4) {
    const __m128 sums = reduce4(acc[0], acc[1], acc[2], acc[3]);
    out[0] = _mm_cvtss_f32(sums);
    out[out_stride] = _mm_cvtss_f32(_mm_shuffle_ps(sums, sums, 0x55));
    out[2 * out_stride] = _mm_cvtss_f32(_mm_shuffle_ps(sums, sums, 0xAA));
    out[3 * out_stride] = _mm_cvtss_f32(_mm_shuffle_ps(sums, sums, 0xFF));
  } else {
    for (int a = 0; a < kTile; ++a) out[a * out_stride] = _mm512_reduce_add_ps(acc[a]);
  }
}

// Room for the permuted copies of queries and accumulators that the packed kernels make on every
// call, i.e. once per 256-token block in decode: on the stack up to kInline floats (4 queries of
// head_dim 512), on the heap beyond, so that decode does not allocate per block.
class PermutedScratch {
 public:
  explicit PermutedScratch(int64_t floats) {
    if (floats > kInline) heap_.resize(static_cast<size_t>(floats));
  }
  float* data() { return heap_.empty() ? inline_ : heap_.data(); }

 private:
  static constexpr int64_t kInline = 2048;
  alignas(64) float inline_[kInline];
  std::vector<float> heap_;
};

// v[0, kFields) hold 16 kFields consecutive floats x; afterwards v[s] lane l holds x[l kFields + s]
// (the lane order of one 16-byte chunk of codes with kFields indices per byte): log2(kFields)
// rounds of even/odd splits, 2 permutes per register and round.
template <int kFields>
TURBOKV_TARGET_AVX512 inline void split_fields(__m512* v) {
  if constexpr (kFields > 1) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    __m512 e[kFields / 2], o[kFields / 2];
    for (int k = 0; k < kFields / 2; ++k) {
      e[k] = _mm512_permutex2var_ps(v[2 * k], even, v[2 * k + 1]);
      o[k] = _mm512_permutex2var_ps(v[2 * k], odd, v[2 * k + 1]);
    }
    split_fields<kFields / 2>(e);  // the even x: fields 0, 2, 4, ...
    split_fields<kFields / 2>(o);  // the odd x: fields 1, 3, 5, ...
    for (int s = 0; s < kFields / 2; ++s) {
      v[2 * s] = e[s];
      v[2 * s + 1] = o[s];
    }
  }
}

// The inverse of split_fields.
template <int kFields>
TURBOKV_TARGET_AVX512 inline void merge_fields(__m512* v) {
  if constexpr (kFields > 1) {
    const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high = _mm512_add_epi32(low, _mm512_set1_epi32(8));
    __m512 e[kFields / 2], o[kFields / 2];
    for (int s = 0; s < kFields / 2; ++s) {
      e[s] = v[2 * s];
      o[s] = v[2 * s + 1];
    }
    merge_fields<kFields / 2>(e);
    merge_fields<kFields / 2>(o);
    for (int k = 0; k < kFields / 2; ++k) {
      v[2 * k] = _mm512_permutex2var_ps(e[k], low, o[k]);
      v[2 * k + 1] = _mm512_permutex2var_ps(e[k], high, o[k]);
    }
  }
}

// to_lanes and from_lanes with 16 lanes and kFields indices per byte. When every vector is whole
// 16-byte chunks (d a multiple of 16 kFields) the order is a transpose within each chunk's
// registers (split_fields): 8 permutes per 4-bit query of head_dim 128 instead of 128 scalar
// copies; other shapes take the scalar copies.
template <int kFields>
TURBOKV_TARGET_AVX512 void to_lanes_avx512(const float* x, int m, int d, int chunks, float* out) {
  if (d % (16 * kFields) != 0) return to_lanes(x, m, d, chunks, kFields, 16, out);
  for (int64_t v = 0; v < static_cast<int64_t>(m) * d; v += 16 * kFields) {
    __m512 r[kFields];
    for (int s = 0; s < kFields; ++s) r[s] = _mm512_loadu_ps(x + v + 16 * s);
    split_fields<kFields>(r);
    for (int s = 0; s < kFields; ++s) _mm512_storeu_ps(out + v + 16 * s, r[s]);
  }
}

template <int kFields>
TURBOKV_TARGET_AVX512 void from_lanes_avx512(const float* in, int m, int d, int chunks, float* x) {
  if (d % (16 * kFields) != 0) return from_lanes(in, m, d, chunks, kFields, 16, x);
  for (int64_t v = 0; v < static_cast<int64_t>(m) * d; v += 16 * kFields) {
    __m512 r[kFields];
    for (int s = 0; s < kFields; ++s) r[s] = _mm512_loadu_ps(in + v + 16 * s);
    merge_fields<kFields>(r);
    for (int s = 0; s < kFields; ++s) _mm512_storeu_ps(x + v + 16 * s, r[s]);
  }
}

}  // namespace kernels
}  // namespace turbokv
#endif
