#include <stdexcept>
#include <string>

#include "kernels.hpp"

namespace turbokv {
namespace kernels {
namespace {

KernelSet build(SimdLevel level) {
  return KernelSet{level,
                   select_fwht(level),
                   select_matvec_columns(level),
                   select_sum_squares(level),
                   select_quantize(level),
                   select_pack(level),
                   select_unpack(level),
                   select_dot_lookup(level),
                   select_axpy_lookup(level),
                   select_sign_dot(level),
                   select_dot_packed(level),
                   select_axpy_packed(level),
                   select_dot_half(level),
                   select_axpy_half(level),
                   select_to_half(level),
                   select_from_half(level),
                   select_exp_shifted(level),
                   select_scale_max(level)};
}

}  // namespace

const KernelSet& kernel_set(SimdLevel level) {
  if (static_cast<int>(level) > static_cast<int>(detect_simd())) {
    throw std::runtime_error(std::string("SIMD level ") + simd_name(level) +
                             " is not supported by this CPU (best: " + simd_name(detect_simd()) +
                             ")");
  }
  static const KernelSet scalar = build(SimdLevel::kScalar);
  static const KernelSet avx2 = build(SimdLevel::kAvx2);
  static const KernelSet avx512 = build(SimdLevel::kAvx512);
  switch (level) {
    case SimdLevel::kAvx512: return avx512;
    case SimdLevel::kAvx2: return avx2;
    default: return scalar;
  }
}

}  // namespace kernels
}  // namespace turbokv
