#include <gtest/gtest.h>

#include <cmath>

#include "turbokv/codebook.hpp"

using turbokv::lloyd_max_codebook;

// Positive centroids of the Lloyd-Max quantiser for N(0,1) and its MSE (Max 1960; DESIGN.md §1).
TEST(Codebook, MatchesPublishedTableFor1To4Bits) {
  const std::vector<std::vector<double>> published = {
      {0.7979},
      {0.4528, 1.5104},
      {0.2451, 0.7560, 1.3439, 2.1519},
      {0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326}};
  const double published_mse[] = {0.3634, 0.1175, 0.03455, 0.009501};
  for (int bits = 1; bits <= 4; ++bits) {
    const auto& book = lloyd_max_codebook(bits);
    const auto& expect = published[bits - 1];
    const int half = 1 << (bits - 1);
    ASSERT_EQ(book.centroids.size(), size_t(2 * half));
    for (int k = 0; k < half; ++k) {
      EXPECT_NEAR(book.centroids[half + k], expect[k], 1e-4) << "bits " << bits << " level " << k;
      EXPECT_EQ(book.centroids[half - 1 - k], -book.centroids[half + k]);
    }
    EXPECT_NEAR(book.mse, published_mse[bits - 1], 2e-4 * published_mse[bits - 1] + 1e-5);
  }
}

// For 5..8 bits there is no table to copy: check the two Lloyd-Max optimality conditions with an
// independent numerical integration (Simpson's rule on a fine grid), not the closed forms the
// library uses: every centroid is the conditional mean of its cell, every boundary the midpoint.
TEST(Codebook, SatisfiesLloydMaxConditionsFor5To8Bits) {
  auto pdf = [](double x) { return std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI); };
  auto integrate = [&](double a, double b, auto f) {
    const int steps = 2000;
    const double h = (b - a) / steps;
    double s = f(a) * pdf(a) + f(b) * pdf(b);
    for (int i = 1; i < steps; ++i) s += (i % 2 ? 4 : 2) * f(a + i * h) * pdf(a + i * h);
    return s * h / 3;
  };
  for (int bits = 5; bits <= 8; ++bits) {
    const auto c = turbokv::lloyd_max_gaussian(bits);
    const auto& book = lloyd_max_codebook(bits);
    ASSERT_EQ(c.size(), size_t(1) << bits);
    double mse = 0;
    for (size_t k = 0; k < c.size(); ++k) {
      const double a = k == 0 ? -12.0 : 0.5 * (c[k - 1] + c[k]);
      const double b = k + 1 == c.size() ? 12.0 : 0.5 * (c[k] + c[k + 1]);
      const double mass = integrate(a, b, [](double) { return 1.0; });
      const double mean = integrate(a, b, [](double x) { return x; }) / mass;
      EXPECT_NEAR(c[k], mean, 1e-7) << "bits " << bits << " level " << k;
      mse += integrate(a, b, [&](double x) { return (x - c[k]) * (x - c[k]); });
      if (k + 1 < c.size()) {
        EXPECT_FLOAT_EQ(book.boundaries[k], static_cast<float>(0.5 * (c[k] + c[k + 1])));
      }
    }
    EXPECT_NEAR(book.mse, mse, 1e-6 * mse);
    // High-resolution theory: MSE -> (sqrt(3) pi / 2) 4^-b from above.
    EXPECT_GT(book.mse, 2.5 * std::pow(4.0, -bits));
    EXPECT_LT(book.mse, 2.73 * std::pow(4.0, -bits));
  }
}

TEST(Codebook, ZeroBitsIsTheSingleLevelZero) {
  const auto& book = lloyd_max_codebook(0);
  ASSERT_EQ(book.centroids.size(), 1u);
  EXPECT_EQ(book.centroids[0], 0.0f);
  EXPECT_TRUE(book.boundaries.empty());
  EXPECT_DOUBLE_EQ(book.mse, 1.0);
}

TEST(Codebook, RejectsOutOfRangeBits) {
  EXPECT_THROW(lloyd_max_codebook(9), std::invalid_argument);
  EXPECT_THROW(lloyd_max_codebook(-1), std::invalid_argument);
}
