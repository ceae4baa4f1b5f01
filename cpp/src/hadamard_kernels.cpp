// Fast Walsh-Hadamard transform, O(n log n), in place and unnormalised.
// Every variant computes each butterfly as (a + b, a - b) with a the lower-index element, stage by
// stage, so all levels give bit-identical output (see kernels.hpp).
#include "avx2_helpers.hpp"
#include "encode_avx512.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

void butterfly_stage_scalar(float* x, int n, int h) {
  for (int i = 0; i < n; i += 2 * h) {
    for (int j = i; j < i + h; ++j) {
      const float a = x[j], b = x[j + h];
      x[j] = a + b;
      x[j + h] = a - b;
    }
  }
}

void fwht_scalar(const float* in, const float* pre, const float* post, float* out, int n) {
  for (int i = 0; i < n; ++i) out[i] = pre ? in[i] * pre[i] : in[i];
  for (int h = 1; h < n; h *= 2) butterfly_stage_scalar(out, n, h);
  if (post) {
    for (int i = 0; i < n; ++i) out[i] *= post[i];
  }
}

#if TURBOKV_X86
// Within a register, lane j pairs with lane j ^ h. partner + v * sign gives a + b in the lower
// lane (sign +1) and a - b in the upper lane (sign -1, where partner = a, v = b); the product by
// +-1 is exact, so the fused multiply-add rounds exactly like the plain add or subtract.
template <bool kHalves>
TURBOKV_TARGET_AVX2 __m256 butterflies_within_avx2(__m256 v) {
  const __m256 s1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
  const __m256 s2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
  const __m256 s4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
  v = _mm256_fmadd_ps(v, s1, _mm256_permute_ps(v, 0xB1));
  v = _mm256_fmadd_ps(v, s2, _mm256_permute_ps(v, 0x4E));
  if (kHalves) {  // the same two sums on 128-bit halves, no vperm2f128 (kLaneSwapIsSlow)
    const __m128 low = _mm256_castps256_ps128(v), high = _mm256_extractf128_ps(v, 1);
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_add_ps(low, high)), _mm_sub_ps(low, high), 1);
  }
  return _mm256_fmadd_ps(v, s4, _mm256_permute2f128_ps(v, v, 0x01));
}

TURBOKV_TARGET_AVX2 __m256 load_scaled_avx2(const float* in, const float* pre, int i) {
  const __m256 v = _mm256_loadu_ps(in + i);
  return pre ? _mm256_mul_ps(v, _mm256_loadu_ps(pre + i)) : v;
}

TURBOKV_TARGET_AVX2 void store_scaled_avx2(float* out, const float* post, int i, __m256 v) {
  _mm256_storeu_ps(out + i, post ? _mm256_mul_ps(v, _mm256_loadu_ps(post + i)) : v);
}

// Registers r[0, kCount) hold floats [0, 8 * kCount) of in, transformed depth first: each half
// is finished before the butterflies that join the halves, so few registers are live at once.
// Every element still meets the stages in the order h = 1, 2, 4, ... with the same operands
// (bit-identical). With pre and post as template arguments and the last stage storing directly
// (fwht_registers_avx2), GCC no longer keeps the registers on the stack: d = 128 in 41 instead of
// 55 ns on a Zen 3 core (best of 400 calls; kernel_choices_avx2.md, round 12).
// kPre: pre is not null (chosen once per call, not per register).
template <bool kHalves, int kCount, bool kPre>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void fwht_depth_first_avx2(
    __m256* r, const float* in, const float* pre) {
  if constexpr (kCount == 1) {
    const __m256 v = _mm256_loadu_ps(in);
    r[0] = butterflies_within_avx2<kHalves>(kPre ? _mm256_mul_ps(v, _mm256_loadu_ps(pre)) : v);
  } else {
    constexpr int kHalf = kCount / 2;
    fwht_depth_first_avx2<kHalves, kHalf, kPre>(r, in, pre);
    fwht_depth_first_avx2<kHalves, kHalf, kPre>(r + kHalf, in + 8 * kHalf, kPre ? pre + 8 * kHalf : nullptr);
    for (int k = 0; k < kHalf; ++k) {
      const __m256 a = r[k], b = r[k + kHalf];
      r[k] = _mm256_add_ps(a, b);
      r[k + kHalf] = _mm256_sub_ps(a, b);
    }
  }
}

