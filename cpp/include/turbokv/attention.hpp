// Causal decode/prefill attention computed on the compressed cache (DESIGN.md §2, "fusion").
//
// Per (batch, kv head) stream, for the q_heads / kv_heads query heads that share it (GQA, K/V
// never repeated): keys are scored from their codes with the query rotated once; a streaming
// (online) softmax runs over blocks of tokens; values are summed in the rotated domain straight
// from their codes and rotated back once per query at the end. Float16 tokens (bits = 0, or the
// residual window) are read directly. The newest q_len cached tokens are the queries' own
// positions: query l attends tokens [0, length - q_len + l].
#pragma once
#include <cstdint>

#include "turbokv/thread_pool.hpp"
#include "turbokv/token_store.hpp"

namespace turbokv {

struct AttentionShape {
  int64_t batch = 1;
  int64_t kv_heads = 1;
  int64_t q_heads = 1;
  int64_t q_len = 1;
};

// queries and out: (batch, q_heads, q_len, head_dim) float32, C-contiguous.
// key_valid: nullptr, or (batch, length) bytes, 0 = that cached token is hidden from every query of
// that batch row (left padding); combined with the causal rule. A query that sees no token gets 0.
// Work is spread over (batch, kv head) streams on pool (nullptr: the calling thread only).
void fused_attention(const TokenStore& keys, const TokenStore& values, const float* queries,
                     const AttentionShape& shape, float scale, float* out, ThreadPool* pool,
                     const uint8_t* key_valid = nullptr);

}  // namespace turbokv
