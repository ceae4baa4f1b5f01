#include <cstdlib>
#include <stdexcept>
#include <string>

#include "amd_zen.hpp"
#include "avx2_helpers.hpp"
#include "gather_speed.hpp"
#include "kernels.hpp"

namespace turbokv {
namespace kernels {

namespace {
#if TURBOKV_X86
const int kZenGeneration = amd_zen_generation();  // read once; initialised before the flags below
#else
const int kZenGeneration = 0;
#endif
// Everywhere, so that a TURBOKV_GATHERS value it cannot take is refused off x86 too.
const GatherSpeed kGatherSpeed = gather_speed(kZenGeneration, std::getenv("TURBOKV_GATHERS"), read_gds_status());
}  // namespace
#if TURBOKV_X86
const bool kGathersAreSlow = kGatherSpeed.slow;
const bool kLaneSwapIsSlow = kZenGeneration == 1;
const bool kPdepIsSlow = kZenGeneration == 1 || kZenGeneration == 2;
#endif

namespace {

// Every field is assigned by name: neighbouring fields share signatures (pack/unpack,
// exp_shifted/scale_max), so a positional initialiser could swap two and still compile.
KernelSet build(SimdLevel level) {
  KernelSet k{};
  k.level = level;
  k.fwht = select_fwht(level);
  k.matvec_columns = select_matvec_columns(level);
  k.sum_squares = select_sum_squares(level);
  k.quantize = select_quantize(level);
  k.quantize_packed = select_quantize_packed(level);
  k.encode_rows = select_encode_rows(level);
  k.pack = select_pack(level);
  k.unpack = select_unpack(level);
  k.dot_lookup = select_dot_lookup(level);
  k.axpy_lookup = select_axpy_lookup(level);
  k.sign_dot = select_sign_dot(level);
  k.dot_packed = select_dot_packed(level);
  k.dot_packed_int8 = select_dot_packed_int8(level);
  k.dot_packed_int16 = select_dot_packed_int16(level);
  k.axpy_packed = select_axpy_packed(level);
  k.axpy_packed_int8 = select_axpy_packed_int8(level);
  k.dot_half = select_dot_half(level);
  k.axpy_half = select_axpy_half(level);
  k.to_half = select_to_half(level);
  k.from_half = select_from_half(level);
  k.exp_shifted = select_exp_shifted(level);
  k.scale_max = select_scale_max(level);
  k.scale_rows = select_scale_rows(level);
  k.gemm = select_gemm(level);
  k.quantize_rows_int8 = select_quantize_rows_int8(level);
  k.quantize_rows_int16 = select_quantize_rows_int16(level);
  if (level == SimdLevel::kNeon) use_neon_kernels(k);
  return k;
}

}  // namespace

const KernelSet& kernel_set(SimdLevel level) {
  if (!kGatherSpeed.error.empty()) throw std::invalid_argument(kGatherSpeed.error);
  if (!simd_supported(level)) {
    throw std::runtime_error(std::string("SIMD level ") + simd_name(level) +
                             " is not supported by this CPU (best: " + simd_name(detect_simd()) +
                             ")");
  }
  static const KernelSet scalar = build(SimdLevel::kScalar);
  static const KernelSet avx2 = build(SimdLevel::kAvx2);
  static const KernelSet avx512 = build(SimdLevel::kAvx512);
  static const KernelSet neon = build(SimdLevel::kNeon);
  switch (level) {
    case SimdLevel::kAvx512: return avx512;
    case SimdLevel::kNeon: return neon;
    case SimdLevel::kAvx2: return avx2;
    default: return scalar;
  }
}

KernelRoutes kernel_routes() {
  if (!kGatherSpeed.error.empty()) throw std::invalid_argument(kGatherSpeed.error);
#if TURBOKV_X86
  return KernelRoutes{kHasAvx512Vnni, kHasAvx512Vbmi, kHasAvxVnni, kGathersAreSlow,
                      kGatherSpeed.gds_mitigation, kPdepIsSlow, kLaneSwapIsSlow};
#else
  return KernelRoutes{false, false, false, false, false, false, false};
#endif
}

}  // namespace kernels
}  // namespace turbokv
