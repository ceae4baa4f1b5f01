// Packing and unpacking of b-bit indices (layout in turbokv/packing.hpp).
#include <array>
#include <cstring>

#include "avx2_helpers.hpp"
#include "kernels.hpp"
#include "turbokv/packing.hpp"

namespace turbokv {
namespace kernels {
namespace {

void pack_scalar(const uint8_t* idx, int n, int bits, uint8_t* out) {
  if (bits == 0) return;
  const uint64_t mask = (1u << bits) - 1u;
  uint64_t acc = 0;
  int filled = 0;
  for (int i = 0; i < n; ++i) {
    acc |= (idx[i] & mask) << filled;
    filled += bits;
    while (filled >= 8) {
      *out++ = static_cast<uint8_t>(acc);
      acc >>= 8;
      filled -= 8;
    }
  }
  if (filled > 0) *out = static_cast<uint8_t>(acc);
}

void unpack_scalar(const uint8_t* packed, int n, int bits, uint8_t* idx) {
  if (bits == 0) {
    std::memset(idx, 0, static_cast<size_t>(n));
    return;
  }
  const uint64_t mask = (1u << bits) - 1u;
  uint64_t acc = 0;
  int have = 0;
  for (int i = 0; i < n; ++i) {
    while (have < bits) {
      acc |= static_cast<uint64_t>(*packed++) << have;
      have += 8;
    }
    idx[i] = static_cast<uint8_t>(acc & mask);
    acc >>= bits;
    have -= bits;
  }
}

#if TURBOKV_X86
// SSE/AVX2 shifts instead of BMI2 pext/pdep: AMD cores before Zen 3 run pext/pdep in microcode
// (hundreds of cycles for a dense mask; on this project's Zen 1 EPYC pack_bmi2 was 58% of encode
// time and unpack made 3- and 8-bit scores 10-30x slower than 4-bit). Shifts are fast everywhere.

// pshufb orders for packing: per 128-bit half, bytes [0, B) and [8, 8 + B) to [0, 2B).
template <int B>
constexpr std::array<int8_t, 32> pack_order() {
  std::array<int8_t, 32> order{};
  for (int k = 0; k < 32; ++k) {
    const int j = k % 16;
    order[k] = static_cast<int8_t>(j < B ? j : j < 2 * B ? j - B + 8 : -1);
  }
  return order;
}

template <int B>
alignas(32) constexpr std::array<int8_t, 32> kPackOrder = pack_order<B>();

// Pack 32 indices of B < 8 bits (4 groups of 8, each group B bytes) by merging neighbours in
// ever wider lanes: 2 x B bits per 16-bit lane, 4 x B per 32-bit lane, 8 x B per 64-bit lane;
// then the first B bytes of each 64-bit lane are moved together.
template <int B>
TURBOKV_TARGET_AVX2 void pack32_avx2(const uint8_t* idx, uint8_t* out) {
  constexpr uint32_t kMask = (1u << B) - 1u;
  __m256i v = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)),
                               _mm256_set1_epi8(static_cast<char>(kMask)));
  v = _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi16(0x00FF)),
                      _mm256_and_si256(_mm256_srli_epi16(v, 8 - B),
                                       _mm256_set1_epi16(static_cast<short>(kMask << B))));
  v = _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)),
                      _mm256_and_si256(_mm256_srli_epi32(v, 16 - 2 * B),
                                       _mm256_set1_epi32(static_cast<int>(((1u << 2 * B) - 1u) << 2 * B))));
  v = _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi64x(0xFFFFFFFFLL)),
                      _mm256_and_si256(_mm256_srli_epi64(v, 32 - 4 * B),
                                       _mm256_set1_epi64x(static_cast<long long>(((1ull << 4 * B) - 1ull) << 4 * B))));
  v = _mm256_shuffle_epi8(v, _mm256_load_si256(reinterpret_cast<const __m256i*>(kPackOrder<B>.data())));
  alignas(32) uint8_t bytes[32];
  _mm256_store_si256(reinterpret_cast<__m256i*>(bytes), v);
  std::memcpy(out, bytes, 2 * B);
  std::memcpy(out + 2 * B, bytes + 16, 2 * B);
}

template <int B>
TURBOKV_TARGET_AVX2 void pack_bits_avx2(const uint8_t* idx, int n, uint8_t* out) {
  int i = 0;
  for (; i + 32 <= n; i += 32, out += 4 * B) pack32_avx2<B>(idx + i, out);
  pack_scalar(idx + i, n - i, B, out);
}

template <int B>
TURBOKV_TARGET_AVX2 void unpack16_avx2(__m128i raw, uint8_t* idx) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(idx), unpack16_register_avx2<B>(raw));
}

template <int B>
TURBOKV_TARGET_AVX2 void unpack_bits_avx2(const uint8_t* packed, int n, uint8_t* idx) {
  // A whole 16-byte load wherever 16 bytes remain in the packed row (a 2B-byte copy into a
  // register went through the stack: a store-forwarding stall per 16 indices, 3-bit scores 1.5x
  // slower); the last groups of a row of at least 16 bytes load its last 16 bytes and slide
  // theirs down (the copy stalled there too: 3 of the 8 groups of a 2-bit row of 128); only
  // shorter rows copy exactly their 2B bytes.
  const int64_t total = (static_cast<int64_t>(n) * B + 7) / 8;
  int i = 0;
  int64_t offset = 0;
  for (; i + 16 <= n && offset + 16 <= total; i += 16, offset += 2 * B) {
    unpack16_avx2<B>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + offset)), idx + i);
  }
  if (total >= 16) {
    const __m128i last = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + total - 16));
    for (; i + 16 <= n; i += 16, offset += 2 * B) {
      const int64_t slide = offset - (total - 16);  // in [1, 15]: offset + 16 > total > offset
      unpack16_avx2<B>(_mm_shuffle_epi8(last, _mm_loadu_si128(reinterpret_cast<const __m128i*>(kSlideDown + slide))), idx + i);
    }
  }
  for (; i + 16 <= n; i += 16, offset += 2 * B) {
    __m128i raw = _mm_setzero_si128();
    std::memcpy(&raw, packed + offset, 2 * B);  // only the 2B bytes of these 16 indices are read
    unpack16_avx2<B>(raw, idx + i);
  }
  unpack_scalar(packed + offset, n - i, B, idx + i);
}

