// 5-8-bit codes on AVX-512 with VBMI, by byte planes (3-bit ones, which dot_planes_vbmi and
// axpy_planes_vbmi also take, go by three_bit_float_vbmi_kernels.cpp's lanes since round 20; 5-bit
// scores by vpermi2ps since round 39, dot_five_bit_vbmi):
// byte p of every centroid forms a plane of 2^bits bytes, and vpermb / vpermi2b look up 64 codes' bytes at once (6 / 7 index bits;
// at 8 bits bit 7 picks one of two vpermi2b halves). Four planes and two rounds of unpacks
// reassemble the floats exactly (the AVX2 byte-plane idea, dot_packed_kernels.cpp, at up to 256
// entries), so 64 coordinates cost 15-21 shuffles shared by every query of the KV head, instead
// of the AVX2 rows route (gathers, an unpack pass) this level took for these widths before.
// Packed codes below 8 bits are taken apart in registers: 64 codes are 8 * bits bytes, vpermb
// gives each 64-bit lane the bits bytes of its 8 codes and vpmultishiftqb moves code j of a lane
// to byte j (paper-independent; packing layout in turbokv/packing.hpp).
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "avx512_helpers.hpp"
#include "int16_queries.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {

#if TURBOKV_X86
const bool kHasAvx512Vbmi = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vbmi") != 0;
}();

bool planes_vbmi_fit(int bits, int d) {
  return kHasAvx512Vbmi && (bits == 3 || (bits >= 5 && bits <= 8)) && d % 64 == 0;
}

bool planes_vbmi_signed(const float* table, int bits) { return bits == 8 && float_table_antisymmetric(table, bits); }

namespace {

#define TURBOKV_TARGET_AVX512_VBMI \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx2,fma,bmi,bmi2,f16c")))

// The 4 byte planes of a table of 2^kBits floats, 64 entries per register:
// reg[kQuarters * p + k] holds byte p of entries 64 k .. 64 k + 63 (zero past the table).
// kSigned (8 bits, an antisymmetric table: planes_vbmi_signed): the planes of the upper 128
// entries alone, the magnitudes; the lower half's entries are their negatives (lookup64).
template <int kBits, bool kSigned = false>
struct Planes {
  static_assert(!kSigned || kBits == 8, "signed planes: 8-bit tables");
  static constexpr int kQuarters = kBits <= 6 ? 1 : (1 << kBits) / 64 / (kSigned ? 2 : 1);
  __m512i reg[4 * kQuarters];
};

template <int kBits, bool kSigned = false>
TURBOKV_TARGET_AVX512_VBMI Planes<kBits, kSigned> load_planes(const float* table) {
  if constexpr (kSigned) table += 128;
  constexpr int kQuarters = Planes<kBits, kSigned>::kQuarters, kEntries = 1 << (kSigned ? 7 : kBits);
  alignas(64) uint8_t bytes[4][64 * kQuarters] = {};
  // Per 16 floats: vpermb gathers byte p of each float into the register's 16-byte quarter p.
  alignas(64) int8_t order[64];
  for (int p = 0; p < 4; ++p) {
    for (int e = 0; e < 16; ++e) order[16 * p + e] = static_cast<int8_t>(4 * e + p);
  }
  const __m512i by_plane = _mm512_load_si512(order);
  // Tables are padded to kMinTableSize (16) floats, so whole blocks of 16 are readable.
  for (int block = 0; block < (kEntries + 15) / 16; ++block) {
    const __m512i t = _mm512_permutexvar_epi8(by_plane, _mm512_loadu_si512(table + 16 * block));
    alignas(64) uint8_t split[64];
    _mm512_store_si512(split, t);
    const int count = kEntries < 16 ? kEntries : 16;
    for (int p = 0; p < 4; ++p) std::memcpy(bytes[p] + 16 * block, split + 16 * p, count);
  }
  Planes<kBits, kSigned> planes;
  for (int p = 0; p < 4; ++p) {
    for (int k = 0; k < kQuarters; ++k) planes.reg[kQuarters * p + k] = _mm512_load_si512(bytes[p] + 64 * k);
  }
  return planes;
}

// 64 codes of kBits bits (8 * kBits bytes) as 64 index bytes in coordinate order; the shuffle
// controls are set up once per call.
template <int kBits>
struct IndexLoader {
  __m512i gather, shift, mask;

