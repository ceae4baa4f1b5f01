#include "turbokv/qjl.hpp"

#include <cmath>

#include "kernels.hpp"
#include "turbokv/rng.hpp"

namespace turbokv {

QjlSketch::QjlSketch(int dim, uint64_t seed, SimdLevel level)
    : dim_(dim),
      estimator_scale_(static_cast<float>(std::sqrt(M_PI / 2.0) / dim)),
      kernels_(&kernels::kernel_set(level)) {
  const size_t count = static_cast<size_t>(dim) * dim;
  rows_.resize(count);
  columns_.resize(count);
  SplitMix64 rng = make_stream(seed, Stream::kQjlSketch);
  for (size_t k = 0; k < count; k += 2) {
    double g0, g1;
    rng.gaussian_pair(&g0, &g1);
    rows_[k] = static_cast<float>(g0);
    if (k + 1 < count) rows_[k + 1] = static_cast<float>(g1);
  }
  for (int r = 0; r < dim; ++r) {
    for (int c = 0; c < dim; ++c) {
      columns_[static_cast<size_t>(c) * dim + r] = rows_[static_cast<size_t>(r) * dim + c];
    }
  }
}

void QjlSketch::project(const float* x, float* out) const {
  kernels_->matvec_columns(columns_.data(), dim_, dim_, x, out);
}

void QjlSketch::project_transpose(const float* s, float* out) const {
  kernels_->matvec_columns(rows_.data(), dim_, dim_, s, out);
}

}  // namespace turbokv
