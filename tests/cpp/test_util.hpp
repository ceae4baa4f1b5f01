// Shared helpers for the GoogleTest suite.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "turbokv/codec.hpp"

namespace turbokv::test_util {

// n x d standard normal matrix from a fixed seed.
inline std::vector<float> gaussian_rows(int64_t n, int d, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n) * d);
  for (float& v : x) v = dist(gen);
  return x;
}

inline void normalise_rows(std::vector<float>& x, int d) {
  for (size_t r = 0; r < x.size() / d; ++r) {
    double s = 0;
    for (int i = 0; i < d; ++i) s += double(x[r * d + i]) * x[r * d + i];
    const float inv = static_cast<float>(1.0 / std::sqrt(s));
    for (int i = 0; i < d; ++i) x[r * d + i] *= inv;
  }
}

// Owns the arrays of n encoded vectors.
struct EncodedStore {
  std::vector<uint8_t> codes, qjl;
  std::vector<uint8_t> norms, residual_norms;  // raw bytes: float32 or float16
  EncodedStore(const Codec& c, int64_t n)
      : codes(n * c.code_bytes()),
        qjl(n * c.qjl_bytes()),
        norms(n * c.norm_bytes()),
        residual_norms(n * c.norm_bytes()) {}
  EncodedBuffers out() { return {codes.data(), norms.data(), qjl.data(), residual_norms.data()}; }
  ConstEncodedBuffers in() const {
    return {codes.data(), norms.data(), qjl.data(), residual_norms.data()};
  }
};

}  // namespace turbokv::test_util