  TURBOKV_TARGET_AVX512_VBMI IndexLoader() {
    alignas(64) int8_t g[64], s[64];
    for (int lane = 0; lane < 8; ++lane) {
      for (int j = 0; j < 8; ++j) {
        g[8 * lane + j] = static_cast<int8_t>(kBits * lane + (j < kBits ? j : 0));
        s[8 * lane + j] = static_cast<int8_t>(kBits * j);
      }
    }
    gather = _mm512_load_si512(g);
    shift = _mm512_load_si512(s);
    mask = _mm512_set1_epi8(static_cast<char>((1 << kBits) - 1));
  }

  TURBOKV_TARGET_AVX512_VBMI __m512i operator()(const uint8_t* src) const {
    if constexpr (kBits == 8) {
      return _mm512_loadu_si512(src);
    } else {
      // A masked load reads only this chunk's bytes (the row may end right after them).
      const __m512i raw = _mm512_maskz_loadu_epi8((uint64_t{1} << (8 * kBits)) - 1, src);
      const __m512i lanes = _mm512_permutexvar_epi8(gather, raw);  // lane l: bytes of codes 8l..8l+7
      return _mm512_and_si512(_mm512_multishift_epi64_epi8(shift, lanes), mask);  // byte j: code j
    }
  }
};

// The centroids of 64 codes as 4 registers: f[r] lane 4 L + e holds coordinate 16 L + 4 r + e
// (L the 128-bit lane), the order the unpacks leave them in; queries and accumulators are
// permuted to match once per call (swap_plane_order).
// One plane's bytes of 64 codes (the plane's Planes<kBits>::kQuarters registers).
template <int kBits>
TURBOKV_TARGET_AVX512_VBMI inline __m512i plane_bytes(const __m512i* plane, __m512i codes) {
  if constexpr (kBits <= 6) {
    return _mm512_permutexvar_epi8(codes, plane[0]);
  } else if constexpr (kBits == 7) {
    return _mm512_permutex2var_epi8(plane[0], codes, plane[1]);
  } else {
    const __m512i low = _mm512_permutex2var_epi8(plane[0], codes, plane[1]);
    const __m512i high = _mm512_permutex2var_epi8(plane[2], codes, plane[3]);
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(codes), low, high);  // bit 7: entries 128+
  }
}

