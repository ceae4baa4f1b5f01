#include "turbokv/codebook.hpp"

#include <array>
#include <cmath>
#include <stdexcept>
#include <string>

namespace turbokv {
namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

double normal_pdf(double x) { return kInvSqrt2Pi * std::exp(-0.5 * x * x); }
// Upper tail Q(x) = P(g > x), through erfc so that far tails keep their precision.
double normal_tail(double x) { return 0.5 * std::erfc(x * kInvSqrt2); }

// Inverse of the tail by bisection: only used to place the starting centroids.
double normal_tail_inverse(double p) {
  double lo = -40.0, hi = 40.0;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (normal_tail(mid) > p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

void check_bits(int bits) {
  if (bits < 0 || bits > kMaxBits) {
    throw std::invalid_argument("codebook bits must be in 0..8, got " + std::to_string(bits));
  }
}

}  // namespace

std::vector<double> lloyd_max_gaussian(int bits) {
  check_bits(bits);
  if (bits == 0) return {0.0};
  const int levels = 1 << bits;
  const int half = levels / 2;
  // Work on the positive half (the optimum is symmetric). Start from the high-resolution
  // optimum, whose point density is proportional to pdf^(1/3): the quantiles of N(0, 3).
  std::vector<double> c(half);
  for (int k = 0; k < half; ++k) {
    c[k] = std::sqrt(3.0) * normal_tail_inverse(0.5 - 0.5 * (k + 0.5) / half);
  }
  // Lloyd's fixed point c = centroid(c) converges linearly and slows to a crawl at 6+ bits,
  // so a few Lloyd sweeps are followed by Newton steps on F(c) = c - centroid(c), whose
  // Jacobian is tridiagonal (each cell depends on its two neighbours through the midpoints).
  std::vector<double> f(half), lower_diag(half), diag(half), upper_diag(half);
  for (int iter = 0; iter < 200; ++iter) {
    const bool newton = iter >= 20;
    double lower = 0.0;
    for (int k = 0; k < half; ++k) {
      const bool last = k + 1 == half;
      const double upper = last ? 0.0 : 0.5 * (c[k] + c[k + 1]);
      const double pdf_lo = normal_pdf(lower), pdf_hi = last ? 0.0 : normal_pdf(upper);
      const double mass = normal_tail(lower) - (last ? 0.0 : normal_tail(upper));
      const double centroid = (pdf_lo - pdf_hi) / mass;  // E[g | lower < g < upper]
      // d centroid / d lower and d centroid / d upper
      const double d_lo = (k == 0) ? 0.0 : pdf_lo * (centroid - lower) / mass;
      const double d_hi = last ? 0.0 : pdf_hi * (upper - centroid) / mass;
      f[k] = c[k] - centroid;
      lower_diag[k] = -0.5 * d_lo;
      diag[k] = 1.0 - 0.5 * d_lo - 0.5 * d_hi;
      upper_diag[k] = -0.5 * d_hi;
      lower = upper;
    }
    double moved = 0.0;
    if (!newton) {
      for (int k = 0; k < half; ++k) c[k] -= f[k];
      continue;
    }
    // Thomas algorithm for J * step = f.
    for (int k = 1; k < half; ++k) {
      const double w = lower_diag[k] / diag[k - 1];
      diag[k] -= w * upper_diag[k - 1];
      f[k] -= w * f[k - 1];
    }
    for (int k = half - 1; k >= 0; --k) {
      if (k + 1 < half) f[k] -= upper_diag[k] * f[k + 1];
      f[k] /= diag[k];
      c[k] -= f[k];
      moved = std::fmax(moved, std::fabs(f[k]));
    }
    if (moved < 1e-14) break;
  }
  std::vector<double> all(levels);
  for (int k = 0; k < half; ++k) {
    all[half + k] = c[k];
    all[half - 1 - k] = -c[k];
  }
  return all;
}

double gaussian_quantizer_mse(const std::vector<double>& centroids) {
  // Sum over cells [a, b] of E[(g - c)^2; a < g < b], using
  // int x^2 pdf = mass + a pdf(a) - b pdf(b) and int x pdf = pdf(a) - pdf(b).
  const size_t n = centroids.size();
  double total = 0.0;
  for (size_t k = 0; k < n; ++k) {
    const double a = (k == 0) ? -INFINITY : 0.5 * (centroids[k - 1] + centroids[k]);
    const double b = (k + 1 == n) ? INFINITY : 0.5 * (centroids[k] + centroids[k + 1]);
    const double mass = (std::isinf(a) ? 1.0 : normal_tail(a)) - (std::isinf(b) ? 0.0 : normal_tail(b));
    const double pa = std::isinf(a) ? 0.0 : normal_pdf(a);
    const double pb = std::isinf(b) ? 0.0 : normal_pdf(b);
    const double second = mass + (std::isinf(a) ? 0.0 : a * pa) - (std::isinf(b) ? 0.0 : b * pb);
    const double first = pa - pb;
    const double c = centroids[k];
    total += second - 2.0 * c * first + c * c * mass;
  }
  return total;
}

const Codebook& lloyd_max_codebook(int bits) {
  check_bits(bits);
  static const std::array<Codebook, kMaxBits + 1> books = [] {
    std::array<Codebook, kMaxBits + 1> out;
    for (int b = 0; b <= kMaxBits; ++b) {
      const std::vector<double> c = lloyd_max_gaussian(b);
      out[b].bits = b;
      out[b].mse = gaussian_quantizer_mse(c);
      for (double v : c) out[b].centroids.push_back(static_cast<float>(v));
      for (size_t k = 0; k + 1 < c.size(); ++k) {
        out[b].boundaries.push_back(static_cast<float>(0.5 * (c[k] + c[k + 1])));
      }
    }
    return out;
  }();
  return books[bits];
}

}  // namespace turbokv
