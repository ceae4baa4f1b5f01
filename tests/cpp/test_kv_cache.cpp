#include <gtest/gtest.h>

#include <cmath>

#include "test_util.hpp"
#include "turbokv/kv_cache.hpp"

using namespace turbokv;

namespace {

// Causal GQA softmax attention in double over decoded K/V: the oracle for fused attention.
std::vector<double> naive_attention(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, int64_t batch, int64_t kv_heads,
                                    int64_t q_heads, int64_t q_len, int64_t length, int64_t d,
                                    double scale) {
  std::vector<double> out(q.size());
  const int64_t group = q_heads / kv_heads;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < q_heads; ++h) {
      const int64_t s = b * kv_heads + h / group;
      for (int64_t l = 0; l < q_len; ++l) {
        const float* qv = q.data() + ((b * q_heads + h) * q_len + l) * d;
        const int64_t visible = length - q_len + l + 1;
        std::vector<double> w(visible);
        double max = -INFINITY, sum = 0;
        for (int64_t t = 0; t < visible; ++t) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += double(qv[i]) * k[(s * length + t) * d + i];
          w[t] = dot * scale;
          max = std::max(max, w[t]);
        }
        for (auto& x : w) sum += (x = std::exp(x - max));
        double* o = out.data() + ((b * q_heads + h) * q_len + l) * d;
        for (int64_t t = 0; t < visible; ++t) {
          for (int64_t i = 0; i < d; ++i) o[i] += w[t] / sum * v[(s * length + t) * d + i];
        }
      }
    }
  }
  return out;
}

CacheConfig config(int d, int heads, int kbits, int vbits, int64_t window, Mode mode = Mode::kMse) {
  CacheConfig c;
  c.head_dim = d;
  c.kv_heads = heads;
  c.key.bits = kbits;
  c.value.bits = vbits;
  c.key.mode = c.value.mode = mode;
  c.residual_window = window;
  return c;
}

}  // namespace

TEST(KVCache, FusedAttentionEqualsDecodedAttention) {
  const int64_t batch = 2, heads = 2, q_heads = 6, d = 64, q_len = 3;
  for (auto cfg : {config(64, 2, 4, 4, 0), config(64, 2, 3, 2, 20), config(64, 2, 0, 4, 0),
                   config(64, 2, 4, 0, 0), config(64, 2, 3, 3, 0, Mode::kProd)}) {
    for (int l = 0; l <= static_cast<int>(detect_simd()); ++l) {
      const auto level = static_cast<SimdLevel>(l);
      KVCacheLayer cache(cfg, level);
      for (int64_t n : {int64_t{270}, q_len}) {  // crosses a 256-token chunk
        auto k = test_util::gaussian_rows(batch * heads * n, int(d), 1);
        auto v = test_util::gaussian_rows(batch * heads * n, int(d), 2);
        cache.update(k.data(), v.data(), batch, n);
      }
      const int64_t length = cache.length();
      std::vector<float> kd(batch * heads * length * d), vd(kd.size());
      cache.fetch(kd.data(), vd.data());
      auto q = test_util::gaussian_rows(batch * q_heads * q_len, int(d), 3);
      std::vector<float> out(q.size());
      cache.attention(q.data(), batch, q_heads, q_len, 0.125f, out.data(), true);
      const auto expect = naive_attention(q, kd, vd, batch, heads, q_heads, q_len, length, d, 0.125);
      double max_err = 0, max_ref = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        max_err = std::max(max_err, std::fabs(out[i] - expect[i]));
        max_ref = std::max(max_ref, std::fabs(expect[i]));
      }
      EXPECT_LT(max_err / max_ref, 1e-4) << simd_name(level);
    }
  }
}

TEST(KVCache, TrimAndStateRoundTrip) {
  KVCacheLayer a(config(32, 2, 4, 3, 8)), b(config(32, 2, 4, 3, 8));
  auto k = test_util::gaussian_rows(2 * 300, 32, 4);
  a.update(k.data(), k.data(), 1, 300);
  a.trim(40);
  EXPECT_EQ(a.length(), 260);
  TokenStore::State ks, vs;
  a.export_state(&ks, &vs);
  b.import_state(1, ks, vs);
  EXPECT_EQ(b.length(), 260);
  std::vector<float> ka(2 * 260 * 32), va(ka.size()), kb(ka.size()), vb(ka.size());
  a.fetch(ka.data(), va.data());
  b.fetch(kb.data(), vb.data());
  EXPECT_EQ(ka, kb);
  EXPECT_EQ(va, vb);
  ks.codes.pop_back();  // a corrupted state is refused and changes nothing
  EXPECT_THROW(b.import_state(1, ks, vs), std::invalid_argument);
  EXPECT_EQ(b.length(), 260);
  EXPECT_THROW(a.trim(261), std::invalid_argument);
}

TEST(KVCache, RejectedUpdateChangesNothing) {
  KVCacheLayer cache(config(16, 1, 4, 0, 0));
  auto k = test_util::gaussian_rows(5, 16, 5);
  cache.update(k.data(), k.data(), 1, 5);
  auto bad = k;
  bad[3] = NAN;
  EXPECT_THROW(cache.update(k.data(), bad.data(), 1, 5), std::invalid_argument);
  bad[3] = 1e6f;  // beyond float16 for the bits = 0 value side
  EXPECT_THROW(cache.update(k.data(), bad.data(), 1, 5), std::invalid_argument);
  EXPECT_THROW(cache.update(k.data(), k.data(), 2, 1), std::invalid_argument);
  EXPECT_EQ(cache.length(), 5);
}
