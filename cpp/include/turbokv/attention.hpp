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

// What the softmax sees besides the scores. Defaults: plain causal attention.
struct AttentionOptions {
  float scale = 1.0f;  // scores are q.k * scale; finite and > 0
  // > 0: scores become softcap * tanh(score / softcap) before masking (Gemma 2's attention logit
  // softcapping); 0: none.
  float softcap = 0.0f;
  // nullptr, or one logit per query head: an extra softmax column whose value vector is zero
  // (gpt-oss attention sinks). It takes weight from the tokens without adding to the output.
  const float* sinks = nullptr;
  // nullptr, or (batch, key_valid_tokens) bytes, 0 = that cached token is hidden from every query
  // of that batch row (left padding); combined with the causal rule. key_valid_tokens must equal
  // the cache length when the attention runs (checked under the cache's lock).
  const uint8_t* key_valid = nullptr;
  int64_t key_valid_tokens = 0;
  // Set by KVCacheLayer, not by callers: nullptr, or the (batch, kv_heads, head_dim) vectors
  // subtracted from every stored key of each stream. Scores get q . offset back where the softmax is not shift-invariant
  // (softcap, sinks); elsewhere it cancels exactly and is skipped.
  const float* key_offset = nullptr;
};

// queries and out: (batch, q_heads, q_len, head_dim) float32, C-contiguous. Queries must be
// finite (std::invalid_argument otherwise). A query that sees no token gets 0.
// Work is spread over (batch, kv head) streams on pool (nullptr: the calling thread only).
void fused_attention(const TokenStore& keys, const TokenStore& values, const float* queries,
                     const AttentionShape& shape, const AttentionOptions& options, float* out,
                     ThreadPool* pool);

}  // namespace turbokv
