// Internal: 3-bit rows as the 4-bit rows of their indices on AVX-512 VBMI, for the int8 kernels
// (dot_int8_vnni_kernels.cpp, axpy_int8_vnni_kernels.cpp). The 4-bit row is packing.hpp's layout
// (index 2k in byte k's low nibble, 2k + 1 in its high one), so the 4-bit kernels sum 3-bit codes
// unchanged, reading 2 indices per byte where the unpacked copy they replace held 1.
#pragma once
#include <cstdint>

#include "kernels.hpp"

#if TURBOKV_X86
namespace turbokv {
namespace kernels {

#define TURBOKV_TARGET_AVX512_BW_VBMI __attribute__((target("avx512f,avx512bw,avx512vbmi")))

// 128 indices from their 48 packed bytes (fewer at a row's end) as 64 nibble bytes, by a load and
// 5 instructions: vpermb gives 64-bit lane q the 6 bytes of indices 16q .. 16q + 15, vpmultishiftqb
// takes each lane's byte k from bit 6k (indices 2k and 2k + 1 in bits 0-2 and 3-5), and the
// second index moves up one bit into the high nibble.
struct ThreeBitNibbles {
  __m512i spread, shifts;

  TURBOKV_TARGET_AVX512_BW_VBMI ThreeBitNibbles() {
    alignas(64) int8_t s[64], k6[64];
    for (int q = 0; q < 8; ++q) {
      for (int k = 0; k < 8; ++k) {
        s[8 * q + k] = static_cast<int8_t>(6 * q + (k < 6 ? k : 5));  // bytes 6 and 7: not read
        k6[8 * q + k] = static_cast<int8_t>(6 * k);
      }
    }
    spread = _mm512_load_si512(s);
    shifts = _mm512_load_si512(k6);
  }

  // Indices 128 c .. 128 c + 127 of the row at `row`, `row_bytes` long: nibble bytes 64 c .. 64 c + 63
  // (zero past the row's end). A masked load: no byte past the row is read.
  TURBOKV_TARGET_AVX512_BW_VBMI __m512i operator()(const uint8_t* row, int64_t row_bytes, int64_t c) const {
    const int64_t left = row_bytes - 48 * c;
    const __mmask64 valid = left >= 48 ? (__mmask64{1} << 48) - 1 : (__mmask64{1} << left) - 1;
    const __m512i raw = _mm512_maskz_loadu_epi8(valid, row + 48 * c);
    const __m512i fields = _mm512_multishift_epi64_epi8(shifts, _mm512_permutexvar_epi8(spread, raw));
    // Bits 0-2 from fields, 4-6 from fields + fields (bits 3-5 moved up one), 3 and 7 cleared.
    const __m512i merged = _mm512_ternarylogic_epi32(fields, _mm512_add_epi8(fields, fields),
                                                     _mm512_set1_epi8(0x07), 0xE4);  // c ? a : b
    return _mm512_and_si512(merged, _mm512_set1_epi8(0x77));
  }
};

// The n 3-bit rows at codes (code_bytes apart; head_dim d a multiple of 32, so each 4-bit row is a
// whole number of 16-byte blocks) as n 4-bit rows of d / 2 bytes at out.
TURBOKV_TARGET_AVX512_BW_VBMI inline void three_bit_rows_as_nibbles(const uint8_t* codes, int64_t code_bytes,
                                                                    int64_t n, int d, uint8_t* out) {
  const ThreeBitNibbles nibbles;
  const int64_t out_bytes = d / 2;
  for (int64_t j = 0; j < n; ++j) {
    fetch_key_ahead(codes, code_bytes, j, n);
    for (int64_t c = 0; 64 * c < out_bytes; ++c) {
      const int64_t left = out_bytes - 64 * c;
      const __mmask64 valid = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
      _mm512_mask_storeu_epi8(out + j * out_bytes + 64 * c, valid, nibbles(codes + j * code_bytes, code_bytes, c));
    }
  }
  _mm256_zeroupper();
}

}  // namespace kernels
}  // namespace turbokv
#endif
