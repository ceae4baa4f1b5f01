// Float32 scores and values of 3-bit codes on AVX-512 with VBMI, 16 coordinates per lookup in
// coordinate order: the 6 bytes of 16 indices are broadcast to the 8 qwords of a register (one
// load), vpmultishiftqb moves index 2k to the low bits of dword 2k and index 2k + 1 to those of
// dword 2k + 1, and vpermps looks the low 4 bits up in the 8 centroids repeated twice (bit 3 is the
// next index's lowest bit, which the repetition ignores): 2 shuffle-port instructions per 16
// coordinates where the byte planes (planes_vbmi_kernels.cpp) take 3.5, and the 512-bit FMAs share
// those ports (kernel_choices_avx2.md, round 20).
#include <cstring>

#include "avx512_helpers.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {

#if TURBOKV_X86
namespace {

#define TURBOKV_TARGET_AVX512_VBMI_LANES \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx2,fma,bmi,bmi2,f16c")))

// The centroids of 16 indices of a row, in coordinate order.
struct ThreeBitLanes {
  __m512i shifts, tail_shifts;  // tail: the 8-byte load starts 2 bytes early (the row's last group)
  __m512 table;

  TURBOKV_TARGET_AVX512_VBMI_LANES explicit ThreeBitLanes(const float* centroids) {
    alignas(64) uint8_t s[64], t[64];
    for (int k = 0; k < 8; ++k) {
      for (int b = 0; b < 8; ++b) {
        const int offset = 6 * k + (b < 4 ? 0 : 3);  // dword 2k: index 2k; dword 2k + 1: index 2k + 1
        s[8 * k + b] = static_cast<uint8_t>(offset);
        t[8 * k + b] = static_cast<uint8_t>(offset + 16);
      }
    }
    shifts = _mm512_load_si512(s);
    tail_shifts = _mm512_load_si512(t);
    alignas(64) float repeated[16];
    for (int e = 0; e < 16; ++e) repeated[e] = centroids[e & 7];
    table = _mm512_load_ps(repeated);
  }

  // Coordinates 16 g .. 16 g + 15 of the row at `row`. kLast: g is the row's last group, whose
  // 8-byte load ends at the row's last byte; no byte past the row's d * 3 / 8 is read.
  template <bool kLast>
  TURBOKV_TARGET_AVX512_VBMI_LANES __m512 at(const uint8_t* row, int g) const {
    int64_t word;
    std::memcpy(&word, row + 6 * int64_t{g} - (kLast ? 2 : 0), 8);
    const __m512i fields = _mm512_multishift_epi64_epi8(kLast ? tail_shifts : shifts, _mm512_set1_epi64(word));
    return _mm512_permutexvar_ps(fields, table);
  }
};

// even += q[16 g ..] f0, odd += q[16 g + 16 ..] f1 for kTile queries of d floats each.
template <int kTile>
TURBOKV_TARGET_AVX512_VBMI_LANES inline void add_pair(const float* q, int d, int g, __m512 f0, __m512 f1,
                                                      __m512* even, __m512* odd) {
  for (int a = 0; a < kTile; ++a) {
    even[a] = _mm512_fmadd_ps(_mm512_loadu_ps(q + static_cast<int64_t>(a) * d + 16 * g), f0, even[a]);
    odd[a] = _mm512_fmadd_ps(_mm512_loadu_ps(q + static_cast<int64_t>(a) * d + 16 * g + 16), f1, odd[a]);
  }
}

// kTile queries against every key: two FMA chains per query.
template <int kTile>
TURBOKV_TARGET_AVX512_VBMI_LANES void dot_lanes_tile(const ThreeBitLanes& lanes, const float* q, int d,
                                                     const uint8_t* codes, int64_t code_bytes, int64_t n,
                                                     float* out, int64_t out_stride, RowsAhead ahead) {
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
    const uint8_t* key = codes + j * code_bytes;
    fetch_key_ahead(codes, code_bytes, j, n);
    __m512 even[kTile], odd[kTile];
    for (int a = 0; a < kTile; ++a) even[a] = odd[a] = _mm512_setzero_ps();
    const int last = d / 16 - 1;
    for (int g = 0; g + 1 < last; g += 2) {
      add_pair<kTile>(q, d, g, lanes.at<false>(key, g), lanes.at<false>(key, g + 1), even, odd);
    }
    add_pair<kTile>(q, d, last - 1, lanes.at<false>(key, last - 1), lanes.at<true>(key, last), even, odd);
    __m512 sums[kTile];
    for (int a = 0; a < kTile; ++a) sums[a] = _mm512_add_ps(even[a], odd[a]);
    store_sums<kTile>(sums, out + j, out_stride);
  }
}

