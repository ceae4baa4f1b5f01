// Fused scores: inner products of queries with table lookups of packed codes, straight from the
// packed bytes. This is the loop that makes compressed attention faster than dense attention.
#include <algorithm>
#include <vector>

#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

// Portable version: unpack each key's indices once, then one lookup-dot per query.
void dot_packed_generic(DotLookupFn dot, UnpackFn unpack, const float* q, int m,
                        const uint8_t* codes, int64_t code_bytes, int64_t n, const float* table,
                        int bits, int d, float* out, int64_t out_stride) {
  std::vector<uint8_t> idx(static_cast<size_t>(d));
  for (int64_t j = 0; j < n; ++j) {
    unpack(codes + j * code_bytes, d, bits, idx.data());
    for (int a = 0; a < m; ++a) out[a * out_stride + j] = dot(q + a * d, idx.data(), table, bits, d);
  }
}

void axpy_packed_generic(AxpyLookupFn axpy, UnpackFn unpack, const float* w, int64_t w_stride,
                         int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                         const float* table, int bits, int d, float* acc) {
  std::vector<uint8_t> idx(static_cast<size_t>(d));
  for (int64_t j = 0; j < n; ++j) {
    unpack(codes + j * code_bytes, d, bits, idx.data());
    for (int a = 0; a < m; ++a) {
      const float weight = w[a * w_stride + j];
      if (weight != 0.0f) axpy(weight, idx.data(), table, bits, acc + static_cast<int64_t>(a) * d, d);
    }
  }
}

void axpy_packed_scalar(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                        int64_t code_bytes, int64_t n, const float* table, int bits, int d,
                        float* acc) {
  axpy_packed_generic(select_axpy_lookup(SimdLevel::kScalar), select_unpack(SimdLevel::kScalar), w,
                      w_stride, m, codes, code_bytes, n, table, bits, d, acc);
}

void dot_packed_scalar(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                       const float* table, int bits, int d, float* out, int64_t out_stride) {
  dot_packed_generic(select_dot_lookup(SimdLevel::kScalar), select_unpack(SimdLevel::kScalar), q,
                     m, codes, code_bytes, n, table, bits, d, out, out_stride);
}

#if TURBOKV_X86
void dot_packed_avx2(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                     const float* table, int bits, int d, float* out, int64_t out_stride) {
  dot_packed_generic(select_dot_lookup(SimdLevel::kAvx2), select_unpack(SimdLevel::kAvx2), q, m,
                     codes, code_bytes, n, table, bits, d, out, out_stride);
}

void axpy_packed_avx2(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                      int64_t code_bytes, int64_t n, const float* table, int bits, int d,
                      float* acc) {
  axpy_packed_generic(select_axpy_lookup(SimdLevel::kAvx2), select_unpack(SimdLevel::kAvx2), w,
                      w_stride, m, codes, code_bytes, n, table, bits, d, acc);
}

// For b in {1, 2, 4} a byte holds 8/b whole indices. Loading 16 code bytes into 16 int32 lanes
// and shifting by s*b puts index (8/b)*byte + s in the low bits of each lane; vpermps reads only
// the low 4 bits, so a 16-entry table that repeats the 2^b centroids (t[j] = c[j mod 2^b]) gives
// the centroid with no masking. The query is permuted once into the same lane order.
template <int kBits, int kTile>
TURBOKV_TARGET_AVX512 void dot_packed_tile_avx512(const float* qperm, int chunks,
                                                  const uint8_t* codes, int64_t code_bytes,
                                                  int64_t n, __m512 table16, int last_bytes,
                                                  float* out, int64_t out_stride) {
  constexpr int kPerByte = 8 / kBits;
  const __mmask16 last_mask = static_cast<__mmask16>((1u << last_bytes) - 1u);
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* key = codes + j * code_bytes;
    __m512 acc[kTile];
    for (int a = 0; a < kTile; ++a) acc[a] = _mm512_setzero_ps();
    for (int g = 0; g < chunks; ++g) {
      const __mmask16 mask = g + 1 == chunks ? last_mask : static_cast<__mmask16>(0xFFFF);
      const __m512i bytes = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, key + 16 * g));
      for (int s = 0; s < kPerByte; ++s) {
        const __m512 values =
            _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, static_cast<unsigned>(s * kBits)), table16);
        const float* qs = qperm + (static_cast<int64_t>(g) * kPerByte + s) * 16;
        for (int a = 0; a < kTile; ++a) {
          acc[a] = _mm512_fmadd_ps(_mm512_loadu_ps(qs + static_cast<int64_t>(a) * chunks * kPerByte * 16),
                                   values, acc[a]);
        }
      }
    }
    for (int a = 0; a < kTile; ++a) out[a * out_stride + j] = _mm512_reduce_add_ps(acc[a]);
  }
}

