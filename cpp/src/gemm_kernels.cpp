// Dense float products for prefill tiles: many queries against one block of decoded keys (scores)
// and the block's weights against its decoded values. Decoding a block once and multiplying costs
// n x d lookups plus a matrix product, where scoring each query on the codes costs rows x n x d
// lookups (DESIGN.md §4, "Prefill is where users wait"; llama.cpp's CPU flash attention).
//
// Why not Eigen or BLAS: their instruction set is fixed when they are compiled, while turbokv picks
// its kernels at run time per SIMD level; an AVX2-compiled Eigen next to baseline code would break
// the one-dispatch contract (and the ODR). The products here are small (one 256-token block) and a
// register-blocked kernel reaches most of a core's FMA rate on them.
#include "kernels.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace turbokv {
namespace kernels {
namespace {

void gemm_scalar(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                 int m, int n, int depth, bool accumulate) {
  for (int i = 0; i < m; ++i) {
    float* ci = c + i * ldc;
    if (!accumulate) {
      for (int j = 0; j < n; ++j) ci[j] = 0.0f;
    }
    for (int k = 0; k < depth; ++k) {
      const float aik = a[i * lda + k];
      const float* bk = b + k * ldb;
      for (int j = 0; j < n; ++j) ci[j] += aik * bk[j];
    }
  }
}

// The register-blocked product, written once: Isa::block<kRows, kVecs> keeps kRows x kVecs
// vectors of c in registers (Isa::kLanes floats each). Rows go in bands of 6 and one band of the
// 1-5 left over; each band's columns in blocks of Isa::kWide, then of Isa::kLanes, then
// Isa::tail for the fewer than kLanes left (a masked vector, or the scalar loop).
template <typename Isa, int kRows>
void gemm_band(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
               int n, int depth, bool accumulate) {
  int j = 0;
  for (; j + Isa::kWide <= n; j += Isa::kWide) {
    Isa::template block<kRows, Isa::kWide / Isa::kLanes>(a, lda, b + j, ldb, c + j, ldc, depth, accumulate);
  }
  for (; j + Isa::kLanes <= n; j += Isa::kLanes) Isa::template block<kRows, 1>(a, lda, b + j, ldb, c + j, ldc, depth, accumulate);
  if (j < n) Isa::template tail<kRows>(a, lda, b + j, ldb, c + j, ldc, n - j, depth, accumulate);
}

// Isa::tail of the AVX2 and NEON products: the columns left past the vectors, one at a time.
struct ScalarTail {
  template <int kRows>
  static void tail(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                   int n, int depth, bool accumulate) {
    gemm_scalar(a, lda, b, ldb, c, ldc, kRows, n, depth, accumulate);
  }
};

template <typename Isa>
void gemm_in_bands(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                   int m, int n, int depth, bool accumulate) {
  int i = 0;
  for (; i + 6 <= m; i += 6) gemm_band<Isa, 6>(a + i * lda, lda, b, ldb, c + i * ldc, ldc, n, depth, accumulate);
  const float* at = a + i * lda;
  float* ct = c + i * ldc;
  switch (m - i) {
    case 5: return gemm_band<Isa, 5>(at, lda, b, ldb, ct, ldc, n, depth, accumulate);
    case 4: return gemm_band<Isa, 4>(at, lda, b, ldb, ct, ldc, n, depth, accumulate);
    case 3: return gemm_band<Isa, 3>(at, lda, b, ldb, ct, ldc, n, depth, accumulate);
    case 2: return gemm_band<Isa, 2>(at, lda, b, ldb, ct, ldc, n, depth, accumulate);
    case 1: return gemm_band<Isa, 1>(at, lda, b, ldb, ct, ldc, n, depth, accumulate);
    default: return;
  }
}

#if TURBOKV_X86
// kRows x (8 kVecs) block of c in registers: per step of depth, kVecs loads of b, kRows
// broadcasts of a, kRows x kVecs FMAs (6 x 16 is the classic AVX2 shape: 12 accumulators).
template <int kRows, int kVecs>
TURBOKV_TARGET_AVX2 inline void gemm_block_avx2(const float* a, int64_t lda, const float* b,
                                                int64_t ldb, float* c, int64_t ldc, int depth,
                                                bool accumulate) {
  __m256 acc[kRows][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) {
      acc[r][v] = accumulate ? _mm256_loadu_ps(c + r * ldc + 8 * v) : _mm256_setzero_ps();
    }
  }
  for (int k = 0; k < depth; ++k) {
    __m256 bv[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) bv[v] = _mm256_loadu_ps(b + k * ldb + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + k);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
  }
}

struct Avx2 : ScalarTail {  // 6 x 16 blocks: 12 accumulators of AVX2's 16 registers
  static constexpr int kLanes = 8, kWide = 16;
  template <int kRows, int kVecs>
  TURBOKV_TARGET_AVX2 static void block(const float* a, int64_t lda, const float* b, int64_t ldb,
                                        float* c, int64_t ldc, int depth, bool accumulate) {
    gemm_block_avx2<kRows, kVecs>(a, lda, b, ldb, c, ldc, depth, accumulate);
  }
};

void gemm_avx2(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
               int m, int n, int depth, bool accumulate) {
  gemm_in_bands<Avx2>(a, lda, b, ldb, c, ldc, m, n, depth, accumulate);
}

// The AVX-512 twin: kRows x (16 kVecs) of c in zmm registers, one FMA per depth step in order for
// every element of c, as the AVX2 product's vectors (so where those cover every column, n a
// multiple of 8, the two agree bit for bit); `lanes` masks the loads and stores of a block
// narrower than a vector (the columns' tail, fused too).
template <int kRows, int kVecs>
TURBOKV_TARGET_AVX512 inline void gemm_block_avx512(const float* a, int64_t lda, const float* b,
                                                    int64_t ldb, float* c, int64_t ldc, int depth,
                                                    bool accumulate, __mmask16 lanes = 0xFFFF) {
  __m512 acc[kRows][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) {
      acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(lanes, c + r * ldc + 16 * v) : _mm512_setzero_ps();
    }
  }
  for (int k = 0; k < depth; ++k) {
    __m512 bv[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) bv[v] = _mm512_maskz_loadu_ps(lanes, b + k * ldb + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, lanes, acc[r][v]);
  }
}

