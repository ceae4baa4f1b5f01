#include <gtest/gtest.h>

#include "test_util.hpp"
#include "turbokv/rotation.hpp"

using namespace turbokv;

namespace {
const int kDims[] = {8, 16, 32, 64, 80, 96, 112, 128, 160, 192, 256, 512, 1024};
}

TEST(Rotation, IsOrthogonalForEveryHeadDim) {
  for (int d : kDims) {
    Rotation rot(d, 42, SimdLevel::kScalar);
    auto x = test_util::gaussian_rows(4, d, 1);
    std::vector<float> y(d), back(d);
    for (int r = 0; r < 4; ++r) {
      rot.forward(x.data() + r * d, y.data());
      double nx = 0, ny = 0, err = 0;
      for (int i = 0; i < d; ++i) nx += x[r * d + i] * x[r * d + i], ny += y[i] * y[i];
      EXPECT_NEAR(ny / nx, 1.0, 1e-5) << "d " << d;
      rot.inverse(y.data(), back.data());
      for (int i = 0; i < d; ++i) err = std::fmax(err, std::fabs(back[i] - x[r * d + i]));
      EXPECT_LT(err, 2e-5) << "d " << d;
    }
  }
}

TEST(Rotation, HadamardEqualsExplicitMatrix) {
  const int d = 16;
  Rotation rot(d, 3, SimdLevel::kScalar);
  ASSERT_TRUE(rot.is_hadamard());
  const auto& s = rot.scaled_signs();
  // Column j of R = H D / sqrt(d) is R e_j = (s_j) * H[:, j]; H[i][j] = (-1)^popcount(i & j).
  for (int j = 0; j < d; ++j) {
    std::vector<float> e(d, 0.0f), y(d);
    e[j] = 1.0f;
    rot.forward(e.data(), y.data());
    for (int i = 0; i < d; ++i) {
      const float h = (__builtin_popcount(i & j) % 2) ? -1.0f : 1.0f;
      EXPECT_FLOAT_EQ(y[i], h * s[j]);
    }
  }
}

TEST(Rotation, SeedDeterminesTheRotation) {
  for (int d : {128, 96}) {
    Rotation a(d, 5, SimdLevel::kScalar), b(d, 5, SimdLevel::kScalar), c(d, 6, SimdLevel::kScalar);
    auto x = test_util::gaussian_rows(1, d, 9);
    std::vector<float> ya(d), yb(d), yc(d);
    a.forward(x.data(), ya.data());
    b.forward(x.data(), yb.data());
    c.forward(x.data(), yc.data());
    EXPECT_EQ(ya, yb);
    EXPECT_NE(ya, yc);
  }
}

TEST(Rotation, MakesAOneHotVectorLookGaussian) {
  // The point of the rotation: even a vector with all its energy in one coordinate comes out with
  // coordinates of variance 1/d.
  for (int d : {128, 96}) {
    Rotation rot(d, 0, SimdLevel::kScalar);
    std::vector<float> e(d, 0.0f), y(d);
    e[3] = 1.0f;
    rot.forward(e.data(), y.data());
    double max_abs = 0;
    for (float v : y) max_abs = std::fmax(max_abs, std::fabs(v));
    EXPECT_LT(max_abs, 5.0 / std::sqrt(d)) << d;
  }
}

TEST(Rotation, RejectsOutOfRangeHeadDim) {
  EXPECT_THROW(Rotation(4, 0, SimdLevel::kScalar), std::invalid_argument);
  EXPECT_THROW(Rotation(2048, 0, SimdLevel::kScalar), std::invalid_argument);
}