// Signed planes (8 bits): a code below 128 is entry 127 - code negated, one at or above it entry
// code - 128 (its low 7 bits, all vpermi2b reads): one vpermi2b per plane where the whole table
// takes two and a blend, and negation flips bit 7 of byte 3. The table's own float bits.
template <int kBits, bool kSigned = false>
TURBOKV_TARGET_AVX512_VBMI inline void lookup64(const Planes<kBits, kSigned>& planes, __m512i codes, __m512* f) {
  constexpr int kQuarters = Planes<kBits, kSigned>::kQuarters;
  __m512i b[4];
  if constexpr (kSigned) {
    const __mmask64 lower = _mm512_cmpge_epi8_mask(codes, _mm512_setzero_si512());  // signed: code < 128
    const __m512i magnitude = _mm512_mask_sub_epi8(codes, lower, _mm512_set1_epi8(127), codes);
    for (int p = 0; p < 4; ++p) b[p] = plane_bytes<7>(planes.reg + kQuarters * p, magnitude);
    b[3] = _mm512_mask_add_epi8(b[3], lower, b[3], _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    for (int p = 0; p < 4; ++p) b[p] = plane_bytes<kBits>(planes.reg + kQuarters * p, codes);
  }
  const __m512i w01_low = _mm512_unpacklo_epi8(b[0], b[1]), w01_high = _mm512_unpackhi_epi8(b[0], b[1]);
  const __m512i w23_low = _mm512_unpacklo_epi8(b[2], b[3]), w23_high = _mm512_unpackhi_epi8(b[2], b[3]);
  f[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(w01_low, w23_low));
  f[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(w01_low, w23_low));
  f[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(w01_high, w23_high));
  f[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(w01_high, w23_high));
}

// Coordinate i = 64 c + 16 L + 4 r + e sits at 64 c + 16 r + 4 L + e in plane order: within each
// 64 floats a transpose of 4 x 4 blocks of 4 floats, its own inverse, so one function converts
// both ways (8 block shuffles per 64 floats).
TURBOKV_TARGET_AVX512_VBMI void swap_plane_order(const float* in, int m, int d, float* out) {
  for (int64_t v = 0; v < static_cast<int64_t>(m) * d; v += 64) {
    const __m512 x0 = _mm512_loadu_ps(in + v), x1 = _mm512_loadu_ps(in + v + 16);
    const __m512 x2 = _mm512_loadu_ps(in + v + 32), x3 = _mm512_loadu_ps(in + v + 48);
    // t0 = blocks (x0.0, x0.1, x1.0, x1.1), t1 = (x0.2, x0.3, x1.2, x1.3); t2, t3 likewise of x2, x3.
    const __m512 t0 = _mm512_shuffle_f32x4(x0, x1, 0x44), t1 = _mm512_shuffle_f32x4(x0, x1, 0xEE);
    const __m512 t2 = _mm512_shuffle_f32x4(x2, x3, 0x44), t3 = _mm512_shuffle_f32x4(x2, x3, 0xEE);
    // Output r gathers block r of x0..x3.
    _mm512_storeu_ps(out + v, _mm512_shuffle_f32x4(t0, t2, 0x88));
    _mm512_storeu_ps(out + v + 16, _mm512_shuffle_f32x4(t0, t2, 0xDD));
    _mm512_storeu_ps(out + v + 32, _mm512_shuffle_f32x4(t1, t3, 0x88));
    _mm512_storeu_ps(out + v + 48, _mm512_shuffle_f32x4(t1, t3, 0xDD));
  }
}

// kTile queries (q + a * d, in the order the chunks' registers hold their coordinates) against
// every key: each 64-code chunk of the key is looked up once (chunk(key, c, f): its centroids as
// 4 registers), then two FMA chains per query.
template <int kTile, typename Chunk>
TURBOKV_TARGET_AVX512_VBMI void dot_tile(const Chunk& chunk, const float* q, int d, const uint8_t* codes,
                                         int64_t code_bytes, int64_t n, float* out, int64_t out_stride,
                                         RowsAhead ahead) {
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
    const uint8_t* key = codes + j * code_bytes;
    _mm_prefetch(reinterpret_cast<const char*>(key + 16 * code_bytes), _MM_HINT_T0);
    // The second line of 5-8-bit rows too: K8V4 decode at 32K 0.91x the time at 4 queries per KV
    // head, 0.80x at 1; K5-K7 0.97-1.00x (kernel_choices_avx2.md round 53).
    if (code_bytes > 64) _mm_prefetch(reinterpret_cast<const char*>(key + 16 * code_bytes + 64), _MM_HINT_T0);
    __m512 even[kTile], odd[kTile];
    for (int a = 0; a < kTile; ++a) even[a] = odd[a] = _mm512_setzero_ps();
    for (int c = 0; c < d / 64; ++c) {
      __m512 f[4];
      chunk(key, c, f);
      for (int a = 0; a < kTile; ++a) {
        const float* qa = q + static_cast<int64_t>(a) * d + 64 * c;
        even[a] = _mm512_fmadd_ps(_mm512_loadu_ps(qa), f[0], even[a]);
        odd[a] = _mm512_fmadd_ps(_mm512_loadu_ps(qa + 16), f[1], odd[a]);
        even[a] = _mm512_fmadd_ps(_mm512_loadu_ps(qa + 32), f[2], even[a]);
        odd[a] = _mm512_fmadd_ps(_mm512_loadu_ps(qa + 48), f[3], odd[a]);
      }
    }
    __m512 sums[kTile];
    for (int a = 0; a < kTile; ++a) sums[a] = _mm512_add_ps(even[a], odd[a]);
    store_sums<kTile>(sums, out + j, out_stride);
  }
}

