// Internal: vpdpbusd that adds into its accumulator where it is.
#pragma once

#include "kernels.hpp"

#if TURBOKV_X86

namespace turbokv {
namespace kernels {

// acc += the products of a (unsigned bytes) and b (signed bytes), 4 per int32 lane, in place.
// GCC 12 gives _mm512_dpbusd_epi32 a fresh destination and copies it back: register moves on every
// instruction of a loop that keeps its accumulators in registers (1.3x the value kernel's time;
// the score kernel spilled accumulators to the stack for them); the asm keeps the accumulator put.
__attribute__((target("avx512f,avx512vnni"))) inline void dpbusd(__m512i& acc, __m512i a, __m512i b) {
#if defined(__GNUC__) && !defined(__clang__)
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
#else
  acc = _mm512_dpbusd_epi32(acc, a, b);
#endif
}

}  // namespace kernels
}  // namespace turbokv
#endif
