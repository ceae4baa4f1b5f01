// Lloyd-Max scalar quantizers for the standard normal distribution (paper, section 3.1).
#pragma once
#include <vector>

namespace turbokv {

constexpr int kMaxBits = 8;

struct Codebook {
  int bits = 0;
  std::vector<float> centroids;   // 2^bits levels, ascending, symmetric about 0
  std::vector<float> boundaries;  // 2^bits - 1 midpoints between neighbouring centroids
  double mse = 1.0;               // E[(g - Q(g))^2] for g ~ N(0, 1)
};

// Centroids in double precision, computed by Lloyd iterations on N(0, 1) until they stop moving.
// bits = 0 gives the single level 0 (used by prod mode at 1 bit, where the MSE stage is empty).
std::vector<double> lloyd_max_gaussian(int bits);

// Expected squared error of the quantizer with these centroids on N(0, 1).
double gaussian_quantizer_mse(const std::vector<double>& centroids);

// The float32 codebook for 0..8 bits, computed once and then shared (thread-safe).
const Codebook& lloyd_max_codebook(int bits);

}  // namespace turbokv
