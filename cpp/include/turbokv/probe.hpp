// Prefill key protection's measurement (python/turbokv/protection.py holds the numpy reference):
// the mean KL between the softmax over the exact keys and the softmax over the stored keys, per KV
// head, for the probed queries. In C++ on turbokv's own kernels and pool because numpy's BLAS
// threads keep spinning after a product and take the cores from the model's next matrix products
// (measured: a 272-token SmolLM2 prompt took 2.9x its dense time with the numpy probe, 1.1x without).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "turbokv/simd.hpp"
#include "turbokv/thread_pool.hpp"

namespace turbokv {

struct ProbeShape {
  int64_t batch = 1;
  int64_t q_heads = 1;
  int64_t kv_heads = 1;
  int64_t rows = 1;    // probed query positions
  int64_t length = 1;  // keys per stream
  int64_t head_dim = 1;
};

// Stream s's stored keys (length x head_dim float32, s = batch row x kv_heads + kv head): a
// pointer to them, or to `scratch` (room for length x head_dim floats) after decoding them there.
// Called once per stream, from the pool's threads at once.
using StoredKeys = std::function<const float*(int64_t stream, float* scratch)>;

// queries (batch, q_heads, rows, head_dim); exact_keys (batch, kv_heads, length, head_dim);
// float32, C-contiguous. Causal: query row i sits at position length - rows + i and sees keys
// [max(0, position - window + 1) (window > 0), position]; otherwise every key. Scores are float32
// (as the attention's), the KL sums double. Returns (kv_heads) KL in nats, the mean over batch,
// query heads and rows.
std::vector<double> attention_kl(const float* queries, const float* exact_keys, const StoredKeys& stored_keys,
                                 const ProbeShape& shape, float scale, bool causal, int64_t window,
                                 SimdLevel level, ThreadPool* pool);
// The same with stored_keys an array shaped as exact_keys.
std::vector<double> attention_kl(const float* queries, const float* exact_keys, const float* stored_keys,
                                 const ProbeShape& shape, float scale, bool causal, int64_t window,
                                 SimdLevel level, ThreadPool* pool);

}  // namespace turbokv
