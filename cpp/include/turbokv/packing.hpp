// Dense bit packing of quantiser indices.
//
// Byte layout (any width 1..8): the indices form one little-endian bit stream. Index i occupies
// stream bits [i*b, (i+1)*b), least significant bit first, and stream bit k is bit (k % 8) of byte
// k / 8. A vector of n indices takes ceil(n*b / 8) bytes; unused high bits of the last byte are 0.
// Eight indices always fill exactly b bytes, which is what lets SIMD kernels move 16 or 32 at a time.
#pragma once
#include <cstddef>
#include <cstdint>

namespace turbokv {

inline size_t packed_bytes(int bits, size_t count) {
  return (count * static_cast<size_t>(bits) + 7) / 8;
}

}  // namespace turbokv