template <int kBits>
TURBOKV_TARGET_AVX512 void dot_packed_bits_avx512(const float* q, int m, const uint8_t* codes,
                                                  int64_t code_bytes, int64_t n,
                                                  const float* table, int d, float* out,
                                                  int64_t out_stride) {
  constexpr int kPerByte = 8 / kBits;
  const int bytes = (d * kBits + 7) / 8;
  const int chunks = (bytes + 15) / 16;
  const int last_bytes = bytes - 16 * (chunks - 1);
  // qperm[a][g][s][l] = q_a[(16 g + l) * kPerByte + s], zero past d.
  const int64_t per_query = static_cast<int64_t>(chunks) * kPerByte * 16;
  std::vector<float> qperm(static_cast<size_t>(per_query) * m, 0.0f);
  for (int a = 0; a < m; ++a) {
    for (int g = 0; g < chunks; ++g) {
      for (int s = 0; s < kPerByte; ++s) {
        for (int l = 0; l < 16; ++l) {
          const int i = (16 * g + l) * kPerByte + s;
          if (i < d) qperm[a * per_query + (g * kPerByte + s) * 16 + l] = q[static_cast<int64_t>(a) * d + i];
        }
      }
    }
  }
  alignas(64) float repeated[16];
  for (int j = 0; j < 16; ++j) repeated[j] = table[j & ((1 << kBits) - 1)];
  const __m512 table16 = _mm512_load_ps(repeated);
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    dot_packed_tile_avx512<kBits, 4>(qperm.data() + a * per_query, chunks, codes, code_bytes, n,
                                     table16, last_bytes, out + a * out_stride, out_stride);
  }
  for (; a < m; ++a) {
    dot_packed_tile_avx512<kBits, 1>(qperm.data() + a * per_query, chunks, codes, code_bytes, n,
                                     table16, last_bytes, out + a * out_stride, out_stride);
  }
}

// Same lane order as dot_packed: the accumulators live permuted for the call and are put back
// in coordinate order at the end (a permutation is exact, and O(m d) against O(m n d) work).
template <int kBits, int kTile>
TURBOKV_TARGET_AVX512 void axpy_packed_tile_avx512(const float* w, int64_t w_stride,
                                                   int chunks, const uint8_t* codes,
                                                   int64_t code_bytes, int64_t n, __m512 table16,
                                                   int last_bytes, float* accperm) {
  constexpr int kPerByte = 8 / kBits;
  const int64_t per_query = static_cast<int64_t>(chunks) * kPerByte * 16;
  const __mmask16 last_mask = static_cast<__mmask16>((1u << last_bytes) - 1u);
  for (int g = 0; g < chunks; ++g) {
    const __mmask16 mask = g + 1 == chunks ? last_mask : static_cast<__mmask16>(0xFFFF);
    // Accumulators of this 16-byte chunk for every query stay in registers across all keys.
    __m512 acc[kTile][kPerByte];
    for (int a = 0; a < kTile; ++a) {
      for (int s = 0; s < kPerByte; ++s) {
        acc[a][s] = _mm512_loadu_ps(accperm + a * per_query + (g * kPerByte + s) * 16);
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      const __m512i bytes = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, codes + j * code_bytes + 16 * g));
      __m512 weight[kTile];
      for (int a = 0; a < kTile; ++a) weight[a] = _mm512_set1_ps(w[a * w_stride + j]);
      for (int s = 0; s < kPerByte; ++s) {
        const __m512 values =
            _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, static_cast<unsigned>(s * kBits)), table16);
        for (int a = 0; a < kTile; ++a) acc[a][s] = _mm512_fmadd_ps(weight[a], values, acc[a][s]);
      }
    }
    for (int a = 0; a < kTile; ++a) {
      for (int s = 0; s < kPerByte; ++s) {
        _mm512_storeu_ps(accperm + a * per_query + (g * kPerByte + s) * 16, acc[a][s]);
      }
    }
  }
}

