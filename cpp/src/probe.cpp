#include "turbokv/probe.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
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

// Scratch without zero-filling (a std::vector's took ~6% of the probe's time; perf, session 48):
// every element is written before it is read.
std::unique_ptr<float[]> uninitialized(int64_t count) {
  return std::unique_ptr<float[]>(new float[static_cast<size_t>(count)]);
}

// sum_t p[t], sum_t q[t] and sum_t p[t] * gap[t] in double, four chains each: one chain of
// dependent double adds per sum held the loop to ~4 cycles a score (perf, session 48).
struct RowSums {
  double p = 0.0, q = 0.0, weighted = 0.0;
};
RowSums row_sums(const float* p, const float* q, const float* gap, int64_t count) {
  double sp[4] = {}, sq[4] = {}, sw[4] = {};
  int64_t t = 0;
  for (; t + 4 <= count; t += 4) {
    for (int j = 0; j < 4; ++j) {
      sp[j] += p[t + j];
      sq[j] += q[t + j];
      sw[j] += static_cast<double>(p[t + j]) * gap[t + j];
    }
  }
  for (; t < count; ++t) {
    sp[0] += p[t];
    sq[0] += q[t];
    sw[0] += static_cast<double>(p[t]) * gap[t];
  }
  return {(sp[0] + sp[1]) + (sp[2] + sp[3]), (sq[0] + sq[1]) + (sq[2] + sq[3]),
          (sw[0] + sw[1]) + (sw[2] + sw[3])};
}

}  // namespace

std::vector<double> attention_kl(const float* queries, const float* exact_keys, const StoredKeys& stored_keys,
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
    auto keys_t = uninitialized(d * n), decoded = uninitialized(n * d);
    auto exact = uninitialized(m * n), stored = uninitialized(m * n), gap = uninitialized(n);
    const float* stored_rows = stored_keys(s, decoded.get());
    for (auto [keys, scores] : {std::pair{exact_keys + s * n * d, exact.get()}, std::pair{stored_rows, stored.get()}}) {
      transpose_keys(keys, n, d, keys_t.get());
      ks.gemm(q, d, keys_t.get(), n, scores, n, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(d), false);
    }
    // KL(p || q) with log p_t = s_t - z_p and log q_t = u_t - z_q is E_p[s - u] - z_p + z_q: two
    // exponentials per score (the SIMD exp_shifted, relative error < 4e-7; sums in double) where
    // three scalar double ones took 0.24-0.48 s of SmolLM2's 2K-token TTFT on 2 cores.
    double total = 0.0;
    for (int64_t r = 0; r < m; ++r) {
      const int64_t position = n - sh.rows + r % sh.rows;
      const int64_t hi = causal ? position + 1 : n;
      const int64_t lo = causal && window > 0 ? std::max<int64_t>(0, hi - window) : 0;
      float* p = exact.get() + r * n + lo;
      float* q_row = stored.get() + r * n + lo;
      const int64_t count = hi - lo;
      const float top_p = ks.scale_max(p, count, scale), top_q = ks.scale_max(q_row, count, scale);
      for (int64_t t = 0; t < count; ++t) gap[t] = p[t] - q_row[t];
      ks.exp_shifted(p, count, top_p);
      ks.exp_shifted(q_row, count, top_q);
      const RowSums sums = row_sums(p, q_row, gap.get(), count);
      const double zp = top_p + std::log(sums.p), zq = top_q + std::log(sums.q);
      total += sums.weighted / sums.p - zp + zq;
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

std::vector<double> attention_kl(const float* queries, const float* exact_keys, const float* stored_keys,
                                 const ProbeShape& sh, float scale, bool causal, int64_t window,
                                 SimdLevel level, ThreadPool* pool) {
  const int64_t per_stream = sh.length * sh.head_dim;
  const StoredKeys rows = [stored_keys, per_stream](int64_t s, float*) { return stored_keys + s * per_stream; };
  return attention_kl(queries, exact_keys, rows, sh, scale, causal, window, level, pool);
}

}  // namespace turbokv
