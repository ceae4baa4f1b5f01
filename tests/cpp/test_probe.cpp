// The protection probe's KL (cpp/src/probe.cpp) against a double-precision computation of the
// same definition, at every SIMD level, causal, windowed and not.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "test_util.hpp"
#include "turbokv/probe.hpp"

namespace turbokv {
namespace {

std::vector<double> naive_kl(const std::vector<float>& q, const std::vector<float>& exact,
                             const std::vector<float>& stored, const ProbeShape& sh, double scale,
                             bool causal, int64_t window) {
  const int64_t group = sh.q_heads / sh.kv_heads, n = sh.length, d = sh.head_dim;
  std::vector<double> out(static_cast<size_t>(sh.kv_heads), 0.0);
  for (int64_t b = 0; b < sh.batch; ++b) {
    for (int64_t h = 0; h < sh.q_heads; ++h) {
      const int64_t s = b * sh.kv_heads + h / group;
      for (int64_t r = 0; r < sh.rows; ++r) {
        const int64_t pos = n - sh.rows + r;
        const int64_t hi = causal ? pos + 1 : n, lo = causal && window ? std::max<int64_t>(0, hi - window) : 0;
        std::vector<double> logs[2];
        for (int side = 0; side < 2; ++side) {
          const std::vector<float>& keys = side ? stored : exact;
          double top = -INFINITY, sum = 0;
          for (int64_t t = lo; t < hi; ++t) {
            double dot = 0;
            for (int64_t i = 0; i < d; ++i) {
              dot += double(q[((b * sh.q_heads + h) * sh.rows + r) * d + i]) * keys[(s * n + t) * d + i];
            }
            logs[side].push_back(dot * scale);
            top = std::max(top, dot * scale);
          }
          for (double x : logs[side]) sum += std::exp(x - top);
          for (double& x : logs[side]) x -= top + std::log(sum);
        }
        for (size_t t = 0; t < logs[0].size(); ++t) {
          out[static_cast<size_t>(h / group)] += std::exp(logs[0][t]) * (logs[0][t] - logs[1][t]);
        }
      }
    }
  }
  for (double& v : out) v /= double(sh.batch * group * sh.rows);
  return out;
}

TEST(Probe, AttentionKlEqualsItsDefinition) {
  const ProbeShape sh{2, 6, 2, 20, 150, 32};
  const auto q = test_util::gaussian_rows(sh.batch * sh.q_heads * sh.rows, int(sh.head_dim), 71);
  const auto exact = test_util::gaussian_rows(sh.batch * sh.kv_heads * sh.length, int(sh.head_dim), 72);
  auto stored = exact;
  const auto noise = test_util::gaussian_rows(sh.batch * sh.kv_heads * sh.length, int(sh.head_dim), 73);
  for (size_t i = 0; i < stored.size(); ++i) stored[i] += 0.05f * noise[i];
  ThreadPool pool(2);
  for (SimdLevel level : supported_simd()) {
    for (auto [causal, window] : {std::pair{true, int64_t{0}}, std::pair{true, int64_t{7}}, std::pair{false, int64_t{0}}}) {
      const auto want = naive_kl(q, exact, stored, sh, 0.2, causal, window);
      const auto got = attention_kl(q.data(), exact.data(), stored.data(), sh, 0.2f, causal, window,
                                    level, &pool);
      ASSERT_EQ(got.size(), want.size());
      for (size_t h = 0; h < got.size(); ++h) {
        EXPECT_NEAR(got[h], want[h], 1e-3 * want[h]) << simd_name(level) << " window " << window;
        EXPECT_GT(want[h], 0.0);
      }
    }
  }
  ProbeShape too_many_rows = sh;
  too_many_rows.rows = sh.length + 1;
  EXPECT_THROW(attention_kl(q.data(), exact.data(), stored.data(), too_many_rows, 0.2f, true, 0,
                            SimdLevel::kScalar, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace turbokv
