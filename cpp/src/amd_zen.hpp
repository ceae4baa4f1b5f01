// Internal: which AMD Zen generation this CPU is, read from CPUID, for the routes that work around
// one generation's slow instructions (avx2_helpers.hpp: kGathersAreSlow, kPdepIsSlow,
// kLaneSwapIsSlow). Read here rather than by __builtin_cpu_is: GCC 12's runtime names Zen 4
// (family 19h model 11h, an EPYC 9004) "znver3", and GCC 13's "znver4", so the routes would
// depend on the compiler.
#pragma once

#include "kernels.hpp"

#if TURBOKV_X86
#include <cpuid.h>

#include <cstring>

namespace turbokv {
namespace kernels {

// 0 where the CPU is not a Zen core (Intel, older AMD), else 1 (Zen and Zen+, and Hygon's Dhyana,
// family 18h: a Zen 1 core), 2, 3, 4 or 5 (Zen 5 and later). Families and models from AMD's
// revision guides, as GCC 13's cpuinfo.h reads them; `amd`: vendor AuthenticAMD or HygonGenuine;
// `family` and `model` are CPUID's display values (extended fields added).
constexpr int zen_generation(bool amd, unsigned family, unsigned model) {
  if (!amd) return 0;
  if (family == 0x17) return model < 0x30 ? 1 : 2;
  if (family == 0x18) return 1;
  if (family == 0x19) return (model >= 0x10 && model <= 0x1f) || (model >= 0x60 && model <= 0xaf) ? 4 : 3;
  return family > 0x19 ? 5 : 0;
}

// zen_generation of this CPU.
inline int amd_zen_generation() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) == 0) return 0;
  char vendor[12];
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  const bool amd = std::memcmp(vendor, "AuthenticAMD", 12) == 0 || std::memcmp(vendor, "HygonGenuine", 12) == 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return 0;
  const unsigned base_family = (eax >> 8) & 0xf;
  const unsigned family = base_family == 0xf ? base_family + ((eax >> 20) & 0xff) : base_family;
  const unsigned model = ((eax >> 4) & 0xf) | (base_family == 0xf ? (eax >> 12) & 0xf0 : 0);
  return zen_generation(amd, family, model);
}

}  // namespace kernels
}  // namespace turbokv
#endif