// m queries in tiles of 4 (the last 1-3 share one tile's lookups).
template <typename Chunk>
TURBOKV_TARGET_AVX512_VBMI void dot_tiles(const Chunk& chunk, const float* q, int m, int d, const uint8_t* codes,
                                          int64_t code_bytes, int64_t n, float* out, int64_t out_stride,
                                          RowsAhead ahead) {
  for (int a = 0; a < m; a += 4) {
    const float* qa = q + static_cast<int64_t>(a) * d;
    float* o = out + a * out_stride;
    switch (std::min(4, m - a)) {
      case 4: dot_tile<4>(chunk, qa, d, codes, code_bytes, n, o, out_stride, ahead); break;
      case 3: dot_tile<3>(chunk, qa, d, codes, code_bytes, n, o, out_stride, ahead); break;
      case 2: dot_tile<2>(chunk, qa, d, codes, code_bytes, n, o, out_stride, ahead); break;
      default: dot_tile<1>(chunk, qa, d, codes, code_bytes, n, o, out_stride, ahead); break;
    }
  }
}

// A chunk by the byte planes (plane order: swap_plane_order permutes the queries to match).
template <int kBits, bool kSigned>
struct PlaneChunks {
  const Planes<kBits, kSigned>& planes;
  IndexLoader<kBits> indices;
  TURBOKV_TARGET_AVX512_VBMI __attribute__((always_inline)) inline void operator()(const uint8_t* key, int c,
                                                                                  __m512* f) const {
    lookup64<kBits, kSigned>(planes, indices(key + 8 * kBits * c), f);
  }
};

// kTile queries' accumulators of one 64-coordinate chunk stay in registers across every token.
template <int kBits, int kTile, bool kSigned>
TURBOKV_TARGET_AVX512_VBMI void axpy_tile(const Planes<kBits, kSigned>& planes, const float* w,
                                          int64_t w_stride, int d, const uint8_t* codes,
                                          int64_t code_bytes, int64_t n, float* accperm) {
  const IndexLoader<kBits> indices;
  for (int c = 0; c < d / 64; ++c) {
    __m512 acc[kTile][4];
    for (int a = 0; a < kTile; ++a) {
      for (int r = 0; r < 4; ++r) acc[a][r] = _mm512_loadu_ps(accperm + static_cast<int64_t>(a) * d + 64 * c + 16 * r);
    }
    for (int64_t j = 0; j < n; ++j) {
      const uint8_t* src = codes + j * code_bytes + 8 * kBits * c;
      _mm_prefetch(reinterpret_cast<const char*>(src + 16 * code_bytes), _MM_HINT_T0);
      __m512 f[4];
      lookup64<kBits, kSigned>(planes, indices(src), f);
      for (int a = 0; a < kTile; ++a) {
        const __m512 weight = _mm512_set1_ps(w[a * w_stride + j]);
        for (int r = 0; r < 4; ++r) acc[a][r] = _mm512_fmadd_ps(weight, f[r], acc[a][r]);
      }
    }
    for (int a = 0; a < kTile; ++a) {
      for (int r = 0; r < 4; ++r) _mm512_storeu_ps(accperm + static_cast<int64_t>(a) * d + 64 * c + 16 * r, acc[a][r]);
    }
  }
}

template <int kBits, bool kSigned = false>
TURBOKV_TARGET_AVX512_VBMI void dot_planes_bits(const float* q, int m, const uint8_t* codes,
                                                int64_t code_bytes, int64_t n, const float* table,
                                                int d, float* out, int64_t out_stride, RowsAhead ahead) {
  if constexpr (kBits == 8 && !kSigned) {
    if (planes_vbmi_signed(table, kBits)) return dot_planes_bits<8, true>(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead);
  }
  const Planes<kBits, kSigned> planes = load_planes<kBits, kSigned>(table);
  PermutedScratch qperm(static_cast<int64_t>(m) * d);
  swap_plane_order(q, m, d, qperm.data());
  dot_tiles(PlaneChunks<kBits, kSigned>{planes, {}}, qperm.data(), m, d, codes, code_bytes, n, out, out_stride, ahead);
}

