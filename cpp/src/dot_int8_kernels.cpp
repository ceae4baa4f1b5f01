// Int8 scores (#13 item 2): the rotated query rounded to int8 with one scale per query, the
// centroids rounded to int8 with one scale per codebook, and the products summed exactly in int32.
// Integer sums are exact, so every SIMD level returns bit-identical scores (the contract of the
// codes, carried over to this path). Error: the rounding of the query (step max|q_i| / 127) and of
// the centroids (step max|c| / 127), far below the codec's own at <= 4 bits (bounded in
// tests/cpp/test_simd_parity.cpp, measured on models in bench/results/quality_int8.md); wider keys
// are not offered this path (an int8 query would dominate their error).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "avx2_helpers.hpp"
#include "int8_layout.hpp"
#include "kernels.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace turbokv {
namespace kernels {

float quantize_int8(const float* x, int n, int8_t* out) {
  float top = 0.0f;
  for (int i = 0; i < n; ++i) top = std::max(top, std::fabs(x[i]));
  if (!(top > 0.0f)) {
    std::fill(out, out + n, int8_t{0});
    return 0.0f;
  }
  const float inv = 127.0f / top;
  // |x_i| * inv <= 127 up to one rounding, and lrint rounds that to at most 127.
  for (int i = 0; i < n; ++i) out[i] = static_cast<int8_t>(std::lrint(x[i] * inv));
  return top / 127.0f;
}

namespace {

void dot_packed_int8_scalar(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                            int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                            int bits, int d, float* out, int64_t out_stride) {
  std::vector<uint8_t> idx(static_cast<size_t>(d));
  const UnpackFn unpack = select_unpack(SimdLevel::kScalar);
  for (int64_t j = 0; j < n; ++j) {
    unpack(codes + j * code_bytes, d, bits, idx.data());
    for (int a = 0; a < m; ++a) {
      const int8_t* qa = q8 + static_cast<int64_t>(a) * d;
      int32_t sum = 0;
      for (int i = 0; i < d; ++i) sum += int32_t{qa[i]} * int32_t{table8[idx[i]]};
      // |sum| <= 127^2 * 1024 < 2^24: the conversion is exact at every level.
      out[a * out_stride + j] = static_cast<float>(sum) * (q_scale[a] * table_scale);
    }
  }
}

// call(std::integral_constant<int, fields>) with the kernel's indices per scored byte: 8 / bits
// on packed lanes (1, 2, 4 bits), else 1 (unpacked rows).
template <typename Call>
[[maybe_unused]] void with_int8_fields(int bits, int64_t code_bytes, int d, Call&& call) {
  if (int8_packed_lanes(bits, code_bytes, d)) {
    if (bits == 4) return call(std::integral_constant<int, 2>{});
    if (bits == 2) return call(std::integral_constant<int, 4>{});
    if (bits == 1) return call(std::integral_constant<int, 8>{});
  }
  call(std::integral_constant<int, 1>{});
}

// The keys one after another as the SIMD kernels read them: packed codes in place, or each key
// unpacked into a zero-padded buffer of `padded` bytes (whole chunks; the query is zero there).
class [[maybe_unused]] Int8KeyRows {
 public:
  Int8KeyRows(const uint8_t* codes, int64_t code_bytes, int bits, int d, bool unpacked,
              int64_t padded, SimdLevel level)
      : codes_(codes), code_bytes_(code_bytes), bits_(bits), d_(d), unpack_(select_unpack(level)),
        idx_(unpacked ? static_cast<size_t>(padded) : 0, 0) {}
  const uint8_t* operator()(int64_t j) {
    const uint8_t* key = codes_ + j * code_bytes_;
    if (idx_.empty()) return key;
    unpack_(key, d_, bits_, idx_.data());
    return idx_.data();
  }

