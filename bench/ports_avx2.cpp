// Throughput of the AVX2 instructions the int8 kernels are built from, alone and in the pairs the
// kernels issue (bench/results/kernel_choices_avx2.md, round 28: which ones share execution ports).
//
//   g++ -O2 -mavx2 -mfma bench/ports_avx2.cpp -o /tmp/ports_avx2 && /tmp/ports_avx2 [ITERATIONS]
//
// With -mavxvnni as well (a CPU with AVX-VNNI: Intel since Alder Lake, Zen 5) it also times the
// VEX vpdpbusd that the int8 kernels' AVX-VNNI form issues (round 56).
//
// Each row runs 8 independent dependency chains of one operation (or of a pair, counted as one
// step), so the time per step is the reciprocal throughput, not the latency. ns per step; at a
// known clock, steps per cycle = 1 / (ns * GHz). vpaddd issues on every vector pipe, so the
// vpaddd row calibrates: its steps per cycle is the pipe count that takes it (4 on Zen 3).
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace {

template <typename Step>
double ns_per_step(Step step, long iterations) {
  __m256i v0 = _mm256_set1_epi8(1), v1 = _mm256_set1_epi8(2), v2 = _mm256_set1_epi8(3), v3 = _mm256_set1_epi8(4);
  __m256i v4 = _mm256_set1_epi8(5), v5 = _mm256_set1_epi8(6), v6 = _mm256_set1_epi8(7), v7 = _mm256_set1_epi8(8);
  const __m256i b = _mm256_set1_epi8(3);
  double best = 1e30;
  for (int repeat = 0; repeat < 3; ++repeat) {
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < iterations; ++i) {
      v0 = step(v0, b), v1 = step(v1, b), v2 = step(v2, b), v3 = step(v3, b);
      v4 = step(v4, b), v5 = step(v5, b), v6 = step(v6, b), v7 = step(v7, b);
      // Keeps the chains in registers and alive without adding work.
      __asm__ volatile("" : "+x"(v0), "+x"(v1), "+x"(v2), "+x"(v3), "+x"(v4), "+x"(v5), "+x"(v6), "+x"(v7));
    }
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    best = ns / (8.0 * iterations) < best ? ns / (8.0 * iterations) : best;
  }
  return best;
}

template <typename Step>
void row(const char* name, Step step, long iterations) {
  std::printf("| %s | %.3f |\n", name, ns_per_step(step, iterations));
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 50000000;
  std::printf("| operation (8 independent chains) | ns per step |\n| --- | --- |\n");
  row("vpaddd", [](__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }, iterations);
  row("vpmaddubsw", [](__m256i a, __m256i b) { return _mm256_maddubs_epi16(a, b); }, iterations);
  row("vpmaddwd", [](__m256i a, __m256i b) { return _mm256_madd_epi16(a, b); }, iterations);
  row("vpsignb", [](__m256i a, __m256i b) { return _mm256_sign_epi8(a, b); }, iterations);
  row("vpabsb", [](__m256i a, __m256i) { return _mm256_abs_epi8(a); }, iterations);
  row("vpshufb", [](__m256i a, __m256i b) { return _mm256_shuffle_epi8(b, a); }, iterations);
  row("vpsrlw", [](__m256i a, __m256i) { return _mm256_srli_epi16(a, 4); }, iterations);
  row("vphaddd", [](__m256i a, __m256i b) { return _mm256_hadd_epi32(a, b); }, iterations);
  row("vpmaddubsw + vpmaddwd", [](__m256i a, __m256i b) { return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), b); },
      iterations);
  row("vpsignb + vpmaddubsw", [](__m256i a, __m256i b) { return _mm256_maddubs_epi16(b, _mm256_sign_epi8(a, b)); },
      iterations);
  row("vpshufb + vpmaddubsw", [](__m256i a, __m256i b) { return _mm256_maddubs_epi16(_mm256_shuffle_epi8(b, a), b); },
      iterations);
  row("vpsignb + vpmaddubsw + vpmaddwd + vpaddd",
      [](__m256i a, __m256i b) { return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(b, _mm256_sign_epi8(a, b)), b), a); },
      iterations);
#ifdef __AVXVNNI__
  row("vpdpbusd (VEX)", [](__m256i a, __m256i b) { return _mm256_dpbusd_avx_epi32(a, b, b); }, iterations);
  row("vpdpbusd + vpshufb", [](__m256i a, __m256i b) { return _mm256_dpbusd_avx_epi32(a, _mm256_shuffle_epi8(b, a), b); },
      iterations);
#endif
  return 0;
}