template <int kBits, bool kSigned = false>
TURBOKV_TARGET_AVX512_VBMI void axpy_planes_bits(const float* w, int64_t w_stride, int m,
                                                 const uint8_t* codes, int64_t code_bytes,
                                                 int64_t n, const float* table, int d, float* acc) {
  if constexpr (kBits == 8 && !kSigned) {
    if (planes_vbmi_signed(table, kBits)) return axpy_planes_bits<8, true>(w, w_stride, m, codes, code_bytes, n, table, d, acc);
  }
  const Planes<kBits, kSigned> planes = load_planes<kBits, kSigned>(table);
  PermutedScratch accperm(static_cast<int64_t>(m) * d);
  swap_plane_order(acc, m, d, accperm.data());
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    axpy_tile<kBits, 4, kSigned>(planes, w + a * w_stride, w_stride, d, codes, code_bytes, n, accperm.data() + static_cast<int64_t>(a) * d);
  }
  float* rest = accperm.data() + static_cast<int64_t>(a) * d;
  switch (m - a) {
    case 3: axpy_tile<kBits, 3, kSigned>(planes, w + a * w_stride, w_stride, d, codes, code_bytes, n, rest); break;
    case 2: axpy_tile<kBits, 2, kSigned>(planes, w + a * w_stride, w_stride, d, codes, code_bytes, n, rest); break;
    case 1: axpy_tile<kBits, 1, kSigned>(planes, w + a * w_stride, w_stride, d, codes, code_bytes, n, rest); break;
    default: break;
  }
  swap_plane_order(accperm.data(), m, d, acc);
}

// Int16 scores (dot_int16_kernels.cpp) by two byte planes of the int16 centroids: 64 codes cost
// 2-6 shuffles and two unpacks, shared by a tile's queries, then 2 vpdpwssd per query (32 products
// each, where an FMA does 16). Needs VNNI besides VBMI (int16_planes_fit).
#define TURBOKV_TARGET_AVX512_VBMI_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vnni,avx2,fma,bmi,bmi2,f16c")))

template <int kBits>
struct Int16Planes {
  static constexpr int kQuarters = Planes<kBits>::kQuarters;
  __m512i low[kQuarters], high[kQuarters];  // byte 0 / byte 1 of each centroid, 64 per register
};

template <int kBits>
TURBOKV_TARGET_AVX512_VBMI_VNNI Int16Planes<kBits> load_int16_planes(const int32_t* table) {
  constexpr int kQuarters = Int16Planes<kBits>::kQuarters;
  alignas(64) uint8_t low[64 * kQuarters] = {}, high[64 * kQuarters] = {};
  for (int e = 0; e < (1 << kBits); ++e) {
    const auto v = static_cast<uint16_t>(static_cast<int16_t>(table[e]));
    low[e] = static_cast<uint8_t>(v & 0xFF);
    high[e] = static_cast<uint8_t>(v >> 8);
  }
  Int16Planes<kBits> planes;
  for (int k = 0; k < kQuarters; ++k) {
    planes.low[k] = _mm512_load_si512(low + 64 * k);
    planes.high[k] = _mm512_load_si512(high + 64 * k);
  }
  return planes;
}

