// One layer of a compressed KV cache: keys and values of every (batch, kv head) stream, with
// fused attention over them. The Python class turbokv.KVCache is a thin wrapper of this.
// Thread safety: any number of concurrent readers (attention, fetch, export) or one writer
// (update, trim, clear, import), enforced by a reader-writer lock.
#pragma once
#include <cstdint>
#include <shared_mutex>

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

class KVCacheLayer {
 public:
  explicit KVCacheLayer(const CacheConfig& config, SimdLevel level = default_simd());

  const CacheConfig& config() const { return config_; }
  int64_t batch() const { return batch_; }
  int64_t length() const { return keys_.length(); }
  const TokenStore& keys() const { return keys_; }
  const TokenStore& values() const { return values_; }

  // k, v: (batch, kv_heads, n, head_dim) float32, C-contiguous. All-or-nothing: input that cannot
  // be stored throws std::invalid_argument and leaves the cache unchanged.
  void update(const float* k, const float* v, int64_t batch, int64_t n);
  // k_out, v_out: (batch, kv_heads, length, head_dim) float32.
  void fetch(float* k_out, float* v_out) const;
  // q, out: (batch, q_heads, q_len, head_dim) float32; key_valid as in fused_attention.
  void attention(const float* q, int64_t batch, int64_t q_heads, int64_t q_len, float scale,
                 float* out, bool threaded = true, const uint8_t* key_valid = nullptr) const;
  void trim(int64_t n);
  void clear();
  int64_t allocated_bytes() const { return keys_.allocated_bytes() + values_.allocated_bytes(); }
  int64_t used_bytes() const { return keys_.used_bytes() + values_.used_bytes(); }

  // Restores a saved state (batch, and the two sides' arrays); validates before replacing.
  void import_state(int64_t batch, const TokenStore::State& keys, const TokenStore::State& values);
  void export_state(TokenStore::State* keys, TokenStore::State* values) const;

 private:
  CacheConfig config_;
  TokenStore keys_, values_;
  int64_t batch_ = 0;
  mutable std::shared_mutex mutex_;
};

}  // namespace turbokv