// out[i, i + 8) = v, times post[i, i + 8) where kPost.
template <bool kPost>
TURBOKV_TARGET_AVX2 __attribute__((always_inline)) inline void store_block_avx2(float* out, const float* post,
                                                                               int i, __m256 v) {
  _mm256_storeu_ps(out + i, kPost ? _mm256_mul_ps(v, _mm256_loadu_ps(post + i)) : v);
}

// Whole transform of n = 8 * kRegs floats in registers: one load and one store per element. The
// last stage stores its sums directly (a loop storing r[] became a block copy through the stack
// and general registers in GCC 12).
template <bool kHalves, int kRegs, bool kPre, bool kPost>
TURBOKV_TARGET_AVX2 void fwht_registers_avx2(const float* in, const float* pre, const float* post, float* out) {
  __m256 r[kRegs];
  if constexpr (kRegs == 1) {
    fwht_depth_first_avx2<kHalves, 1, kPre>(r, in, pre);
    store_block_avx2<kPost>(out, post, 0, r[0]);
  } else {
    constexpr int kHalf = kRegs / 2;
    fwht_depth_first_avx2<kHalves, kHalf, kPre>(r, in, pre);
    fwht_depth_first_avx2<kHalves, kHalf, kPre>(r + kHalf, in + 8 * kHalf, kPre ? pre + 8 * kHalf : nullptr);
    for (int k = 0; k < kHalf; ++k) {
      store_block_avx2<kPost>(out, post, 8 * k, _mm256_add_ps(r[k], r[k + kHalf]));
      store_block_avx2<kPost>(out, post, 8 * (k + kHalf), _mm256_sub_ps(r[k], r[k + kHalf]));
    }
  }
}

// n = 8 ... 128; false for other n. pre and post are resolved once per call (kPre, kPost):
// branches on them per register made GCC keep the registers on the stack.
template <bool kHalves, bool kPre, bool kPost>
TURBOKV_TARGET_AVX2 bool fwht_in_registers_avx2(const float* in, const float* pre, const float* post,
                                                float* out, int n) {
  switch (n) {
    case 8: fwht_registers_avx2<kHalves, 1, kPre, kPost>(in, pre, post, out); return true;
    case 16: fwht_registers_avx2<kHalves, 2, kPre, kPost>(in, pre, post, out); return true;
    case 32: fwht_registers_avx2<kHalves, 4, kPre, kPost>(in, pre, post, out); return true;
    case 64: fwht_registers_avx2<kHalves, 8, kPre, kPost>(in, pre, post, out); return true;
    case 128:
      // 16 data registers plus the sign constants spill on AVX2's 16; two 64-float halves in
      // registers and the last stage as one pass are the same butterflies in the same order.
      fwht_registers_avx2<kHalves, 8, kPre, false>(in, pre, nullptr, out);
      fwht_registers_avx2<kHalves, 8, kPre, false>(in + 64, kPre ? pre + 64 : nullptr, nullptr, out + 64);
      for (int i = 0; i < 64; i += 8) {
        const __m256 a = _mm256_loadu_ps(out + i), b = _mm256_loadu_ps(out + i + 64);
        store_block_avx2<kPost>(out, post, i, _mm256_add_ps(a, b));
        store_block_avx2<kPost>(out, post, i + 64, _mm256_sub_ps(a, b));
      }
      return true;
    default: return false;
  }
}