// kTile queries (kPlanesOrder; query a at q + a * d) against every key, two accumulators per query;
// the 4 sums leave together (lane a of one horizontal add). The intrinsic, not an asm vpdpwssd as
// in avx2_variants.inc: with an asm operand GCC 12 kept the accumulators on the stack.
template <int kBits, int kTile>
TURBOKV_TARGET_AVX512_VBMI_VNNI void dot_int16_tile(const Int16Planes<kBits>& planes, const int16_t* q,
                                                    const float* scales, int d, const uint8_t* codes,
                                                    int64_t code_bytes, int64_t n, float* out,
                                                    int64_t out_stride, RowsAhead ahead) {
  const IndexLoader<kBits> indices;
  alignas(16) float scale_lanes[4] = {};
  for (int a = 0; a < kTile; ++a) scale_lanes[a] = scales[a];
  const __m128 scale4 = _mm_load_ps(scale_lanes);
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
    const uint8_t* key = codes + j * code_bytes;
    // Both lines of a 5-8-bit row (80-128 bytes at head_dim 128): with the second too, K8V4 int8
    // decode at 32K took 0.80-0.84x the time and K6V4 0.97x, both A/B orders (model-167 VM,
    // kernel_choices_avx2.md round 52). Two plain prefetches, not RowsAhead::fetch_below: its
    // bounded loop here took 1.03-1.07x the time, both A/B orders (round 53).
    _mm_prefetch(reinterpret_cast<const char*>(key + 16 * code_bytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(key + 16 * code_bytes + 64), _MM_HINT_T0);
    __m512i even[4], odd[4];
    for (int a = 0; a < 4; ++a) even[a] = odd[a] = _mm512_setzero_si512();
    for (int c = 0; c < d / 64; ++c) {
      const __m512i idx = indices(key + 8 * kBits * c);
      const __m512i low = plane_bytes<kBits>(planes.low, idx), high = plane_bytes<kBits>(planes.high, idx);
      const __m512i w0 = _mm512_unpacklo_epi8(low, high), w1 = _mm512_unpackhi_epi8(low, high);
      for (int a = 0; a < kTile; ++a) {
        const int16_t* qa = q + static_cast<int64_t>(a) * d + 64 * c;
        even[a] = _mm512_dpwssd_epi32(even[a], w0, _mm512_loadu_si512(qa));
        odd[a] = _mm512_dpwssd_epi32(odd[a], w1, _mm512_loadu_si512(qa + 32));
      }
    }
    __m256i acc[4];
    for (int a = 0; a < 4; ++a) {
      const __m512i sum = _mm512_add_epi32(even[a], odd[a]);
      acc[a] = _mm256_add_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1));
    }
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[0], acc[1]), _mm256_hadd_epi32(acc[2], acc[3]));
    const __m128i sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    alignas(16) float values[4];  // float(sum) * scale, as the scalar kernel rounds it
    _mm_store_ps(values, _mm_mul_ps(_mm_cvtepi32_ps(sums), scale4));
    for (int a = 0; a < kTile; ++a) out[a * out_stride + j] = values[a];
  }
}

template <int kBits>
TURBOKV_TARGET_AVX512_VBMI_VNNI void dot_int16_bits(const int16_t* q16, const float* q_scale, int m,
                                                    const uint8_t* codes, int64_t code_bytes, int64_t n,
                                                    const int32_t* table, float table_scale, int d,
                                                    float* out, int64_t out_stride, RowsAhead ahead) {
  const Int16Call call(q16, q_scale, m, table_scale, d, d, kPlanesOrder);
  const Int16Planes<kBits> planes = load_int16_planes<kBits>(table);
  for (int a = 0; a < m; a += 4) {
    const int16_t* q = call.query(a);
    const float* scales = call.scale(a);
    float* o = out + a * out_stride;
    switch (std::min(4, m - a)) {
      case 4: dot_int16_tile<kBits, 4>(planes, q, scales, d, codes, code_bytes, n, o, out_stride, ahead); break;
      case 3: dot_int16_tile<kBits, 3>(planes, q, scales, d, codes, code_bytes, n, o, out_stride, ahead); break;
      case 2: dot_int16_tile<kBits, 2>(planes, q, scales, d, codes, code_bytes, n, o, out_stride, ahead); break;
      default: dot_int16_tile<kBits, 1>(planes, q, scales, d, codes, code_bytes, n, o, out_stride, ahead); break;
    }
  }
}

// 5-bit scores by vpermi2ps, which looks 16 floats up in a 32-entry table held in two registers
// and reads only the low 5 bits of each dword index: so each code's index is its row's two bytes
// that hold it (one vpermb per 16 codes) shifted down (vpsrlvd), 2 shuffles and a shift per 16
// coordinates where the byte planes take 3 shuffles plus their unpacking, in coordinate order (no
// permuted queries). Zen 4, 4 queries, 4,096 keys at head_dim 128 (BM_GroupScores bits:5): 76.7 ->
// 71.6-72.2 us; K5V4 decode at 32K 0.88-0.93x the time (kernel_choices_avx2.md, round 39).
struct FiveBitIndices {
  __m512i control[4], shift;  // control r: the row bytes of codes 16 r + e into dword e
  TURBOKV_TARGET_AVX512_VBMI FiveBitIndices() {
    alignas(64) int8_t c[4][64];
    alignas(64) int32_t s[16];
    for (int r = 0; r < 4; ++r) {
      for (int e = 0; e < 16; ++e) {
        const int byte = 10 * r + 5 * e / 8;  // code 16 r + e starts at bit 80 r + 5 e
        c[r][4 * e] = static_cast<int8_t>(byte);
        c[r][4 * e + 1] = c[r][4 * e + 2] = c[r][4 * e + 3] = static_cast<int8_t>(byte + 1);
        s[e] = 5 * e % 8;
      }
    }
    for (int r = 0; r < 4; ++r) control[r] = _mm512_load_si512(c[r]);
    shift = _mm512_load_si512(s);
  }
};

