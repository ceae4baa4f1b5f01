// Int8 values (#13 item 3): the value side of attention with its multiply-adds in integers.
//
// Per query and per group of kInt8ValueGroup tokens (counted from the call's first token), the
// weights are rounded to unsigned bytes on the group's largest, u_j = nearest(w_j * 255 / max),
// the centroids are the codebook's int8 form (quantize_int8), the products u_j * c8[idx] summed
// exactly in int32 and added once per group: acc = fma((max / 255) * table_scale, float(sum), acc).
// Integer sums are exact and the float steps are the same at every level, so every level returns
// the same floats. Scaling per group of 16 keeps a heavy token (an attention sink) from rounding
// its neighbours' weights away beyond its own group: a weight's rounding error is at most 1/510 of
// its group's largest.
//
// This file holds the scalar reference, the selector and the fit test; the AVX-512 kernel
// (vpdpbusd: 64 products per instruction against 16 per float FMA) is axpy_int8_vnni_kernels.cpp.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "int8_layout.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {

float quantize_group_weights(const float* w, int64_t count, float table_scale, uint8_t* out) {
  float top = 0.0f;
  bool negative = false;
  for (int64_t j = 0; j < count; ++j) {
    top = std::max(top, w[j]);
    negative |= w[j] < 0.0f;
  }
  if (negative) throw std::invalid_argument("int8 values need weights >= 0 (softmax weights)");
  const float inv = top > 0.0f ? 255.0f / top : 0.0f;
  // w_j * inv <= 255 up to one rounding, which nearest-even keeps at 255.
  for (int64_t j = 0; j < count; ++j) out[j] = static_cast<uint8_t>(std::nearbyint(w[j] * inv));
  return (top / 255.0f) * table_scale;
}

namespace {

// All weights are rounded before anything is added, so a negative one leaves acc untouched.
void axpy_packed_int8_scalar(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                             int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                             int bits, int d, float* acc) {
  const int64_t groups = (n + kInt8ValueGroup - 1) / kInt8ValueGroup;
  std::vector<uint8_t> u(static_cast<size_t>(m * groups * kInt8ValueGroup));
  std::vector<float> scales(static_cast<size_t>(m * groups));
  for (int a = 0; a < m; ++a) {
    for (int64_t group = 0; group < groups; ++group) {
      const int64_t j0 = group * kInt8ValueGroup;
      scales[a * groups + group] = quantize_group_weights(
          w + a * w_stride + j0, std::min<int64_t>(kInt8ValueGroup, n - j0), table_scale, &u[(a * groups + group) * kInt8ValueGroup]);
    }
  }
  const UnpackFn unpack = select_unpack(SimdLevel::kScalar);
  std::vector<uint8_t> idx(static_cast<size_t>(d));
  std::vector<int32_t> sums(static_cast<size_t>(d));
  for (int a = 0; a < m; ++a) {
    float* acc_a = acc + static_cast<int64_t>(a) * d;
    for (int64_t group = 0; group < groups; ++group) {
      const int64_t j0 = group * kInt8ValueGroup;
      const uint8_t* ua = &u[(a * groups + group) * kInt8ValueGroup];
      std::fill(sums.begin(), sums.end(), 0);
      for (int64_t j = 0; j < std::min<int64_t>(kInt8ValueGroup, n - j0); ++j) {
        unpack(codes + (j0 + j) * code_bytes, d, bits, idx.data());
        for (int i = 0; i < d; ++i) sums[i] += int32_t{ua[j]} * int32_t{table8[idx[i]]};
      }
      // |sum| <= 16 * 255 * 127 < 2^24: the conversion is exact.
      const float scale = scales[a * groups + group];
      for (int i = 0; i < d; ++i) acc_a[i] = std::fma(scale, static_cast<float>(sums[i]), acc_a[i]);
    }
  }
}

#if TURBOKV_X86
void axpy_packed_int8_avx512(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                             int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                             int bits, int d, float* acc) {
  if (int8_values_vnni_fit(bits, code_bytes, d)) {
    return axpy_packed_int8_vnni(w, w_stride, m, codes, code_bytes, n, table8, table_scale, bits, d, acc);
  }
  axpy_packed_int8_scalar(w, w_stride, m, codes, code_bytes, n, table8, table_scale, bits, d, acc);
}
#endif

}  // namespace

AxpyPackedInt8Fn select_axpy_packed_int8(SimdLevel level) {
  return TURBOKV_PICK(level, axpy_packed_int8_scalar, axpy_packed_int8_scalar, axpy_packed_int8_avx512);
}

}  // namespace kernels
}  // namespace turbokv
