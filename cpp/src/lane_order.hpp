// Internal: the lane order of the packed-code kernels, shared by the float32 and int8 ones.
#pragma once
#include <algorithm>
#include <cstdint>

namespace turbokv {
namespace kernels {

// The lane order of the packed kernels. With `lanes` code bytes loaded into int32 lanes and
// shifted by s * bits, lane l of step (g, s) holds the index of coordinate
// (lanes * g + l) * per_byte + s. to_lanes copies m vectors of d floats into that order
// (per vector: chunks * per_byte * lanes floats, zero past d); from_lanes copies them back.
inline void to_lanes(const float* x, int m, int d, int chunks, int per_byte, int lanes, float* out) {
  const int64_t per_vector = static_cast<int64_t>(chunks) * per_byte * lanes;
  std::fill(out, out + per_vector * m, 0.0f);
  for (int a = 0; a < m; ++a) {
    for (int g = 0; g < chunks; ++g) {
      for (int s = 0; s < per_byte; ++s) {
        for (int l = 0; l < lanes; ++l) {
          const int i = (lanes * g + l) * per_byte + s;
          if (i < d) out[a * per_vector + (g * per_byte + s) * lanes + l] = x[static_cast<int64_t>(a) * d + i];
        }
      }
    }
  }
}

inline void from_lanes(const float* in, int m, int d, int chunks, int per_byte, int lanes, float* x) {
  const int64_t per_vector = static_cast<int64_t>(chunks) * per_byte * lanes;
  for (int a = 0; a < m; ++a) {
    for (int g = 0; g < chunks; ++g) {
      for (int s = 0; s < per_byte; ++s) {
        for (int l = 0; l < lanes; ++l) {
          const int i = (lanes * g + l) * per_byte + s;
          if (i < d) x[static_cast<int64_t>(a) * d + i] = in[a * per_vector + (g * per_byte + s) * lanes + l];
        }
      }
    }
  }
}

}  // namespace kernels
}  // namespace turbokv
