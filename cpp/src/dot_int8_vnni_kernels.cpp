// Int8 scores of 1-4-bit keys on AVX-512 with VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later;
// 3-bit keys also need VBMI, which unpacks them to index bytes first). Same integers as every other
// level (dot_int8_kernels.cpp), so the same floats.
//
// vpdpbusd multiplies unsigned by signed bytes and adds each 4 neighbouring products into an int32
// lane, exactly (no saturation). The centroids are signed, so the table holds c + 128 (1..255) and
// the query's own sum, times 128, is subtracted once per key: sum (c + 128) q - 128 sum q = sum c q.
// |(c + 128) q| <= 255 * 127 and d <= 1024 keep every partial sum far inside int32.
//
// One 64-byte step covers 64 code bytes of a key: 128 indices at 4 bits, one vpshufb per field
// (the 16-entry table repeated in each 128-bit lane) and one vpdpbusd per field and query. Four keys
// are scored side by side so that their 16 accumulators (4 keys x 4 queries) fold into one register
// of 16 sums in 15 shuffle-and-add steps, 4 per key instead of 4 full reductions per key.
#include <algorithm>
#include <vector>

#include "int8_layout.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {

#if TURBOKV_X86
const bool kHasAvx512Vnni = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") != 0;
}();

bool int8_vnni_fit(int bits, int64_t code_bytes, int d) {
  return kHasAvx512Vnni && (int8_packed_lanes(bits, code_bytes, d) || (bits == 3 && planes_vbmi_fit(bits, d)));
}

