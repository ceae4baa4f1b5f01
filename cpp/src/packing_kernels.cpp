// Packing and unpacking of b-bit indices (layout in turbokv/packing.hpp).
#include <cstring>

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
// The low `bits` bits of each of 8 bytes.
inline uint64_t byte_lane_mask(int bits) { return 0x0101010101010101ULL * ((1u << bits) - 1u); }

// BMI2 pext gathers the low bits of 8 bytes into 8*bits contiguous bits: exactly the stream layout.
// Groups are moved as whole 64-bit words while 8 bytes remain in the buffer (a variable-length
// memcpy would be a libc call per group); the last groups go byte by byte.
TURBOKV_TARGET_AVX2 void pack_bmi2(const uint8_t* idx, int n, int bits, uint8_t* out) {
  if (bits == 0) return;
  const uint64_t lanes = byte_lane_mask(bits);
  const int64_t total = static_cast<int64_t>(packed_bytes(bits, n));
  int i = 0;
  int64_t offset = 0;
  for (; i + 8 <= n && offset + 8 <= total; i += 8, offset += bits) {
    uint64_t v;
    std::memcpy(&v, idx + i, 8);
    const uint64_t packed = _pext_u64(v, lanes);
    std::memcpy(out + offset, &packed, 8);  // the bytes past `bits` are rewritten by later groups
  }
  pack_scalar(idx + i, n - i, bits, out + offset);
}

TURBOKV_TARGET_AVX2 void unpack_bmi2(const uint8_t* packed, int n, int bits, uint8_t* idx) {
  if (bits == 0) return unpack_scalar(packed, n, bits, idx);
  const uint64_t lanes = byte_lane_mask(bits);
  const uint64_t group_mask = bits == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * bits)) - 1;
  const int64_t total = static_cast<int64_t>(packed_bytes(bits, n));
  int i = 0;
  int64_t offset = 0;
  for (; i + 8 <= n && offset + 8 <= total; i += 8, offset += bits) {
    uint64_t v;
    std::memcpy(&v, packed + offset, 8);
    const uint64_t spread = _pdep_u64(v & group_mask, lanes);
    std::memcpy(idx + i, &spread, 8);
  }
  unpack_scalar(packed + offset, n - i, bits, idx + i);
}
#endif

}  // namespace

PackFn select_pack(SimdLevel level) {
  return TURBOKV_PICK(level, pack_scalar, pack_bmi2, pack_bmi2);
}

UnpackFn select_unpack(SimdLevel level) {
  return TURBOKV_PICK(level, unpack_scalar, unpack_bmi2, unpack_bmi2);
}

}  // namespace kernels
}  // namespace turbokv