// 4 bits: byte k = idx[2k] | idx[2k + 1] << 4 is one maddubs of the masked index bytes with
// (1, 16) (at most 255, no saturation), and packus with a qword permute puts 64 indices' bytes in
// order: 8 operations per 32 output bytes instead of the general shift-and-mask rounds and a copy
// through the stack (4-bit encode spent ~10% of its time packing).
TURBOKV_TARGET_AVX2 __m256i nibble_pairs_avx2(const uint8_t* idx) {
  const __m256i bytes = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)),
                                         _mm256_set1_epi8(0x0F));  // bits above the width are ignored
  return _mm256_maddubs_epi16(bytes, _mm256_set1_epi16(0x1001));  // bytes (1, 16)
}

TURBOKV_TARGET_AVX2 void pack_nibbles_avx2(const uint8_t* idx, int n, uint8_t* out) {
  int i = 0;
  for (; i + 64 <= n; i += 64, out += 32) {
    const __m256i bytes = _mm256_permute4x64_epi64(
        _mm256_packus_epi16(nibble_pairs_avx2(idx + i), nibble_pairs_avx2(idx + i + 32)), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), bytes);
  }
  for (; i + 32 <= n; i += 32, out += 16) {
    const __m256i pairs = nibble_pairs_avx2(idx + i);
    const __m256i bytes = _mm256_permute4x64_epi64(_mm256_packus_epi16(pairs, pairs), 0xD8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(bytes));
  }
  pack_scalar(idx + i, n - i, 4, out);
}

// 2 bits: maddubs with (1, 4) joins index pairs, madd with (1, 16) the pairs of pairs into
// i0 | i1 << 2 | i2 << 4 | i3 << 6 per int32 (at most 255), two packs and a dword permute order
// them: 12 operations per 16 output bytes.
TURBOKV_TARGET_AVX2 __m256i quad_fields_avx2(const uint8_t* idx) {
  const __m256i bytes = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)),
                                         _mm256_set1_epi8(0x03));  // bits above the width are ignored
  const __m256i pairs = _mm256_maddubs_epi16(bytes, _mm256_set1_epi16(0x0401));  // bytes (1, 4)
  return _mm256_madd_epi16(pairs, _mm256_set1_epi32(0x00100001));                // words (1, 16)
}

TURBOKV_TARGET_AVX2 void pack_quads_avx2(const uint8_t* idx, int n, uint8_t* out) {
  int i = 0;
  for (; i + 64 <= n; i += 64, out += 16) {
    const __m256i words = _mm256_packus_epi32(quad_fields_avx2(idx + i), quad_fields_avx2(idx + i + 32));
    // dwords: first 32 indices' bytes 0-3 | 4-7 in lanes 0 | 4, the next 32's in 1 | 5
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(words, words),
                                                      _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(bytes));
  }
  pack_scalar(idx + i, n - i, 2, out);
}

TURBOKV_TARGET_AVX2 void pack_avx2(const uint8_t* idx, int n, int bits, uint8_t* out) {
  switch (bits) {
    case 1: return pack_bits_avx2<1>(idx, n, out);
    case 2: return pack_quads_avx2(idx, n, out);
    case 3: return pack_bits_avx2<3>(idx, n, out);
    case 4: return pack_nibbles_avx2(idx, n, out);
    case 5: return pack_bits_avx2<5>(idx, n, out);
    case 6: return pack_bits_avx2<6>(idx, n, out);
    case 7: return pack_bits_avx2<7>(idx, n, out);
    case 8:  // a byte copy (memcpy must not see the null pointer of an empty vector)
      if (n > 0) std::memcpy(out, idx, static_cast<size_t>(n));
      return;
    default: return pack_scalar(idx, n, bits, out);  // 0 bits: nothing to write
  }
}

TURBOKV_TARGET_AVX2 void unpack_avx2(const uint8_t* packed, int n, int bits, uint8_t* idx) {
  switch (bits) {
    case 1: return unpack_bits_avx2<1>(packed, n, idx);
    case 2: return unpack_bits_avx2<2>(packed, n, idx);
    case 3: return unpack_bits_avx2<3>(packed, n, idx);
    case 4: return unpack_bits_avx2<4>(packed, n, idx);
    case 5: return unpack_bits_avx2<5>(packed, n, idx);
    case 6: return unpack_bits_avx2<6>(packed, n, idx);
    case 7: return unpack_bits_avx2<7>(packed, n, idx);
    case 8:
      if (n > 0) std::memcpy(idx, packed, static_cast<size_t>(n));
      return;
    default: return unpack_scalar(packed, n, bits, idx);
  }
}
#endif

}  // namespace

PackFn select_pack(SimdLevel level) {
  return TURBOKV_PICK(level, pack_scalar, pack_avx2, pack_avx2);
}

UnpackFn select_unpack(SimdLevel level) {
  return TURBOKV_PICK(level, unpack_scalar, unpack_avx2, unpack_avx2);
}

}  // namespace kernels
}  // namespace turbokv
