#include "turbokv/probe.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels.hpp"

namespace turbokv {
namespace {

// keys (n x d, row-major) into out (d x n) in blocks of 16 tokens: each row of out takes a whole
// cache line per block while the block's keys stay in L1 (token by token, one strided store per
// coordinate, the transposes took ~40% of the probe's time; perf, session 47).
void transpose_keys(const float* keys, int64_t n, int64_t d, float* out) {
  constexpr int64_t kTokens = 16;
  for (int64_t t0 = 0; t0 < n; t0 += kTokens) {
    const int64_t t1 = std::min(n, t0 + kTokens);
    for (int64_t i = 0; i < d; ++i) {
      float* row = out + i * n;
      for (int64_t t = t0; t < t1; ++t) row[t] = keys[t * d + i];
    }
  }
}

}  // namespace

std::vector<double> attention_kl(const float* queries, const float* exact_keys, const float* stored_keys,
                                 const ProbeShape& sh, float scale, bool causal, int64_t window,
                                 SimdLevel level, ThreadPool* pool) {
  if (sh.kv_heads <= 0 || sh.q_heads % sh.kv_heads != 0 || sh.rows <= 0 || sh.length <= 0 ||
      (causal && sh.rows > sh.length) || window < 0) {
    throw std::invalid_argument("attention_kl: inconsistent shape");
  }
  const kernels::KernelSet& ks = kernels::kernel_set(level);
  const int64_t group = sh.q_heads / sh.kv_heads, m = group * sh.rows, n = sh.length, d = sh.head_dim;
  std::vector<double> per_stream(static_cast<size_t>(sh.batch * sh.kv_heads), 0.0);
  auto work = [&](int64_t s) {
    const int64_t b = s / sh.kv_heads, h = s % sh.kv_heads;
    // The group's query heads are contiguous (as repeat_kv): m rows of d.
    const float* q = queries + (b * sh.q_heads + h * group) * sh.rows * d;
    std::vector<float> keys_t(static_cast<size_t>(d * n));
    std::vector<float> exact(static_cast<size_t>(m * n)), stored(exact.size());
    for (auto [keys, scores] : {std::pair{exact_keys, &exact}, std::pair{stored_keys, &stored}}) {
      transpose_keys(keys + s * n * d, n, d, keys_t.data());
      ks.gemm(q, d, keys_t.data(), n, scores->data(), n, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(d), false);
    }
    // KL(p || q) with log p_t = s_t - z_p and log q_t = u_t - z_q is E_p[s - u] - z_p + z_q: two
    // exponentials per score (the SIMD exp_shifted, relative error < 4e-7; sums in double) where
    // three scalar double ones took 0.24-0.48 s of SmolLM2's 2K-token TTFT on 2 cores.
    std::vector<float> gap(static_cast<size_t>(n));
    double total = 0.0;
    for (int64_t r = 0; r < m; ++r) {
      const int64_t position = n - sh.rows + r % sh.rows;
      const int64_t hi = causal ? position + 1 : n;
      const int64_t lo = causal && window > 0 ? std::max<int64_t>(0, hi - window) : 0;
      float* p = exact.data() + r * n + lo;
      float* q_row = stored.data() + r * n + lo;
      const int64_t count = hi - lo;
      const float top_p = ks.scale_max(p, count, scale), top_q = ks.scale_max(q_row, count, scale);
      for (int64_t t = 0; t < count; ++t) gap[static_cast<size_t>(t)] = p[t] - q_row[t];
      ks.exp_shifted(p, count, top_p);
      ks.exp_shifted(q_row, count, top_q);
      double sum_p = 0.0, sum_q = 0.0, weighted = 0.0;
      for (int64_t t = 0; t < count; ++t) {
        sum_p += p[t];
        sum_q += q_row[t];
        weighted += static_cast<double>(p[t]) * gap[static_cast<size_t>(t)];
      }
      const double zp = top_p + std::log(sum_p), zq = top_q + std::log(sum_q);
      total += weighted / sum_p - zp + zq;
    }
    per_stream[static_cast<size_t>(s)] = total;
  };
  const int64_t streams = sh.batch * sh.kv_heads;
  if (pool) {
    pool->parallel_for(streams, work);
  } else {
    for (int64_t s = 0; s < streams; ++s) work(s);
  }
  std::vector<double> out(static_cast<size_t>(sh.kv_heads), 0.0);
  for (int64_t s = 0; s < streams; ++s) out[static_cast<size_t>(s % sh.kv_heads)] += per_stream[static_cast<size_t>(s)];
  for (double& v : out) v /= static_cast<double>(sh.batch * m);
  return out;
}

}  // namespace turbokv
