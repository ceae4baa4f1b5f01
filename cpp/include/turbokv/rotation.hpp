// The random rotation that makes every coordinate of a unit vector close to N(0, 1/d) (paper, §3.1).
//
// Power-of-two head_dim (8..1024): R = H D / sqrt(d), D a diagonal of seeded random signs and H the
// Walsh-Hadamard matrix; O(d log d) time, d floats of state.
// Any other head_dim (8..1024, e.g. 80, 96, 112, 160, 192): R = Q, a dense Haar-random orthogonal
// matrix, the Q of a QR factorisation of a seeded Gaussian matrix (Eigen, signs fixed so that R
// has a positive diagonal). It costs O(d^2) time per vector and 2 d^2 floats of state (d = 96: 9,216
// multiply-adds and 72 KiB) but no extra stored bits: zero-padding to the next power of two would
// store 128/96 = 1.33x the codes, and a block-diagonal Hadamard would not mix coordinates across
// blocks, so a vector concentrated in one block would not look Gaussian.
#pragma once
#include <cstdint>
#include <vector>

#include "turbokv/simd.hpp"

namespace turbokv {

namespace kernels {
struct KernelSet;
}

constexpr int kMinHeadDim = 8;
constexpr int kMaxHeadDim = 1024;

inline bool is_power_of_two(int n) { return n > 0 && (n & (n - 1)) == 0; }

class Rotation {
 public:
  Rotation(int dim, uint64_t seed, SimdLevel level);

  int dim() const { return dim_; }
  bool is_hadamard() const { return is_power_of_two(dim_); }

  // y = R x. x and y must not overlap.
  void forward(const float* x, float* y) const;
  // x = R^T y. x and y must not overlap.
  void inverse(const float* y, float* x) const;

  // Hadamard: the diagonal of D / sqrt(d). Dense: empty.
  const std::vector<float>& scaled_signs() const { return scaled_signs_; }
  // Dense: R in row-major order. Hadamard: empty.
  const std::vector<float>& dense_rows() const { return rows_; }

 private:
  int dim_;
  const kernels::KernelSet* kernels_;
  std::vector<float> scaled_signs_;
  std::vector<float> rows_;     // R row-major: the columns of R^T, for the inverse
  std::vector<float> columns_;  // R column-major, for the forward product
};

}  // namespace turbokv