 private:
  const uint8_t* codes_;
  int64_t code_bytes_;
  int bits_, d_;
  UnpackFn unpack_;
  std::vector<uint8_t> idx_;
};

#if TURBOKV_X86
// AVX2: pshufb looks 32 indices up in the 16-byte centroid table and maddubs multiplies |c| by
// the query byte carrying c's sign (no saturation: 2 * 127^2 < 2^15), madd with ones widens to
// int32.
// 32 bytes of a key; a last chunk of 16 is zero-extended (its query bytes are zero).
TURBOKV_TARGET_AVX2 __m256i load_chunk32(const uint8_t* p, int64_t remaining) {
  if (remaining >= 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

template <int kFields, int kTile, bool kThreeBit>
TURBOKV_TARGET_AVX2 void score_key_int8(const uint8_t* key, const Int8Layout& L, const int8_t* qt,
                                        int64_t per_query, __m256i table, const float* scales,
                                        int64_t code_bytes, float* out, int64_t out_stride) {
  const __m256i mask = _mm256_set1_epi8(static_cast<char>(L.bits >= 8 ? 0xFF : (1 << L.bits) - 1));
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};
  for (int g = 0; g < L.chunks; ++g) {
    const __m256i bytes =
        kThreeBit ? _mm256_set_m128i(unpack3_x16_avx2(key + 12 * g + 6, key + code_bytes),
                                     unpack3_x16_avx2(key + 12 * g, key + code_bytes))
                  : load_chunk32(key + 32 * g, L.stride - 32 * g);
    for (int s = 0; s < kFields; ++s) {
      const __m256i idx =
          kFields == 1 ? bytes : _mm256_and_si256(_mm256_srli_epi16(bytes, s * L.bits), mask);
      const __m256i c = _mm256_shuffle_epi8(table, idx);
      const __m256i c_abs = _mm256_abs_epi8(c);
      const int8_t* qs = qt + (static_cast<int64_t>(g) * kFields + s) * 32;
      for (int a = 0; a < kTile; ++a) {
        const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + a * per_query));
        const __m256i pairs = _mm256_maddubs_epi16(c_abs, _mm256_sign_epi8(qa, c));
        acc[a] = _mm256_add_epi32(acc[a], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  // Four horizontal int32 sums at once: lane a of the result is query a's.
  const __m256i h01 = _mm256_hadd_epi32(acc[0], acc[1]), h23 = _mm256_hadd_epi32(acc[2], acc[3]);
  const __m256i h = _mm256_hadd_epi32(h01, h23);
  const __m128i sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  alignas(16) float values[4];
  _mm_store_ps(values, _mm_mul_ps(_mm_cvtepi32_ps(sums), _mm_loadu_ps(scales)));
  for (int a = 0; a < kTile; ++a) out[a * out_stride] = values[a];
}

template <int kFields, bool kThreeBit>
TURBOKV_TARGET_AVX2 void dot_int8_avx2(const int8_t* q8, const float* q_scale, int m,
                                       const uint8_t* codes, int64_t code_bytes, int64_t n,
                                       const int8_t* table8, float table_scale, int bits, int d,
                                       float* out, int64_t out_stride) {
  // kFields == 1: the indices are unpacked per key into a zero-padded buffer of whole chunks, or
  // (kThreeBit) in registers from the packed row.
  constexpr bool unpacked = kFields == 1;
  const Int8Layout L = int8_layout(32, kFields, bits, code_bytes, d);
  const int64_t per_query = static_cast<int64_t>(L.chunks) * kFields * 32;
  const std::vector<int8_t> qperm = permute_queries(q8, m, d, L, 32);
  // The same products as the scalar kernel: q_scale[a] * table_scale, then times the sum.
  std::vector<float> scales(static_cast<size_t>(m) + 4, 0.0f);
  for (int a = 0; a < m; ++a) scales[a] = q_scale[a] * table_scale;
  alignas(32) int8_t repeated[32];
  for (int i = 0; i < 32; ++i) repeated[i] = table8[i & 15];
  const __m256i table = _mm256_load_si256(reinterpret_cast<const __m256i*>(repeated));
  Int8KeyRows keys(codes, code_bytes, bits, d, unpacked && !kThreeBit, L.stride, SimdLevel::kAvx2);
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* key = keys(j);
    int a = 0;
    for (; a + 4 <= m; a += 4) {
      score_key_int8<kFields, 4, kThreeBit>(key, L, qperm.data() + a * per_query, per_query, table,
                                            scales.data() + a, code_bytes, out + a * out_stride + j,
                                            out_stride);
    }
    const int rest = m - a;
    const int8_t* qt = qperm.data() + a * per_query;
    float* o = out + a * out_stride + j;
    const float* sc = scales.data() + a;
    if (rest == 3) score_key_int8<kFields, 3, kThreeBit>(key, L, qt, per_query, table, sc, code_bytes, o, out_stride);
    if (rest == 2) score_key_int8<kFields, 2, kThreeBit>(key, L, qt, per_query, table, sc, code_bytes, o, out_stride);
    if (rest == 1) score_key_int8<kFields, 1, kThreeBit>(key, L, qt, per_query, table, sc, code_bytes, o, out_stride);
  }
}

void dot_packed_int8_avx2(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                          int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                          int bits, int d, float* out, int64_t out_stride) {
  // 3 bits: chunk g's 32 indices taken apart from its 12 packed bytes in registers (kThreeBit).
  if (bits == 3 && int8_three_bit_in_registers(code_bytes, d)) {
    return dot_int8_avx2<1, true>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, bits, d, out, out_stride);
  }
  with_int8_fields(bits, code_bytes, d, [&](auto fields) {
    dot_int8_avx2<decltype(fields)::value, false>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, bits, d, out, out_stride);
  });
}

// AVX-512: the VNNI kernel where it fits (int8_vnni_fit), else the AVX2 one.
void dot_packed_int8_avx512(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                            int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                            int bits, int d, float* out, int64_t out_stride) {
  if (int8_vnni_fit(bits, code_bytes, d)) {
    return dot_packed_int8_vnni(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, bits, d, out, out_stride);
  }
  dot_packed_int8_avx2(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, bits, d, out, out_stride);
}

#endif

#if defined(__aarch64__)
// NEON: tbl looks 16 indices up in the 16-byte centroid table; smull/smull2 multiply them by the
// query bytes into int16 (|product| <= 127^2) and sadalp adds neighbouring pairs into int32 lanes.
template <int kFields, int kTile>
void score_key_int8_neon(const uint8_t* key, const Int8Layout& L, const int8_t* qt,
                         int64_t per_query, int8x16_t table, const float* scales, float* out,
                         int64_t out_stride) {
  const uint8x16_t mask = vdupq_n_u8(static_cast<uint8_t>(L.bits >= 8 ? 0xFF : (1 << L.bits) - 1));
  int32x4_t acc[kTile];
  for (int a = 0; a < kTile; ++a) acc[a] = vdupq_n_s32(0);
  for (int g = 0; g < L.chunks; ++g) {
    const uint8x16_t bytes = vld1q_u8(key + 16 * g);
    for (int s = 0; s < kFields; ++s) {
      const uint8x16_t idx =
          kFields == 1 ? bytes : vandq_u8(vshlq_u8(bytes, vdupq_n_s8(static_cast<int8_t>(-s * L.bits))), mask);
      const int8x16_t c = vqtbl1q_s8(table, idx);
      const int8_t* qs = qt + (static_cast<int64_t>(g) * kFields + s) * 16;
      for (int a = 0; a < kTile; ++a) {
        const int8x16_t qa = vld1q_s8(qs + a * per_query);
        acc[a] = vpadalq_s16(acc[a], vmull_s8(vget_low_s8(c), vget_low_s8(qa)));
        acc[a] = vpadalq_s16(acc[a], vmull_high_s8(c, qa));
      }
    }
  }
  for (int a = 0; a < kTile; ++a) out[a * out_stride] = static_cast<float>(vaddvq_s32(acc[a])) * scales[a];
}

template <int kFields>
void dot_int8_neon(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                   int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale, int bits,
                   int d, float* out, int64_t out_stride) {
  constexpr bool unpacked = kFields == 1;  // indices unpacked per key into whole zero-padded chunks
  const Int8Layout L = int8_layout(16, kFields, bits, code_bytes, d);
  const int64_t per_query = static_cast<int64_t>(L.chunks) * kFields * 16;
  const std::vector<int8_t> qperm = permute_queries(q8, m, d, L, 16);
  std::vector<float> scales(static_cast<size_t>(m));
  for (int a = 0; a < m; ++a) scales[a] = q_scale[a] * table_scale;  // the scalar kernel's product
  const int8x16_t table = vld1q_s8(table8);
  Int8KeyRows keys(codes, code_bytes, bits, d, unpacked, L.stride, SimdLevel::kNeon);
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* key = keys(j);
    int a = 0;
    for (; a + 4 <= m; a += 4) {
      score_key_int8_neon<kFields, 4>(key, L, qperm.data() + a * per_query, per_query, table,
                                      scales.data() + a, out + a * out_stride + j, out_stride);
    }
    const int8_t* qt = qperm.data() + a * per_query;  // the last 1-3 queries in one tile
    float* o = out + a * out_stride + j;
    const float* sc = scales.data() + a;
    if (m - a == 3) score_key_int8_neon<kFields, 3>(key, L, qt, per_query, table, sc, o, out_stride);
    if (m - a == 2) score_key_int8_neon<kFields, 2>(key, L, qt, per_query, table, sc, o, out_stride);
    if (m - a == 1) score_key_int8_neon<kFields, 1>(key, L, qt, per_query, table, sc, o, out_stride);
  }
}

void dot_packed_int8_neon(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                          int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                          int bits, int d, float* out, int64_t out_stride) {
  with_int8_fields(bits, code_bytes, d, [&](auto fields) {
    dot_int8_neon<decltype(fields)::value>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, bits, d, out, out_stride);
  });
}
#endif

}  // namespace

DotPackedInt8Fn select_dot_packed_int8(SimdLevel level) {
  // The AVX-512 level takes the VNNI kernel where the CPU has it and the shape fits, else the AVX2
  // kernel (the sums are exact, so the choice changes only speed). VNNI lost nothing and gained
  // nothing on a 16-core Sapphire Rapids Xeon whose decode was bound by memory; on 2 cores it is
  // the arithmetic that binds (kernel_choices_avx2.md, round 15).
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return dot_packed_int8_neon;  // kept beside its AVX2 twin
#endif
  return TURBOKV_PICK(level, dot_packed_int8_scalar, dot_packed_int8_avx2, dot_packed_int8_avx512);
}

}  // namespace kernels
}  // namespace turbokv
