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

int64_t KVCacheLayer::batch() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return batch_;
}

int64_t KVCacheLayer::length() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return keys_.length();
}

int64_t KVCacheLayer::allocated_bytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return keys_.allocated_bytes() + values_.allocated_bytes();
}

int64_t KVCacheLayer::used_bytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return keys_.used_bytes() + values_.used_bytes();
}

void KVCacheLayer::update(const float* k, const float* v, int64_t batch, int64_t n) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  update_locked(k, v, batch, n);
}

CacheSnapshot KVCacheLayer::update_and_fetch(const float* k, const float* v, int64_t batch,
                                             int64_t n) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  update_locked(k, v, batch, n);
  return fetch_locked();
}

void KVCacheLayer::update_locked(const float* k, const float* v, int64_t batch, int64_t n) {
  if (batch <= 0) throw std::invalid_argument("batch must be >= 1");
  if (keys_.length() == 0 && batch != batch_) {
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

CacheSnapshot KVCacheLayer::fetch() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return fetch_locked();
}

CacheSnapshot KVCacheLayer::fetch_locked() const {
  CacheSnapshot out;
  out.length = keys_.length();
  out.batch = batch_;
  const int64_t per_stream = out.length * config_.head_dim;
  const auto size = static_cast<size_t>(out.batch * config_.kv_heads * per_stream);
  out.keys.resize(size);
  out.values.resize(size);
  for (int64_t s = 0; s < out.batch * config_.kv_heads; ++s) {
    keys_.decode_stream(s, out.keys.data() + s * per_stream);
    values_.decode_stream(s, out.values.data() + s * per_stream);
  }
  return out;
}

void KVCacheLayer::attention(const float* q, int64_t batch, int64_t q_heads, int64_t q_len,
                             const AttentionOptions& options, float* out, bool threaded) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  if (keys_.length() == 0) throw std::invalid_argument("attention on an empty cache: update it first");
  AttentionShape shape{batch, config_.kv_heads, q_heads, q_len};
  fused_attention(keys_, values_, q, shape, options, out,
                  threaded ? &ThreadPool::shared() : nullptr);
}

void KVCacheLayer::trim(int64_t n) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (n < 0 || n > keys_.length()) {
    throw std::invalid_argument("cannot trim " + std::to_string(n) + " tokens from a cache of " +
                                std::to_string(keys_.length()));
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

CacheState KVCacheLayer::export_state() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  CacheState st;
  st.batch = batch_;
  st.keys = keys_.export_state();
  st.values = values_.export_state();
  return st;
}

}  // namespace turbokv
