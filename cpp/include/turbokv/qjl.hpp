// The 1-bit Quantized Johnson-Lindenstrauss sketch of TurboQuant_prod (paper, §3.2, Algorithm 2).
//
// S is an m x d matrix of i.i.d. N(0, 1) entries (m = d here), drawn from a seeded stream. For a
// residual r the sketch stores sign(S r) as m bits; for a query q,
//   <q, r> ~= sqrt(pi/2) / m * ||r|| * <S q, sign(S r)>,
// an unbiased estimate (paper, Lemma 4). The codec applies S in the rotated domain, which is
// equivalent: S R is again a matrix of i.i.d. N(0, 1) entries when R is orthogonal.
#pragma once
#include <cstdint>
#include <vector>

#include "turbokv/simd.hpp"

namespace turbokv {

namespace kernels {
struct KernelSet;
}

class QjlSketch {
 public:
  QjlSketch(int dim, uint64_t seed, SimdLevel level);

  int dim() const { return dim_; }
  int rows() const { return dim_; }
  // sqrt(pi/2) / m, the factor of the estimator above.
  float estimator_scale() const { return estimator_scale_; }

  // out = S x (m values).
  void project(const float* x, float* out) const;
  // out = S^T s (d values); s holds m values, typically +-1.
  void project_transpose(const float* s, float* out) const;
  // S in row-major order.
  const std::vector<float>& matrix() const { return rows_; }

 private:
  int dim_;
  float estimator_scale_;
  const kernels::KernelSet* kernels_;
  std::vector<float> rows_;     // S row-major = the columns of S^T
  std::vector<float> columns_;  // S column-major
};

}  // namespace turbokv
