#include "turbokv/rotation.hpp"

#include <Eigen/Dense>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels.hpp"
#include "turbokv/rng.hpp"

namespace turbokv {

Rotation::Rotation(int dim, uint64_t seed, SimdLevel level)
    : dim_(dim), kernels_(&kernels::kernel_set(level)) {
  if (dim < kMinHeadDim || dim > kMaxHeadDim) {
    throw std::invalid_argument("head_dim must be in 8..1024, got " + std::to_string(dim));
  }
  if (is_hadamard()) {
    SplitMix64 rng = make_stream(seed, Stream::kHadamardSigns);
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
    scaled_signs_.resize(dim);
    for (int i = 0; i < dim; ++i) scaled_signs_[i] = (rng.next() >> 63) ? -scale : scale;
    return;
  }
  // Gaussian matrix filled row by row from the stream, two normals per draw.
  SplitMix64 rng = make_stream(seed, Stream::kDenseRotation);
  Eigen::MatrixXd gaussian(dim, dim);
  for (int k = 0; k < dim * dim; k += 2) {
    double g0, g1;
    rng.gaussian_pair(&g0, &g1);
    gaussian(k / dim, k % dim) = g0;
    if (k + 1 < dim * dim) gaussian((k + 1) / dim, (k + 1) % dim) = g1;
  }
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(gaussian);
  Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(dim, dim);
  const Eigen::MatrixXd& r = qr.matrixQR();
  // Q R is unique once diag(R) > 0; flipping the matching columns of Q makes Q Haar distributed.
  for (int j = 0; j < dim; ++j) {
    if (r(j, j) < 0) q.col(j) = -q.col(j);
  }
  rows_.resize(static_cast<size_t>(dim) * dim);
  columns_.resize(static_cast<size_t>(dim) * dim);
  for (int i = 0; i < dim; ++i) {
    for (int j = 0; j < dim; ++j) {
      rows_[static_cast<size_t>(i) * dim + j] = static_cast<float>(q(i, j));
      columns_[static_cast<size_t>(j) * dim + i] = static_cast<float>(q(i, j));
    }
  }
}

void Rotation::forward(const float* x, float* y) const {
  if (is_hadamard()) {
    kernels_->fwht(x, scaled_signs_.data(), nullptr, y, dim_);
  } else {
    kernels_->matvec_columns(columns_.data(), dim_, dim_, x, y);
  }
}

void Rotation::inverse(const float* y, float* x) const {
  if (is_hadamard()) {
    // R^T = D H / sqrt(d) since H is symmetric.
    kernels_->fwht(y, nullptr, scaled_signs_.data(), x, dim_);
  } else {
    kernels_->matvec_columns(rows_.data(), dim_, dim_, y, x);
  }
}

}  // namespace turbokv
