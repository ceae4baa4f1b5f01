// Int8 scores (#13 item 2): the rotated query rounded to int8 with one scale per query, the
// centroids rounded to int8 with one scale per codebook, and the products summed exactly in int32.
// Integer sums are exact, so every SIMD level returns bit-identical scores (the contract of the
// codes, carried over to this path). Error: the rounding of the query (step max|q_i| / 127) and of
// the centroids (step max|c| / 63, kInt8CentroidTop), far below the codec's own at <= 4 bits (bounded in
// tests/cpp/test_simd_parity.cpp, measured on models in bench/results/quality_int8.md); wider keys
// round to int16 instead (an int8 query would dominate their error: dot_int16_kernels.cpp).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "avx2_helpers.hpp"
#include "int8_layout.hpp"
#include "key_index_rows.hpp"
#include "kernels.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace turbokv {
namespace kernels {

namespace {

// Rows rounded to integers of magnitude <= top with one scale (quantize_int8, quantize_int16).
template <typename Int>
float quantize_to(const float* x, int n, int top_int, Int* out) {
  float top = 0.0f;
  for (int i = 0; i < n; ++i) top = std::max(top, std::fabs(x[i]));
  if (!(top > 0.0f)) {
    std::fill(out, out + n, Int{0});
    return 0.0f;
  }
  const RowRounding r = row_rounding(top, top_int);
  for (int i = 0; i < n; ++i) out[i] = static_cast<Int>(static_cast<int>(round_scaled(x[i], r)));
  return top / static_cast<float>(top_int);
}

}  // namespace

RowRounding row_rounding(float top, int top_int) {
  const float pre = top < 1e-30f ? 0x1p64f : 1.0f;
  return {pre, static_cast<float>(top_int) / (top * pre), static_cast<float>(top_int)};
}

float quantize_int8(const float* x, int n, int8_t* out, int top) {
  if (top < 1 || top > 127) throw std::invalid_argument("quantize_int8: top must be in [1, 127]");
  return quantize_to(x, n, top, out);
}

void require_int8_centroids(const int8_t* table8) {
  for (int i = 0; i < 16; ++i) {
    if (table8[i] < -kInt8CentroidTop || table8[i] > kInt8CentroidTop) {
      throw std::invalid_argument("int8 centroid bytes must lie in [-" +
                                  std::to_string(kInt8CentroidTop) + ", " + std::to_string(kInt8CentroidTop) +
                                  "], entry " + std::to_string(i) + " is " + std::to_string(table8[i]));
    }
  }
}

float quantize_int16(const float* x, int n, int top, int16_t* out) {
  if (top < 1 || top > 32767) throw std::invalid_argument("quantize_int16: top must be in [1, 32767]");
  return quantize_to(x, n, top, out);
}

int int16_top(int d) {
  // d * t^2 < 2^31 bounds every partial sum of d products; t <= 32767 keeps t in int16.
  int t = static_cast<int>(std::sqrt(2147483647.0 / std::max(d, 1)));
  while (static_cast<int64_t>(d) * t * t >= (int64_t{1} << 31)) --t;
  return std::min(t, 32767);
}

namespace {

void dot_packed_int8_scalar(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                            int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                            int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  require_int8_centroids(table8);
  std::vector<uint8_t> idx(static_cast<size_t>(d));
  const UnpackFn unpack = select_unpack(SimdLevel::kScalar);
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
    unpack(codes + j * code_bytes, d, bits, idx.data());
    for (int a = 0; a < m; ++a) {
      const int8_t* qa = q8 + static_cast<int64_t>(a) * d;
      int32_t sum = 0;
      for (int i = 0; i < d; ++i) sum += int32_t{qa[i]} * int32_t{table8[idx[i]]};
      // |sum| <= 127 * 63 * 1024 < 2^24: the conversion is exact at every level.
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

#if TURBOKV_X86
// What the AVX2 kernel scores: the code rows as stored (1, 2, 4 bits, or index bytes unpacked per
// key), or 3-bit rows read in registers, as index bytes (by SIMD) or as the nibble bytes of their
// 4-bit rows (by pdep: half the lookups' bytes, the 4-bit kernel's steps).
enum class KeyRows { kCodes, kThreeBitIndices, kThreeBitNibbles };

// The AVX2 kernel once per VnniForm (int8_avx2_kernel.inc).
#define TURBOKV_AVX2_VARIANTS_FILE "int8_avx2_kernel.inc"
#include "avx2_variants.inc"
#undef TURBOKV_AVX2_VARIANTS_FILE

void dot_packed_int8_avx2(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                          int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                          int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  dot_packed_int8_avx2_variant(kAvx2VnniForm, !kPdepIsSlow)(
      q8, q_scale, m, codes, code_bytes, n, table8, table_scale, bits, d, out, out_stride, ahead);
}

// AVX-512: the VNNI kernel where it fits (int8_vnni_fit), else the AVX2 one.
void dot_packed_int8_avx512(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                            int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                            int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  if (int8_vnni_fit(bits, code_bytes, d)) {
    require_int8_centroids(table8);
    return dot_packed_int8_vnni(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, bits, d, out, out_stride, ahead);
  }
  dot_packed_int8_avx2(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, bits, d, out, out_stride, ahead);
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
                   int d, float* out, int64_t out_stride, RowsAhead ahead) {
  constexpr bool unpacked = kFields == 1;  // indices unpacked per key into whole zero-padded chunks
  const Int8Layout L = int8_layout(16, kFields, bits, code_bytes, d);
  const int64_t per_query = static_cast<int64_t>(L.chunks) * kFields * 16;
  const std::vector<int8_t>& qperm =
      remembered_queries(q8, m, d, L, 16, [&] { return permute_queries(q8, m, d, L, 16); });
  std::vector<float> scales(static_cast<size_t>(m));
  for (int a = 0; a < m; ++a) scales[a] = q_scale[a] * table_scale;  // the scalar kernel's product
  const int8x16_t table = vld1q_s8(table8);
  KeyIndexRows keys(codes, code_bytes, bits, d, unpacked, L.stride, SimdLevel::kNeon);
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
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
                          int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  require_int8_centroids(table8);
  with_int8_fields(bits, code_bytes, d, [&](auto fields) {
    dot_int8_neon<decltype(fields)::value>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, bits, d, out, out_stride, ahead);
  });
}
#endif

}  // namespace

#if TURBOKV_X86
const bool kHasAvxVnni = [] {
  // CPUID leaf 7 subleaf 1, EAX bit 4 (clang 14's __builtin_cpu_supports has no "avxvnni"). The
  // AVX2 level that uses it has already checked that the OS saves the 256-bit registers.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0 && ((eax >> 4) & 1u) != 0;
}();

const VnniForm kAvx2VnniForm = [] {
#ifdef TURBOKV_AVX2_PLAIN  // timing only (bench/ab/run.sh's AB_FLAGS): what Zen 1-4's AVX2 level runs
  return VnniForm::kNone;
#endif
  if (TURBOKV_VNNI_FORMS && kHasAvxVnni) return VnniForm::kVex;
#if defined(TURBOKV_AVX2_EVEX_VNNI) && TURBOKV_VNNI_FORMS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) return VnniForm::kEvex;
#endif
  return VnniForm::kNone;
}();

bool vnni_form_runs(VnniForm form) {
  switch (form) {
    case VnniForm::kNone: return true;
    case VnniForm::kVex: return TURBOKV_VNNI_FORMS && kHasAvxVnni;
    case VnniForm::kEvex: return TURBOKV_VNNI_FORMS && kHasAvx512Vnni && __builtin_cpu_supports("avx512vl");
  }
  return false;
}

DotPackedInt8Fn dot_packed_int8_avx2_variant(VnniForm vnni, bool pdep) {
  switch (vnni) {
    case VnniForm::kNone: return pdep ? plain::dot_packed_int8_with<true> : plain::dot_packed_int8_with<false>;
#if TURBOKV_VNNI_FORMS
    case VnniForm::kVex: return pdep ? avx_vnni::dot_packed_int8_with<true> : avx_vnni::dot_packed_int8_with<false>;
    case VnniForm::kEvex: return pdep ? evex_vnni::dot_packed_int8_with<true> : evex_vnni::dot_packed_int8_with<false>;
#else
    case VnniForm::kVex:
    case VnniForm::kEvex: return nullptr;
#endif
  }
  return nullptr;
}
#else
const bool kHasAvxVnni = false;
const VnniForm kAvx2VnniForm = VnniForm::kNone;
bool vnni_form_runs(VnniForm form) { return form == VnniForm::kNone; }
DotPackedInt8Fn dot_packed_int8_avx2_variant(VnniForm, bool) { return nullptr; }
#endif

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