template <int kBits>
TURBOKV_TARGET_AVX512 void axpy_packed_bits_avx512(const float* w, int64_t w_stride, int m,
                                                   const uint8_t* codes, int64_t code_bytes,
                                                   int64_t n, const float* table, int d,
                                                   float* acc) {
  constexpr int kPerByte = 8 / kBits;
  const int bytes = (d * kBits + 7) / 8;
  const int chunks = (bytes + 15) / 16;
  const int last_bytes = bytes - 16 * (chunks - 1);
  const int64_t per_query = static_cast<int64_t>(chunks) * kPerByte * 16;
  std::vector<float> accperm(static_cast<size_t>(per_query) * m, 0.0f);
  auto lane_of = [&](int g, int s, int l) { return (g * kPerByte + s) * 16 + l; };
  auto coord_of = [&](int g, int s, int l) { return (16 * g + l) * kPerByte + s; };
  for (int a = 0; a < m; ++a) {
    for (int g = 0; g < chunks; ++g) {
      for (int s = 0; s < kPerByte; ++s) {
        for (int l = 0; l < 16; ++l) {
          const int i = coord_of(g, s, l);
          if (i < d) accperm[a * per_query + lane_of(g, s, l)] = acc[static_cast<int64_t>(a) * d + i];
        }
      }
    }
  }
  alignas(64) float repeated[16];
  for (int j = 0; j < 16; ++j) repeated[j] = table[j & ((1 << kBits) - 1)];
  const __m512 table16 = _mm512_load_ps(repeated);
  // Tiles small enough that tile x (8 / bits) accumulators fit in the 32 registers.
  constexpr int kTile = kPerByte >= 4 ? 2 : 4;
  int a = 0;
  for (; a + kTile <= m; a += kTile) {
    axpy_packed_tile_avx512<kBits, kTile>(w + a * w_stride, w_stride, chunks, codes, code_bytes, n,
                                          table16, last_bytes, accperm.data() + a * per_query);
  }
  for (; a < m; ++a) {
    axpy_packed_tile_avx512<kBits, 1>(w + a * w_stride, w_stride, chunks, codes, code_bytes, n,
                                      table16, last_bytes, accperm.data() + a * per_query);
  }
  for (int q = 0; q < m; ++q) {
    for (int g = 0; g < chunks; ++g) {
      for (int s = 0; s < kPerByte; ++s) {
        for (int l = 0; l < 16; ++l) {
          const int i = coord_of(g, s, l);
          if (i < d) acc[static_cast<int64_t>(q) * d + i] = accperm[q * per_query + lane_of(g, s, l)];
        }
      }
    }
  }
}

TURBOKV_TARGET_AVX512 void axpy_packed_avx512(const float* w, int64_t w_stride, int m,
                                              const uint8_t* codes, int64_t code_bytes, int64_t n,
                                              const float* table, int bits, int d, float* acc) {
  switch (bits) {
    case 1: return axpy_packed_bits_avx512<1>(w, w_stride, m, codes, code_bytes, n, table, d, acc);
    case 2: return axpy_packed_bits_avx512<2>(w, w_stride, m, codes, code_bytes, n, table, d, acc);
    case 4: return axpy_packed_bits_avx512<4>(w, w_stride, m, codes, code_bytes, n, table, d, acc);
    default:
      return axpy_packed_generic(select_axpy_lookup(SimdLevel::kAvx512),
                                 select_unpack(SimdLevel::kAvx512), w, w_stride, m, codes,
                                 code_bytes, n, table, bits, d, acc);
  }
}

TURBOKV_TARGET_AVX512 void dot_packed_avx512(const float* q, int m, const uint8_t* codes,
                                             int64_t code_bytes, int64_t n, const float* table,
                                             int bits, int d, float* out, int64_t out_stride) {
  switch (bits) {
    case 1: return dot_packed_bits_avx512<1>(q, m, codes, code_bytes, n, table, d, out, out_stride);
    case 2: return dot_packed_bits_avx512<2>(q, m, codes, code_bytes, n, table, d, out, out_stride);
    case 4: return dot_packed_bits_avx512<4>(q, m, codes, code_bytes, n, table, d, out, out_stride);
    default:
      return dot_packed_generic(select_dot_lookup(SimdLevel::kAvx512),
                                select_unpack(SimdLevel::kAvx512), q, m, codes, code_bytes, n,
                                table, bits, d, out, out_stride);
  }
}
#endif

}  // namespace

AxpyPackedFn select_axpy_packed(SimdLevel level) {
#if TURBOKV_X86
  if (level == SimdLevel::kAvx512) return axpy_packed_avx512;
  if (level == SimdLevel::kAvx2) return axpy_packed_avx2;
#endif
  (void)level;
  return axpy_packed_scalar;
}

DotPackedFn select_dot_packed(SimdLevel level) {
#if TURBOKV_X86
  if (level == SimdLevel::kAvx512) return dot_packed_avx512;
  if (level == SimdLevel::kAvx2) return dot_packed_avx2;
#endif
  (void)level;
  return dot_packed_scalar;
}

}  // namespace kernels
}  // namespace turbokv