// kTile queries' accumulators of 64 coordinates stay in registers across every token.
template <int kTile>
TURBOKV_TARGET_AVX512_VBMI_LANES void axpy_lanes_tile(const ThreeBitLanes& lanes, const float* w, int64_t w_stride,
                                                      int d, const uint8_t* codes, int64_t code_bytes,
                                                      int64_t n, float* acc) {
  for (int c = 0; c < d / 64; ++c) {
    const bool last_chunk = c == d / 64 - 1;  // its 4th group is the row's last
    __m512 sums[kTile][4];
    for (int a = 0; a < kTile; ++a) {
      for (int r = 0; r < 4; ++r) sums[a][r] = _mm512_loadu_ps(acc + static_cast<int64_t>(a) * d + 64 * c + 16 * r);
    }
    for (int64_t j = 0; j < n; ++j) {
      const uint8_t* row = codes + j * code_bytes;
      _mm_prefetch(reinterpret_cast<const char*>(row + 16 * code_bytes), _MM_HINT_T0);
      __m512 f[4];
      for (int r = 0; r < 3; ++r) f[r] = lanes.at<false>(row, 4 * c + r);
      f[3] = last_chunk ? lanes.at<true>(row, 4 * c + 3) : lanes.at<false>(row, 4 * c + 3);
      for (int a = 0; a < kTile; ++a) {
        const __m512 weight = _mm512_set1_ps(w[a * w_stride + j]);
        for (int r = 0; r < 4; ++r) sums[a][r] = _mm512_fmadd_ps(weight, f[r], sums[a][r]);
      }
    }
    for (int a = 0; a < kTile; ++a) {
      for (int r = 0; r < 4; ++r) _mm512_storeu_ps(acc + static_cast<int64_t>(a) * d + 64 * c + 16 * r, sums[a][r]);
    }
  }
}

}  // namespace

TURBOKV_TARGET_AVX512_VBMI_LANES void dot_three_bit_lanes_vbmi(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                              const float* table, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  const ThreeBitLanes lanes(table);
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    dot_lanes_tile<4>(lanes, q + static_cast<int64_t>(a) * d, d, codes, code_bytes, n, out + a * out_stride, out_stride, ahead);
  }
  const float* rest = q + static_cast<int64_t>(a) * d;
  switch (m - a) {  // the last 1-3 queries share one tile's lookups
    case 3: dot_lanes_tile<3>(lanes, rest, d, codes, code_bytes, n, out + a * out_stride, out_stride, ahead); break;
    case 2: dot_lanes_tile<2>(lanes, rest, d, codes, code_bytes, n, out + a * out_stride, out_stride, ahead); break;
    case 1: dot_lanes_tile<1>(lanes, rest, d, codes, code_bytes, n, out + a * out_stride, out_stride, ahead); break;
    default: break;
  }
  _mm256_zeroupper();
}

TURBOKV_TARGET_AVX512_VBMI_LANES void axpy_three_bit_lanes_vbmi(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                               int64_t code_bytes, int64_t n, const float* table, int d, float* acc) {
  const ThreeBitLanes lanes(table);
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    axpy_lanes_tile<4>(lanes, w + a * w_stride, w_stride, d, codes, code_bytes, n, acc + static_cast<int64_t>(a) * d);
  }
  float* rest = acc + static_cast<int64_t>(a) * d;
  switch (m - a) {
    case 3: axpy_lanes_tile<3>(lanes, w + a * w_stride, w_stride, d, codes, code_bytes, n, rest); break;
    case 2: axpy_lanes_tile<2>(lanes, w + a * w_stride, w_stride, d, codes, code_bytes, n, rest); break;
    case 1: axpy_lanes_tile<1>(lanes, w + a * w_stride, w_stride, d, codes, code_bytes, n, rest); break;
    default: break;
  }
  _mm256_zeroupper();
}
#endif

}  // namespace kernels
}  // namespace turbokv
