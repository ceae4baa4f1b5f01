// Does one core's arithmetic slow down when every core runs? (kernel_choices_avx2.md round 45.)
// Each thread runs a loop with no memory traffic: 8 independent vpdpbusd chains (the int8 kernels'
// instruction, at AVX-512 width), then a dependent scalar chain; 1, 2, 4, ... THREADS threads start
// together and each reports its time. A per-thread time that grows with the thread count would be a
// frequency drop or shared cores (SMT siblings, an oversubscribed host), which no kernel can fix;
// a flat one leaves memory and scheduling as what slows a many-core decode call per thread.
//
//   g++ -O2 -pthread bench/compute_scaling.cpp -o /tmp/compute_scaling   (needs AVX-512 VNNI to run)
//   /tmp/compute_scaling [THREADS] [ITERATIONS]        defaults: all cores, 200000000
#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

__attribute__((target("avx512f,avx512vnni"), noinline)) long long vnni_chains(long iterations) {
  __m512i acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
  for (long k = 0; k < iterations; ++k) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    // Keeps the compiler from folding the loop: the chains stay in registers, one per accumulator.
    __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]), "+v"(acc[4]), "+v"(acc[5]),
                     "+v"(acc[6]), "+v"(acc[7]));
  }
  __m512i sum = acc[0];
  for (int i = 1; i < 8; ++i) sum = _mm512_add_epi32(sum, acc[i]);
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, sum);
  long long total = 0;
  for (int32_t lane : lanes) total += lane;
  return total;
}

__attribute__((noinline)) long long scalar_chain(long iterations) {
  long long a = 1, b = 2, c = 3, d = 4;
  for (long k = 0; k < iterations; ++k) {
    a += b ^ k;
    b += c;
    c += d ^ a;
    d += a;
    __asm__ volatile("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d));
  }
  return a + b + c + d;
}

}  // namespace

int main(int argc, char** argv) {
  const int max_threads = argc > 1 ? std::atoi(argv[1]) : static_cast<int>(std::thread::hardware_concurrency());
  const long iterations = argc > 2 ? std::atol(argv[2]) : 200000000L;
  if (max_threads < 1 || iterations < 1) {
    std::fprintf(stderr, "usage: compute_scaling [THREADS >= 1] [ITERATIONS >= 1]\n");
    return 2;
  }
  if (!__builtin_cpu_supports("avx512vnni")) {
    std::fprintf(stderr, "compute_scaling: this CPU has no AVX-512 VNNI\n");
    return 2;
  }
  for (int kind = 0; kind < 2; ++kind) {
    for (int threads = 1;; threads = threads * 2 > max_threads ? max_threads : threads * 2) {
      std::vector<double> seconds(static_cast<size_t>(threads));
      std::atomic<bool> go{false};
      std::vector<std::thread> pool;
      for (int i = 0; i < threads; ++i) {
        pool.emplace_back([&, i] {
          while (!go.load()) {
          }
          const auto start = std::chrono::steady_clock::now();
          volatile long long sink = kind == 0 ? vnni_chains(iterations) : scalar_chain(iterations);
          (void)sink;
          seconds[static_cast<size_t>(i)] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        });
      }
      go = true;
      for (auto& t : pool) t.join();
      double mean = 0, slowest = 0;
      for (double s : seconds) {
        mean += s / threads;
        if (s > slowest) slowest = s;
      }
      std::printf("%s threads %3d: per-thread mean %.3f ms, slowest %.3f ms\n", kind == 0 ? "vnni  " : "scalar", threads,
                  1e3 * mean, 1e3 * slowest);
      if (threads == max_threads) break;
    }
  }
  return 0;
}
