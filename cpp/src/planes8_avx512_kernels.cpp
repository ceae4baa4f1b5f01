// 8-bit codes on AVX-512 with VBMI, by byte planes: byte p of all 256 centroids forms a 256-byte
// plane, and vpermi2b looks up 64 codes' bytes in one half of it (7 index bits, two registers);
// bit 7 of each code picks the half. Four planes and two rounds of unpacks reassemble the floats
// exactly (the AVX2 byte-plane idea, dot_packed_kernels.cpp, at 256 entries), so 64 coordinates
// cost 21 shuffles and blends, shared by every query of the KV head, instead of four 16-lane
// gathers per query (or the AVX2 rows route this level took for 8 bits before).
#include <cstring>
#include <vector>

#include "avx512_helpers.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {

#if TURBOKV_X86
const bool kHasAvx512Vbmi = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vbmi") != 0;
}();

bool planes8_avx512_fit(int bits, int d) { return kHasAvx512Vbmi && bits == 8 && d % 64 == 0; }

namespace {

#define TURBOKV_TARGET_AVX512_VBMI \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx2,fma,bmi,bmi2,f16c")))

// The 4 planes of a 256-float table, each as 4 registers of 64 entries: planes[4 * p + quarter].
struct Planes8 {
  __m512i reg[16];
};

TURBOKV_TARGET_AVX512_VBMI Planes8 load_planes8(const float* table) {
  alignas(64) uint8_t bytes[4][256];
  // Per 16 floats: vpermb gathers byte p of each float into the register's 16-byte quarter p.
  alignas(64) int8_t order[64];
  for (int p = 0; p < 4; ++p) {
    for (int e = 0; e < 16; ++e) order[16 * p + e] = static_cast<int8_t>(4 * e + p);
  }
  const __m512i by_plane = _mm512_load_si512(order);
  for (int block = 0; block < 16; ++block) {
    const __m512i t = _mm512_permutexvar_epi8(by_plane, _mm512_loadu_si512(table + 16 * block));
    _mm_store_si128(reinterpret_cast<__m128i*>(bytes[0] + 16 * block), _mm512_extracti32x4_epi32(t, 0));
    _mm_store_si128(reinterpret_cast<__m128i*>(bytes[1] + 16 * block), _mm512_extracti32x4_epi32(t, 1));
    _mm_store_si128(reinterpret_cast<__m128i*>(bytes[2] + 16 * block), _mm512_extracti32x4_epi32(t, 2));
    _mm_store_si128(reinterpret_cast<__m128i*>(bytes[3] + 16 * block), _mm512_extracti32x4_epi32(t, 3));
  }
  Planes8 planes;
  for (int p = 0; p < 4; ++p) {
    for (int quarter = 0; quarter < 4; ++quarter) {
      planes.reg[4 * p + quarter] = _mm512_load_si512(bytes[p] + 64 * quarter);
    }
  }
  return planes;
}

// The centroids of 64 codes as 4 registers: f[r] lane 4 L + e holds coordinate 16 L + 4 r + e
// (L the 128-bit lane), the order the unpacks leave them in; queries and accumulators are
// permuted to match once per call (to_plane_order).
TURBOKV_TARGET_AVX512_VBMI inline void lookup64(const Planes8& planes, __m512i codes, __m512* f) {
  const __mmask64 upper = _mm512_movepi8_mask(codes);  // bit 7: entries 128-255
  __m512i b[4];
  for (int p = 0; p < 4; ++p) {
    const __m512i low = _mm512_permutex2var_epi8(planes.reg[4 * p], codes, planes.reg[4 * p + 1]);
    const __m512i high = _mm512_permutex2var_epi8(planes.reg[4 * p + 2], codes, planes.reg[4 * p + 3]);
    b[p] = _mm512_mask_blend_epi8(upper, low, high);
  }
  const __m512i w01_low = _mm512_unpacklo_epi8(b[0], b[1]), w01_high = _mm512_unpackhi_epi8(b[0], b[1]);
  const __m512i w23_low = _mm512_unpacklo_epi8(b[2], b[3]), w23_high = _mm512_unpackhi_epi8(b[2], b[3]);
  f[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(w01_low, w23_low));
  f[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(w01_low, w23_low));
  f[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(w01_high, w23_high));
  f[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(w01_high, w23_high));
}

// Coordinate i = 64 c + 16 L + 4 r + e sits at 64 c + 16 r + 4 L + e in plane order.
int plane_position(int i) {
  const int c = i / 64, L = (i / 16) % 4, r = (i / 4) % 4, e = i % 4;
  return 64 * c + 16 * r + 4 * L + e;
}

std::vector<float> to_plane_order(const float* x, int m, int d) {
  std::vector<float> out(static_cast<size_t>(m) * d);
  for (int a = 0; a < m; ++a) {
    for (int i = 0; i < d; ++i) out[static_cast<size_t>(a) * d + plane_position(i)] = x[static_cast<int64_t>(a) * d + i];
  }
  return out;
}

void from_plane_order(const std::vector<float>& in, int m, int d, float* x) {
  for (int a = 0; a < m; ++a) {
    for (int i = 0; i < d; ++i) x[static_cast<int64_t>(a) * d + i] = in[static_cast<size_t>(a) * d + plane_position(i)];
  }
}

// kTile queries against every key: the key's 64-code chunks are looked up once, then two FMA
// chains per query.
template <int kTile>
TURBOKV_TARGET_AVX512_VBMI void dot_tile(const Planes8& planes, const float* qperm, int d,
                                         const uint8_t* codes, int64_t code_bytes, int64_t n,
                                         float* out, int64_t out_stride) {
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* key = codes + j * code_bytes;
    _mm_prefetch(reinterpret_cast<const char*>(key + 16 * code_bytes), _MM_HINT_T0);
    __m512 even[kTile], odd[kTile];
    for (int a = 0; a < kTile; ++a) even[a] = odd[a] = _mm512_setzero_ps();
    for (int c = 0; c < d / 64; ++c) {
      __m512 f[4];
      lookup64(planes, _mm512_loadu_si512(key + 64 * c), f);
      for (int a = 0; a < kTile; ++a) {
        const float* qa = qperm + static_cast<int64_t>(a) * d + 64 * c;
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

// kTile queries' accumulators of one 64-coordinate chunk stay in registers across every token.
template <int kTile>
TURBOKV_TARGET_AVX512_VBMI void axpy_tile(const Planes8& planes, const float* w, int64_t w_stride,
                                          int d, const uint8_t* codes, int64_t code_bytes,
                                          int64_t n, float* accperm) {
  for (int c = 0; c < d / 64; ++c) {
    __m512 acc[kTile][4];
    for (int a = 0; a < kTile; ++a) {
      for (int r = 0; r < 4; ++r) acc[a][r] = _mm512_loadu_ps(accperm + static_cast<int64_t>(a) * d + 64 * c + 16 * r);
    }
    for (int64_t j = 0; j < n; ++j) {
      const uint8_t* src = codes + j * code_bytes + 64 * c;
      _mm_prefetch(reinterpret_cast<const char*>(src + 16 * code_bytes), _MM_HINT_T0);
      __m512 f[4];
      lookup64(planes, _mm512_loadu_si512(src), f);
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

TURBOKV_TARGET_AVX512_VBMI void dot_planes8_vbmi(const float* q, int m, const uint8_t* codes,
                                                   int64_t code_bytes, int64_t n,
                                                   const float* table, int d, float* out,
                                                   int64_t out_stride) {
  const Planes8 planes = load_planes8(table);
  const std::vector<float> qperm = to_plane_order(q, m, d);
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    dot_tile<4>(planes, qperm.data() + static_cast<int64_t>(a) * d, d, codes, code_bytes, n, out + a * out_stride, out_stride);
  }
  const float* rest = qperm.data() + static_cast<int64_t>(a) * d;
  switch (m - a) {  // the last 1-3 queries share one tile's lookups
    case 3: return dot_tile<3>(planes, rest, d, codes, code_bytes, n, out + a * out_stride, out_stride);
    case 2: return dot_tile<2>(planes, rest, d, codes, code_bytes, n, out + a * out_stride, out_stride);
    case 1: return dot_tile<1>(planes, rest, d, codes, code_bytes, n, out + a * out_stride, out_stride);
    default: return;
  }
}

TURBOKV_TARGET_AVX512_VBMI void axpy_planes8_vbmi(const float* w, int64_t w_stride, int m,
                                                    const uint8_t* codes, int64_t code_bytes,
                                                    int64_t n, const float* table, int d,
                                                    float* acc) {
  const Planes8 planes = load_planes8(table);
  std::vector<float> accperm = to_plane_order(acc, m, d);
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    axpy_tile<4>(planes, w + a * w_stride, w_stride, d, codes, code_bytes, n, accperm.data() + static_cast<int64_t>(a) * d);
  }
  float* rest = accperm.data() + static_cast<int64_t>(a) * d;
  switch (m - a) {
    case 3: axpy_tile<3>(planes, w + a * w_stride, w_stride, d, codes, code_bytes, n, rest); break;
    case 2: axpy_tile<2>(planes, w + a * w_stride, w_stride, d, codes, code_bytes, n, rest); break;
    case 1: axpy_tile<1>(planes, w + a * w_stride, w_stride, d, codes, code_bytes, n, rest); break;
    default: break;
  }
  from_plane_order(accperm, m, d, acc);
}

}  // namespace

void dot_planes8_avx512(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                        const float* table, int d, float* out, int64_t out_stride) {
  dot_planes8_vbmi(q, m, codes, code_bytes, n, table, d, out, out_stride);
}

void axpy_planes8_avx512(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                         int64_t code_bytes, int64_t n, const float* table, int d, float* acc) {
  axpy_planes8_vbmi(w, w_stride, m, codes, code_bytes, n, table, d, acc);
}
#else
const bool kHasAvx512Vbmi = false;
bool planes8_avx512_fit(int, int) { return false; }
#endif

}  // namespace kernels
}  // namespace turbokv
