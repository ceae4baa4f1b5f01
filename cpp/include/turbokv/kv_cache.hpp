// One layer of a compressed KV cache: keys and values of every (batch, kv head) stream, with
// fused attention over them. The Python class turbokv.KVCache is a thin wrapper of this.
// Thread safety: any number of concurrent readers (attention, fetch, export) or one writer
// (update, trim, clear, import), enforced by a reader-writer lock.
#pragma once
#include <cstdint>
#include <shared_mutex>
#include <vector>

#include "turbokv/attention.hpp"
#include "turbokv/token_store.hpp"

namespace turbokv {

struct CacheConfig {
  int head_dim = 128;
  int kv_heads = 1;
  SideConfig key, value;
  int64_t residual_window = 0;
  uint64_t key_seed = 0, value_seed = 1;
};

// A consistent copy of a layer taken under one lock: its shape and its decoded tokens or state.
struct CacheSnapshot {
  int64_t batch = 0, length = 0;
  std::vector<float> keys, values;  // fetch: (batch, kv_heads, length, head_dim) float32
};
struct CacheState {
  int64_t batch = 0;
  TokenStore::State keys, values;
};

class KVCacheLayer {
 public:
  explicit KVCacheLayer(const CacheConfig& config, SimdLevel level = default_simd());

  const CacheConfig& config() const { return config_; }
  // Each of these takes the lock: a value read by one call may be stale by the next, so an entry
  // point that needs the shape and the data together must get both from one call below.
  int64_t batch() const;
  int64_t length() const;
  int64_t allocated_bytes() const;
  int64_t used_bytes() const;

  // k, v: (batch, kv_heads, n, head_dim) float32, C-contiguous. All-or-nothing: input that cannot
  // be stored throws std::invalid_argument and leaves the cache unchanged.
  void update(const float* k, const float* v, int64_t batch, int64_t n);
  // Every cached token decoded, with the shape it was read at.
  CacheSnapshot fetch() const;
  // update, then fetch, under one lock (no other writer can slip in between).
  CacheSnapshot update_and_fetch(const float* k, const float* v, int64_t batch, int64_t n);
  // q, out: (batch, q_heads, q_len, head_dim) float32; options as in fused_attention (its
  // key_valid_tokens is checked against the length under the lock).
  void attention(const float* q, int64_t batch, int64_t q_heads, int64_t q_len,
                 const AttentionOptions& options, float* out, bool threaded = true) const;
  void trim(int64_t n);
  void clear();

  // Restores a saved state (batch, and the two sides' arrays); validates before replacing.
  void import_state(int64_t batch, const TokenStore::State& keys, const TokenStore::State& values);
  CacheState export_state() const;

 private:
  void update_locked(const float* k, const float* v, int64_t batch, int64_t n);
  CacheSnapshot fetch_locked() const;

  CacheConfig config_;
  TokenStore keys_, values_;
  int64_t batch_ = 0;
  mutable std::shared_mutex mutex_;
};

}  // namespace turbokv