// 6 x 64 blocks: 24 accumulators of AVX-512's 32 registers. On a 2-core Emerald Rapids VM the
// 512-query chunk against an 8K cache (batch 1, K4V4 tiles) took 0.70x the time of the AVX2
// product, and 6 x 64 0.85-0.91x of 6 x 32 (SmolLM2's 2K prompt 0.92x; kernel_choices_avx2.md,
// round 47).
struct Avx512 {
  static constexpr int kLanes = 16, kWide = 64;
  template <int kRows, int kVecs>
  TURBOKV_TARGET_AVX512 static void block(const float* a, int64_t lda, const float* b, int64_t ldb,
                                          float* c, int64_t ldc, int depth, bool accumulate) {
    gemm_block_avx512<kRows, kVecs>(a, lda, b, ldb, c, ldc, depth, accumulate);
  }
  template <int kRows>
  TURBOKV_TARGET_AVX512 static void tail(const float* a, int64_t lda, const float* b, int64_t ldb,
                                         float* c, int64_t ldc, int n, int depth, bool accumulate) {
    gemm_block_avx512<kRows, 1>(a, lda, b, ldb, c, ldc, depth, accumulate,
                                static_cast<__mmask16>((1u << n) - 1u));
  }
};

void gemm_avx512(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                 int m, int n, int depth, bool accumulate) {
  gemm_in_bands<Avx512>(a, lda, b, ldb, c, ldc, m, n, depth, accumulate);
}
#endif

#if defined(__aarch64__)
// NEON: the same register blocks with 4-float vectors, kRows x (4 kVecs) of c (6 x 16: 24 of
// the 32 registers hold accumulators).
template <int kRows, int kVecs>
inline void gemm_block_neon(const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                            int64_t ldc, int depth, bool accumulate) {
  float32x4_t acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVecs; ++v) acc[r][v] = accumulate ? vld1q_f32(c + r * ldc + 4 * v) : vdupq_n_f32(0.0f);
  }
  for (int k = 0; k < depth; ++k) {
    float32x4_t bv[kVecs];
    for (int v = 0; v < kVecs; ++v) bv[v] = vld1q_f32(b + k * ldb + 4 * v);
    for (int r = 0; r < kRows; ++r) {
      const float ark = a[r * lda + k];
      for (int v = 0; v < kVecs; ++v) acc[r][v] = vfmaq_n_f32(acc[r][v], bv[v], ark);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVecs; ++v) vst1q_f32(c + r * ldc + 4 * v, acc[r][v]);
  }
}

struct Neon : ScalarTail {  // 6 x 16 blocks: 24 accumulators of NEON's 32 registers
  static constexpr int kLanes = 4, kWide = 16;
  template <int kRows, int kVecs>
  static void block(const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                    int64_t ldc, int depth, bool accumulate) {
    gemm_block_neon<kRows, kVecs>(a, lda, b, ldb, c, ldc, depth, accumulate);
  }
};

void gemm_neon(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
               int m, int n, int depth, bool accumulate) {
  gemm_in_bands<Neon>(a, lda, b, ldb, c, ldc, m, n, depth, accumulate);
}
#endif

}  // namespace

GemmFn select_gemm(SimdLevel level) {
#if defined(__aarch64__)
  if (level == SimdLevel::kNeon) return gemm_neon;
#endif
  return TURBOKV_PICK(level, gemm_scalar, gemm_avx2, gemm_avx512);
}

}  // namespace kernels
}  // namespace turbokv