namespace {

#define TURBOKV_TARGET_AVX512_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,bmi,bmi2,f16c")))

// What a call shares across its keys.
struct VnniCall {
  Int8Layout layout;
  int64_t code_bytes;
  int64_t per_query;       // bytes of one permuted query
  const int8_t* queries;   // permuted, per_query bytes each
  const int32_t* offsets;  // 128 * sum of query a's bytes
  const float* scales;     // q_scale[a] * table_scale, the scalar kernel's product
  __m512i table;           // c + 128 as unsigned bytes, repeated in each 128-bit lane
};

// The bytes of a row that a 64-byte step covers: all 64, or the rest of the row.
TURBOKV_TARGET_AVX512_VNNI inline __mmask64 step_mask(int64_t left) {
  return left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
}

// Bytes [64 g, 64 g + 64) of a key, zero past its end.
TURBOKV_TARGET_AVX512_VNNI inline __m512i load_step(const uint8_t* key, int64_t code_bytes, int g) {
  return _mm512_maskz_loadu_epi8(step_mask(code_bytes - 64 * static_cast<int64_t>(g)), key + 64 * g);
}

// acc[k][a] += the products of key k's step-g bytes with query a's, for kKeys keys and kTile queries.
// Bytes past a key's end load as zero and look up centroid 0: the query must be zero there, or
// kMasked zeroes those lookups (a lone 32-byte key while the query is laid out for two).
template <int kFields, int kKeys, int kTile, bool kMasked = false>
TURBOKV_TARGET_AVX512_VNNI inline void accumulate_keys(const VnniCall& c, const uint8_t* keys,
                                                       const int8_t* queries, __m512i (&acc)[kKeys][4]) {
  constexpr int kBits = 8 / kFields;
  const __m512i field_mask = _mm512_set1_epi8(static_cast<char>((1 << kBits) - 1));
  for (int g = 0; g < c.layout.chunks; ++g) {
    __m512i bytes[kKeys];
    for (int k = 0; k < kKeys; ++k) bytes[k] = load_step(keys + k * c.code_bytes, c.code_bytes, g);
    for (int s = 0; s < kFields; ++s) {
      const int8_t* qs = queries + (static_cast<int64_t>(g) * kFields + s) * 64;
      __m512i q[kTile];
      for (int a = 0; a < kTile; ++a) q[a] = _mm512_loadu_si512(qs + a * c.per_query);
      for (int k = 0; k < kKeys; ++k) {
        const __m512i idx = _mm512_and_si512(_mm512_srli_epi16(bytes[k], s * kBits), field_mask);
        const __m512i centroids =
            kMasked ? _mm512_maskz_shuffle_epi8(step_mask(c.code_bytes - 64 * int64_t{g}), c.table, idx)
                    : _mm512_shuffle_epi8(c.table, idx);
        for (int a = 0; a < kTile; ++a) acc[k][a] = _mm512_dpbusd_epi32(acc[k][a], centroids, q[a]);
      }
    }
  }
}

// Rows of 32 bytes (2 bits at head_dim 128, 4 bits at 64): keys 2p and 2p + 1 in one 64-byte load,
// the query laid out for 32 lanes and repeated in both halves, so no lane idles. acc[p][a]: lanes
// 0-1 hold key 2p's partial sums, lanes 2-3 key 2p + 1's.
template <int kFields, int kTile>
TURBOKV_TARGET_AVX512_VNNI inline void accumulate_pairs(const VnniCall& c, const uint8_t* keys,
                                                        const int8_t* queries, __m512i (&acc)[2][4]) {
  constexpr int kBits = 8 / kFields;
  const __m512i field_mask = _mm512_set1_epi8(static_cast<char>((1 << kBits) - 1));
  const __m512i bytes[2] = {_mm512_loadu_si512(keys), _mm512_loadu_si512(keys + 64)};
  for (int s = 0; s < kFields; ++s) {
    __m512i q[kTile];
    for (int a = 0; a < kTile; ++a) q[a] = _mm512_loadu_si512(queries + s * 64 + a * c.per_query);
    for (int p = 0; p < 2; ++p) {
      const __m512i idx = _mm512_and_si512(_mm512_srli_epi16(bytes[p], s * kBits), field_mask);
      const __m512i centroids = _mm512_shuffle_epi8(c.table, idx);
      for (int a = 0; a < kTile; ++a) acc[p][a] = _mm512_dpbusd_epi32(acc[p][a], centroids, q[a]);
    }
  }
}

// [x0 + x2, x1 + x3, y0 + y2, y1 + y3] by 128-bit lanes: x and y halved.
TURBOKV_TARGET_AVX512_VNNI inline __m512i fold_halves(__m512i x, __m512i y) {
  return _mm512_add_epi32(_mm512_shuffle_i32x4(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_i32x4(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
}

// From x = [x0, x1, y0, y1] and z = [z0, z1, w0, w1] (fold_halves outputs): [x, y, z, w], one lane each.
TURBOKV_TARGET_AVX512_VNNI inline __m512i fold_quarters(__m512i xy, __m512i zw) {
  return _mm512_add_epi32(_mm512_shuffle_i32x4(xy, zw, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(xy, zw, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Scores of 4 keys for kTile queries: out[a * out_stride + k], k < 4.
template <int kFields, int kTile, bool kPaired>
TURBOKV_TARGET_AVX512_VNNI void score_four_keys(const VnniCall& c, const uint8_t* keys, int a0,
                                                float* out, int64_t out_stride) {
  // per_key[k]: lane a holds key k's 4 partial sums for query a.
  __m512i per_key[4];
  if constexpr (kPaired) {
    __m512i acc[2][4];
    for (auto& pair : acc) {
      for (__m512i& v : pair) v = _mm512_setzero_si512();
    }
    accumulate_pairs<kFields, kTile>(c, keys, c.queries + a0 * c.per_query, acc);
    for (int p = 0; p < 2; ++p) {
      // [query 0 key 2p, query 0 key 2p + 1, query 1 key 2p, query 1 key 2p + 1], and queries 2, 3.
      const __m512i q01 = fold_quarters(acc[p][0], acc[p][1]), q23 = fold_quarters(acc[p][2], acc[p][3]);
      per_key[2 * p] = _mm512_shuffle_i32x4(q01, q23, _MM_SHUFFLE(2, 0, 2, 0));
      per_key[2 * p + 1] = _mm512_shuffle_i32x4(q01, q23, _MM_SHUFFLE(3, 1, 3, 1));
    }
  } else {
    __m512i acc[4][4];
    for (auto& key : acc) {
      for (__m512i& v : key) v = _mm512_setzero_si512();
    }
    accumulate_keys<kFields, 4, kTile>(c, keys, c.queries + a0 * c.per_query, acc);
    for (int k = 0; k < 4; ++k) {
      per_key[k] = fold_quarters(fold_halves(acc[k][0], acc[k][1]), fold_halves(acc[k][2], acc[k][3]));
    }
  }
  // Within each lane: [k0 + k0', k1 + k1', ...] twice, then lane a = [key 0, 1, 2, 3] of query a.
  const __m512i k01 = _mm512_add_epi32(_mm512_unpacklo_epi32(per_key[0], per_key[1]),
                                       _mm512_unpackhi_epi32(per_key[0], per_key[1]));
  const __m512i k23 = _mm512_add_epi32(_mm512_unpacklo_epi32(per_key[2], per_key[3]),
                                       _mm512_unpackhi_epi32(per_key[2], per_key[3]));
  const __m512i sums = _mm512_add_epi32(_mm512_unpacklo_epi64(k01, k23), _mm512_unpackhi_epi64(k01, k23));
  alignas(64) int32_t lane[16];
  _mm512_store_si512(lane, sums);
  for (int a = 0; a < kTile; ++a) {
    const __m128i exact = _mm_sub_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(lane + 4 * a)),
                                        _mm_set1_epi32(c.offsets[a0 + a]));
    // |sum| <= 127^2 * 1024 < 2^24: the conversion is exact, as in the scalar kernel.
    _mm_storeu_ps(out + a * out_stride,
                  _mm_mul_ps(_mm_cvtepi32_ps(exact), _mm_set1_ps(c.scales[a0 + a])));
  }
}

template <int kFields, int kTile, bool kPaired>
TURBOKV_TARGET_AVX512_VNNI void score_one_key(const VnniCall& c, const uint8_t* key, int a0, float* out,
                                              int64_t out_stride) {
  __m512i acc[1][4];
  for (__m512i& v : acc[0]) v = _mm512_setzero_si512();
  accumulate_keys<kFields, 1, kTile, kPaired>(c, key, c.queries + a0 * c.per_query, acc);
  for (int a = 0; a < kTile; ++a) {
    const int32_t exact = _mm512_reduce_add_epi32(acc[0][a]) - c.offsets[a0 + a];
    out[a * out_stride] = static_cast<float>(exact) * c.scales[a0 + a];
  }
}

// Queries in tiles of 4, the last 1-3 in one tile.
template <int kFields, bool kFour, bool kPaired>
TURBOKV_TARGET_AVX512_VNNI void score_keys(const VnniCall& c, int m, const uint8_t* keys, float* out,
                                           int64_t out_stride) {
  for (int a0 = 0; a0 < m; a0 += 4) {
    float* o = out + a0 * out_stride;
    switch (m - a0 < 4 ? m - a0 : 4) {
      case 4: kFour ? score_four_keys<kFields, 4, kPaired>(c, keys, a0, o, out_stride) : score_one_key<kFields, 4, kPaired>(c, keys, a0, o, out_stride); break;
      case 3: kFour ? score_four_keys<kFields, 3, kPaired>(c, keys, a0, o, out_stride) : score_one_key<kFields, 3, kPaired>(c, keys, a0, o, out_stride); break;
      case 2: kFour ? score_four_keys<kFields, 2, kPaired>(c, keys, a0, o, out_stride) : score_one_key<kFields, 2, kPaired>(c, keys, a0, o, out_stride); break;
      default: kFour ? score_four_keys<kFields, 1, kPaired>(c, keys, a0, o, out_stride) : score_one_key<kFields, 1, kPaired>(c, keys, a0, o, out_stride); break;
    }
  }
}

// Rows of 32 bytes (2 bits at head_dim 128, 4 bits at 64) go two keys per 64-byte load: the query
// is laid out for 32 lanes and repeated in both halves of each 64-byte step.
template <int kFields>
std::vector<int8_t> vnni_queries(const int8_t* q8, int m, int d, const Int8Layout& layout, bool paired) {
  if (!paired) return permute_queries(q8, m, d, layout, 64);
  const std::vector<int8_t> half = permute_queries(q8, m, d, layout, 32);
  std::vector<int8_t> out(2 * half.size());
  for (size_t block = 0; block < half.size() / 32; ++block) {
    std::copy(half.begin() + 32 * block, half.begin() + 32 * (block + 1), out.begin() + 64 * block);
    std::copy(half.begin() + 32 * block, half.begin() + 32 * (block + 1), out.begin() + 64 * block + 32);
  }
  return out;
}

// kPaired: rows of 32 bytes, two keys per load (score_four_keys).
template <int kFields, bool kPaired>
TURBOKV_TARGET_AVX512_VNNI void dot_int8_vnni(const int8_t* q8, const float* q_scale, int m,
                                              const uint8_t* codes, int64_t code_bytes, int64_t n,
                                              const int8_t* table8, float table_scale, int d,
                                              float* out, int64_t out_stride, RowsAhead ahead) {
  const Int8Layout layout = int8_layout(kPaired ? 32 : 64, kFields, 8 / kFields, code_bytes, d);
  const std::vector<int8_t>& queries = remembered_queries(
      q8, m, d, layout, kPaired ? 32 : 64, [&] { return vnni_queries<kFields>(q8, m, d, layout, kPaired); });
  std::vector<int32_t> offsets(static_cast<size_t>(m));
  std::vector<float> scales(static_cast<size_t>(m));
  for (int a = 0; a < m; ++a) {
    int32_t sum = 0;
    for (int i = 0; i < d; ++i) sum += q8[static_cast<int64_t>(a) * d + i];
    offsets[a] = 128 * sum;
    scales[a] = q_scale[a] * table_scale;
  }
  // c + 128 as an unsigned byte is c's bits with the top one flipped.
  const __m128i shifted = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table8)),
                                        _mm_set1_epi8(static_cast<char>(0x80)));
  const VnniCall c{layout,         code_bytes,     static_cast<int64_t>(layout.chunks) * kFields * 64,
                   queries.data(), offsets.data(), scales.data(),
                   _mm512_broadcast_i32x4(shifted)};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    for (int k = 0; k < 4; ++k) {
      ahead.fetch(j + k);
      fetch_key_ahead(codes, code_bytes, j + k, n);
    }
    score_keys<kFields, true, kPaired>(c, m, codes + j * code_bytes, out + j, out_stride);
  }
  for (; j < n; ++j) {
    ahead.fetch(j);
    score_keys<kFields, false, kPaired>(c, m, codes + j * code_bytes, out + j, out_stride);
  }
  _mm256_zeroupper();
}

template <int kFields>
void dot_int8_vnni_rows(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                        int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale, int d,
                        float* out, int64_t out_stride, RowsAhead ahead) {
  if (code_bytes == 32) {
    return dot_int8_vnni<kFields, true>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, d, out, out_stride, ahead);
  }
  dot_int8_vnni<kFields, false>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, d, out, out_stride, ahead);
}

}  // namespace

void dot_packed_int8_vnni(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                          int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                          int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  if (bits == 3) {
    // Index bytes first (64 per vpermb + vpmultishiftqb), then the one-index-per-byte route: the
    // AVX2 kernel's per-key unpack made 3-bit int8 scores slower than float32 at this level.
    // One buffer per thread, kept across calls: decode calls this once per 256-token block.
    thread_local std::vector<uint8_t> idx;
    idx.resize(static_cast<size_t>(n) * d);
    unpack_rows_vbmi(codes, code_bytes, n, bits, d, idx.data());
    return dot_int8_vnni<1, false>(q8, q_scale, m, idx.data(), d, n, table8, table_scale, d, out, out_stride, ahead);
  }
  switch (bits) {
    case 4: return dot_int8_vnni_rows<2>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, d, out, out_stride, ahead);
    case 2: return dot_int8_vnni_rows<4>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, d, out, out_stride, ahead);
    default: return dot_int8_vnni_rows<8>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, d, out, out_stride, ahead);
  }
}

#else
const bool kHasAvx512Vnni = false;
bool int8_vnni_fit(int, int64_t, int) { return false; }
#endif

}  // namespace kernels
}  // namespace turbokv