template <bool kHalves>
TURBOKV_TARGET_AVX2 void fwht_avx2(const float* in, const float* pre, const float* post,
                                   float* out, int n) {
  const bool done =
      pre != nullptr ? (post != nullptr ? fwht_in_registers_avx2<kHalves, true, true>(in, pre, post, out, n)
                                        : fwht_in_registers_avx2<kHalves, true, false>(in, pre, nullptr, out, n))
                     : (post != nullptr ? fwht_in_registers_avx2<kHalves, false, true>(in, nullptr, post, out, n)
                                        : fwht_in_registers_avx2<kHalves, false, false>(in, nullptr, nullptr, out, n));
  if (done) return;
  if (n < 8) return fwht_scalar(in, pre, post, out, n);
  for (int i = 0; i < n; i += 8) {
    _mm256_storeu_ps(out + i, butterflies_within_avx2<kHalves>(load_scaled_avx2(in, pre, i)));
  }
  for (int h = 8; h < n; h *= 2) {
    for (int i = 0; i < n; i += 2 * h) {
      for (int j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(out + j), b = _mm256_loadu_ps(out + j + h);
        _mm256_storeu_ps(out + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(out + j + h, _mm256_sub_ps(a, b));
      }
    }
  }
  if (post) {
    for (int i = 0; i < n; i += 8) store_scaled_avx2(out, post, i, _mm256_loadu_ps(out + i));
  }
}

TURBOKV_TARGET_AVX512 __m512 load_scaled_avx512(const float* in, const float* pre, int i) {
  const __m512 v = _mm512_loadu_ps(in + i);
  return pre ? _mm512_mul_ps(v, _mm512_loadu_ps(pre + i)) : v;
}

TURBOKV_TARGET_AVX512 void store_scaled_avx512(float* out, const float* post, int i, __m512 v) {
  _mm512_storeu_ps(out + i, post ? _mm512_mul_ps(v, _mm512_loadu_ps(post + i)) : v);
}

template <int kRegs>
TURBOKV_TARGET_AVX512 void fwht_registers_avx512(const float* in, const float* pre,
                                                 const float* post, float* out) {
  __m512 r[kRegs];
  for (int k = 0; k < kRegs; ++k) r[k] = load_scaled_avx512(in, pre, 16 * k);
  fwht_in_registers_avx512<kRegs>(r);
  for (int k = 0; k < kRegs; ++k) store_scaled_avx512(out, post, 16 * k, r[k]);
}

TURBOKV_TARGET_AVX512 void fwht_avx512(const float* in, const float* pre, const float* post,
                                       float* out, int n) {
  switch (n) {
    case 16: return fwht_registers_avx512<1>(in, pre, post, out);
    case 32: return fwht_registers_avx512<2>(in, pre, post, out);
    case 64: return fwht_registers_avx512<4>(in, pre, post, out);
    case 128: return fwht_registers_avx512<8>(in, pre, post, out);
    case 256: return fwht_registers_avx512<16>(in, pre, post, out);
    default: break;
  }
  if (n < 16) return fwht_avx2<false>(in, pre, post, out, n);
  for (int i = 0; i < n; i += 16) {
    _mm512_storeu_ps(out + i, butterflies_within_avx512(load_scaled_avx512(in, pre, i)));
  }
  for (int h = 16; h < n; h *= 2) {
    for (int i = 0; i < n; i += 2 * h) {
      for (int j = i; j < i + h; j += 16) {
        const __m512 a = _mm512_loadu_ps(out + j), b = _mm512_loadu_ps(out + j + h);
        _mm512_storeu_ps(out + j, _mm512_add_ps(a, b));
        _mm512_storeu_ps(out + j + h, _mm512_sub_ps(a, b));
      }
    }
  }
  if (post) {
    for (int i = 0; i < n; i += 16) store_scaled_avx512(out, post, i, _mm512_loadu_ps(out + i));
  }
}
#endif

}  // namespace

FwhtFn fwht_avx2_variant(bool halves) {
#if TURBOKV_X86
  return halves ? fwht_avx2<true> : fwht_avx2<false>;
#else
  (void)halves;
  return nullptr;
#endif
}

FwhtFn select_fwht(SimdLevel level) {
  return TURBOKV_PICK(level, fwht_scalar, fwht_avx2_variant(kLaneSwapIsSlow), fwht_avx512);
}

}  // namespace kernels
}  // namespace turbokv