// A chunk of 64 5-bit codes (40 row bytes; nothing past them is read), in coordinate order.
struct FiveBitChunks {
  FiveBitIndices ix;
  __m512 low, high;  // table entries 0-15 and 16-31
  TURBOKV_TARGET_AVX512_VBMI __attribute__((always_inline)) inline void operator()(const uint8_t* key, int c,
                                                                                  __m512* f) const {
    const __m512i raw = _mm512_maskz_loadu_epi8((__mmask64{1} << 40) - 1, key + 40 * c);
    for (int r = 0; r < 4; ++r) {
      const __m512i idx = _mm512_srlv_epi32(_mm512_permutexvar_epi8(ix.control[r], raw), ix.shift);
      f[r] = _mm512_permutex2var_ps(low, idx, high);
    }
  }
};

TURBOKV_TARGET_AVX512_VBMI void dot_five_bit_vbmi(const float* q, int m, const uint8_t* codes, int64_t code_bytes,
                                                  int64_t n, const float* table, int d, float* out, int64_t out_stride,
                                                  RowsAhead ahead) {
  const FiveBitChunks chunks{{}, _mm512_loadu_ps(table), _mm512_loadu_ps(table + 16)};
  dot_tiles(chunks, q, m, d, codes, code_bytes, n, out, out_stride, ahead);
}

// Calls fn with the code width as a compile-time constant, for the byte-plane widths (5-8 bits).
template <typename Fn>
void with_width(int bits, Fn&& fn) {
  switch (bits) {
    case 5: return fn(std::integral_constant<int, 5>{});
    case 6: return fn(std::integral_constant<int, 6>{});
    case 7: return fn(std::integral_constant<int, 7>{});
    case 8: return fn(std::integral_constant<int, 8>{});
    default: throw std::invalid_argument("no VBMI byte-plane kernel for " + std::to_string(bits) + "-bit codes");
  }
}

}  // namespace

void dot_planes_vbmi(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                     const float* table, int bits, int d, float* out, int64_t out_stride,
                     RowsAhead ahead) {
  if (bits == 3) return dot_three_bit_lanes_vbmi(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead);
  if (bits == 5) return dot_five_bit_vbmi(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead);
  with_width(bits, [&](auto width) {
    dot_planes_bits<decltype(width)::value>(q, m, codes, code_bytes, n, table, d, out, out_stride, ahead);
  });
}

void axpy_planes_vbmi(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                      int64_t code_bytes, int64_t n, const float* table, int bits, int d,
                      float* acc) {
  if (bits == 3) return axpy_three_bit_lanes_vbmi(w, w_stride, m, codes, code_bytes, n, table, d, acc);
  with_width(bits, [&](auto width) {
    axpy_planes_bits<decltype(width)::value>(w, w_stride, m, codes, code_bytes, n, table, d, acc);
  });
}
bool int16_planes_fit(int d) { return kHasAvx512Vbmi && kHasAvx512Vnni && d % 64 == 0; }

void dot_planes_int16_vbmi(const int16_t* q16, const float* q_scale, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const int32_t* table16, float table_scale,
                           int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  with_width(bits, [&](auto width) {
    dot_int16_bits<decltype(width)::value>(q16, q_scale, m, codes, code_bytes, n, table16, table_scale, d,
                                           out, out_stride, ahead);
  });
}
#else
const bool kHasAvx512Vbmi = false;
bool planes_vbmi_fit(int, int) { return false; }
bool planes_vbmi_signed(const float*, int) { return false; }
bool int16_planes_fit(int) { return false; }
#endif

}  // namespace kernels
}  // namespace turbokv
