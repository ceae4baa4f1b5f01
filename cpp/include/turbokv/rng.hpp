// Portable seeded randomness shared bit-for-bit with python/turbokv/reference.py.
#pragma once
#include <cmath>
#include <cstdint>

namespace turbokv {

// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit counter passed through a mixer.
// Chosen because it is three lines in any language, so numpy reproduces it exactly.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  // Uniform double in [0, 1) from the top 53 bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  // Standard normal pair by Box-Muller; u1 is taken in (0, 1] so log(u1) is finite.
  void gaussian_pair(double* g0, double* g1) {
    const double u1 = static_cast<double>((next() >> 11) + 1) * 0x1.0p-53;
    const double u2 = static_cast<double>(next() >> 11) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = 6.283185307179586 * u2;
    *g0 = radius * std::cos(angle);
    *g1 = radius * std::sin(angle);
  }

 private:
  uint64_t state_;
};

// Each random object draws from its own stream so that changing one never shifts another.
enum class Stream : uint64_t {
  kHadamardSigns = 0x5349474E53ULL,  // "SIGNS"
  kDenseRotation = 0x44454E5345ULL,  // "DENSE"
  kQjlSketch = 0x514A4CULL,          // "QJL"
};

inline SplitMix64 make_stream(uint64_t seed, Stream stream) {
  return SplitMix64(seed ^ (static_cast<uint64_t>(stream) * 0x9E3779B97F4A7C15ULL));
}

}  // namespace turbokv
