#include "turbokv/kv_cache.hpp"

#include <stdexcept>
#include <string>

namespace turbokv {

KVCacheLayer::KVCacheLayer(const CacheConfig& config, SimdLevel level)
    : config_(config),
      keys_(config.key, config.head_dim, config.key_seed, config.residual_window, level),
      values_(config.value, config.head_dim, config.value_seed, config.residual_window, level) {
  if (config.kv_heads <= 0) throw std::invalid_argument("num_kv_heads must be >= 1");
}

void KVCacheLayer::update(const float* k, const float* v, int64_t batch, int64_t n) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (batch <= 0) throw std::invalid_argument("batch must be >= 1");
  if (length() == 0 && batch != batch_) {
    // An empty cache adopts the batch size of its first update.
    keys_.clear();
    values_.clear();
    keys_.set_streams(batch * config_.kv_heads);
    values_.set_streams(batch * config_.kv_heads);
    batch_ = batch;
  } else if (batch != batch_) {
    throw std::invalid_argument("update has batch " + std::to_string(batch) +
                                " but the cache holds batch " + std::to_string(batch_) +
                                "; use a new cache (or clear()) for another batch size");
  }
  const int64_t d = config_.head_dim;
  keys_.validate(k, n, n * d, d);
  values_.validate(v, n, n * d, d);
  keys_.append(k, n, n * d, d);
  values_.append(v, n, n * d, d);
}

void KVCacheLayer::fetch(float* k_out, float* v_out) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const int64_t per_stream = length() * config_.head_dim;
  for (int64_t s = 0; s < keys_.streams(); ++s) {
    keys_.decode_stream(s, k_out + s * per_stream);
    values_.decode_stream(s, v_out + s * per_stream);
  }
}

void KVCacheLayer::attention(const float* q, int64_t batch, int64_t q_heads, int64_t q_len,
                             float scale, float* out, bool threaded,
                             const uint8_t* key_valid) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  if (length() == 0) throw std::invalid_argument("attention on an empty cache: update it first");
  AttentionShape shape{batch, config_.kv_heads, q_heads, q_len};
  fused_attention(keys_, values_, q, shape, scale, out, threaded ? &ThreadPool::shared() : nullptr,
                  key_valid);
}

void KVCacheLayer::trim(int64_t n) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (n < 0 || n > length()) {
    throw std::invalid_argument("cannot trim " + std::to_string(n) + " tokens from a cache of " +
                                std::to_string(length()));
  }
  keys_.trim(n);
  values_.trim(n);
}

void KVCacheLayer::clear() {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  keys_.clear();
  values_.clear();
}

void KVCacheLayer::import_state(int64_t batch, const TokenStore::State& keys,
                                const TokenStore::State& values) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (batch <= 0 || keys.streams != batch * config_.kv_heads || values.streams != keys.streams) {
    throw std::invalid_argument("state does not match batch x num_kv_heads streams");
  }
  if (keys.chunk_length + keys.window_length != values.chunk_length + values.window_length) {
    throw std::invalid_argument("state keys and values hold different numbers of tokens");
  }
  // Validate both sides on scratch stores first, so a bad state leaves this cache unchanged.
  TokenStore k_check(config_.key, config_.head_dim, 0, config_.residual_window, SimdLevel::kScalar);
  TokenStore v_check(config_.value, config_.head_dim, 0, config_.residual_window, SimdLevel::kScalar);
  k_check.import_state(keys);
  v_check.import_state(values);
  keys_.import_state(keys);
  values_.import_state(values);
  batch_ = batch;
}

void KVCacheLayer::export_state(TokenStore::State* keys, TokenStore::State* values) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  *keys = keys_.export_state();
  *values = values_.export_state();
}

}  // namespace turbokv
