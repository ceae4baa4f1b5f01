#include "turbokv/kv_cache.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace turbokv {

namespace {
using ReadLock = std::shared_lock<WriterFirstMutex>;  // attention, fetch, export, sizes
using WriteLock = std::unique_lock<WriterFirstMutex>;  // update, trim, clear, import, reencode
}  // namespace

KVCacheLayer::KVCacheLayer(const CacheConfig& config, SimdLevel level)
    : config_(config),
      level_(level),
      keys_(config.key, config.head_dim, config.key_seed, config.residual_window, level),
      values_(config.value, config.head_dim, config.value_seed, config.residual_window, level) {
  if (config.kv_heads <= 0) throw std::invalid_argument("num_kv_heads must be >= 1");
}

SideConfig KVCacheLayer::key_side() const {
  ReadLock lock(mutex_);
  return keys_.side();
}

std::vector<float> KVCacheLayer::key_offset() const {
  ReadLock lock(mutex_);
  return key_offset_;
}

int64_t KVCacheLayer::batch() const {
  ReadLock lock(mutex_);
  return batch_;
}

int64_t KVCacheLayer::length() const {
  ReadLock lock(mutex_);
  return keys_.length();
}

int64_t KVCacheLayer::allocated_bytes() const {
  ReadLock lock(mutex_);
  return keys_.allocated_bytes() + values_.allocated_bytes();
}

int64_t KVCacheLayer::used_bytes() const {
  ReadLock lock(mutex_);
  return keys_.used_bytes() + values_.used_bytes();
}

void KVCacheLayer::update(const float* k, const float* v, int64_t batch, int64_t n) {
  WriteLock lock(mutex_);
  update_locked(k, v, batch, n);
}

CacheSnapshot KVCacheLayer::update_and_fetch(const float* k, const float* v, int64_t batch,
                                             int64_t n) {
  WriteLock lock(mutex_);
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
  // Validate the raw keys too: centring could turn an Inf into a NaN with another message, and a
  // NaN key would poison the mean.
  keys_.validate(k, n, n * d, d);
  values_.validate(v, n, n * d, d);
  // Taken before any change (a bad TURBOKV_NUM_THREADS throws here, leaving the cache as it was).
  ThreadPool* pool = append_pool(batch, n);
  std::vector<float> offset_before;
  if (keys_.length() == 0) {
    offset_before.swap(key_offset_);
    set_key_offset(k, batch, n);
  }
  std::unique_ptr<float[]> scratch;
  const float* stored = centred_keys(k, batch, n, scratch);
  try {
    if (stored != k) keys_.validate(stored, n, n * d, d);
  } catch (...) {
    if (keys_.length() == 0) key_offset_.swap(offset_before);  // all or nothing
    throw;
  }
  keys_.append(stored, n, n * d, d, pool);
  values_.append(v, n, n * d, d, pool);
}

ThreadPool* KVCacheLayer::append_pool(int64_t batch, int64_t n) const {
  const int64_t floats = batch * config_.kv_heads * n * config_.head_dim;
  return floats >= TokenStore::kParallelAppendFloats ? &ThreadPool::shared() : nullptr;
}

void KVCacheLayer::set_key_offset(const float* k, int64_t batch, int64_t n) {
  key_offset_.clear();
  // Float16 keys are kept as given (centring would change their rounding for no gain).
  if (!config_.center_keys || keys_.full_precision() || n == 0) return;
  // One mean per stream (batch row, kv head), so a batch row's results never depend on the others.
  const int64_t streams = batch * config_.kv_heads, d = config_.head_dim;
  key_offset_.resize(static_cast<size_t>(streams * d));
  std::vector<double> sum(static_cast<size_t>(d));
  for (int64_t s = 0; s < streams; ++s) {
    std::fill(sum.begin(), sum.end(), 0.0);
    const float* x = k + s * n * d;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < d; ++i) sum[i] += x[t * d + i];
    }
    for (int64_t i = 0; i < d; ++i) key_offset_[s * d + i] = static_cast<float>(sum[i] / double(n));
  }
}

const float* KVCacheLayer::centred_keys(const float* k, int64_t batch, int64_t n,
                                        std::unique_ptr<float[]>& scratch) const {
  if (key_offset_.empty()) return k;
  const int64_t streams = batch * config_.kv_heads, d = config_.head_dim;
  // Not zero-filled first (a std::vector's memset was ~9% of a prefill's update; perf, session 48).
  scratch.reset(new float[static_cast<size_t>(streams * n * d)]);
  for (int64_t s = 0; s < streams; ++s) {
    const float* mu = key_offset_.data() + s * d;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t row = (s * n + t) * d;
      for (int64_t i = 0; i < d; ++i) scratch[row + i] = k[row + i] - mu[i];
    }
  }
  return scratch.get();
}

void KVCacheLayer::reencode_keys(const SideConfig& key, const float* k, int64_t batch, int64_t n) {
  WriteLock lock(mutex_);
  if (batch != batch_ || n != keys_.length() || n == 0) {
    throw std::invalid_argument("reencode_keys needs the keys of the cache's only update (batch " +
                                std::to_string(batch_) + ", " + std::to_string(keys_.length()) +
                                " tokens)");
  }
  const int64_t d = config_.head_dim;
  ThreadPool* pool = append_pool(batch, n);
  TokenStore fresh(key, config_.head_dim, config_.key_seed, config_.residual_window, level_);
  fresh.set_streams(batch * config_.kv_heads);
  fresh.validate(k, n, n * d, d);
  // Build the replacement completely before touching the cache (all or nothing).
  std::vector<float> saved_offset = key_offset_;
  std::swap(keys_, fresh);
  set_key_offset(k, batch, n);
  std::unique_ptr<float[]> scratch;
  const float* stored = centred_keys(k, batch, n, scratch);
  try {
    keys_.validate(stored, n, n * d, d);
    keys_.append(stored, n, n * d, d, pool);
  } catch (...) {
    std::swap(keys_, fresh);
    key_offset_ = saved_offset;
    throw;
  }
}

std::vector<double> KVCacheLayer::attention_kl(const float* queries, const float* exact_keys, int64_t batch,
                                               int64_t q_heads, int64_t rows, int64_t length,
                                               float scale, bool causal, int64_t window,
                                               bool threaded) const {
  ReadLock lock(mutex_);
  if (batch != batch_ || length != keys_.length() || length == 0) {
    throw std::invalid_argument("attention_kl: exact keys of batch " + std::to_string(batch) + " and " +
                                std::to_string(length) + " tokens, but the cache holds batch " +
                                std::to_string(batch_) + " and " + std::to_string(keys_.length()) +
                                " tokens");
  }
  const int64_t d = config_.head_dim;
  const ProbeShape shape{batch, q_heads, config_.kv_heads, rows, keys_.length(), d};
  const StoredKeys stored = [this, d](int64_t s, float* scratch) {
    keys_.decode_stream(s, scratch);
    if (!key_offset_.empty()) {  // as fetch: the keys as given, not centred
      const float* mu = key_offset_.data() + s * d;
      for (int64_t t = 0; t < keys_.length(); ++t) {
        for (int64_t i = 0; i < d; ++i) scratch[t * d + i] += mu[i];
      }
    }
    return static_cast<const float*>(scratch);
  };
  return turbokv::attention_kl(queries, exact_keys, stored, shape, scale, causal, window, level_,
                               threaded ? &ThreadPool::shared() : nullptr);
}

CacheSnapshot KVCacheLayer::fetch() const {
  ReadLock lock(mutex_);
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
  const int64_t d = config_.head_dim;
  for (int64_t s = 0; s < out.batch * config_.kv_heads; ++s) {
    float* keys = out.keys.data() + s * per_stream;
    keys_.decode_stream(s, keys);
    values_.decode_stream(s, out.values.data() + s * per_stream);
    if (!key_offset_.empty()) {
      const float* mu = key_offset_.data() + s * d;
      for (int64_t t = 0; t < out.length; ++t) {
        for (int64_t i = 0; i < d; ++i) keys[t * d + i] += mu[i];
      }
    }
  }
  return out;
}

AttentionReport KVCacheLayer::attention(const float* q, int64_t batch, int64_t q_heads,
                                        int64_t q_len, const AttentionOptions& options, float* out,
                                        bool threaded, const RowStrides& q_strides,
                                        const RowStrides& out_strides) const {
  ReadLock lock(mutex_);
  if (keys_.length() == 0) throw std::invalid_argument("attention on an empty cache: update it first");
  AttentionShape shape{batch, config_.kv_heads, q_heads, q_len, q_strides, out_strides};
  AttentionOptions with_offset = options;
  with_offset.key_offset = key_offset_.empty() ? nullptr : key_offset_.data();
  return fused_attention(keys_, values_, q, shape, with_offset, out,
                  threaded ? &ThreadPool::shared() : nullptr);
}

void KVCacheLayer::trim(int64_t n) {
  WriteLock lock(mutex_);
  if (n < 0 || n > keys_.length()) {
    throw std::invalid_argument("cannot trim " + std::to_string(n) + " tokens from a cache of " +
                                std::to_string(keys_.length()));
  }
  keys_.trim(n);
  values_.trim(n);
}

void KVCacheLayer::clear() {
  WriteLock lock(mutex_);
  // Back to the configured key side: the next prompt's prefill decides afresh.
  if (keys_.side().bits != config_.key.bits) {
    keys_ = TokenStore(config_.key, config_.head_dim, config_.key_seed, config_.residual_window, level_);
    if (batch_ > 0) keys_.set_streams(batch_ * config_.kv_heads);
  }
  keys_.clear();
  key_offset_.clear();
  values_.clear();
}

void KVCacheLayer::import_state(const CacheState& state) {
  WriteLock lock(mutex_);
  const int64_t batch = state.batch;
  const TokenStore::State &keys = state.keys, &values = state.values;
  if (state.key.bits < 0 || state.key.bits > 8 || state.key.mode != config_.key.mode ||
      state.key.norm_dtype != config_.key.norm_dtype ||
      state.key.norm_correction != config_.key.norm_correction) {
    throw std::invalid_argument("state's key side differs from this cache's in more than its bits");
  }
  if (!state.key_offset.empty()) {
    if (state.key_offset.size() != static_cast<size_t>(state.batch * config_.kv_heads * config_.head_dim) ||
        state.key.bits == 0) {
      throw std::invalid_argument("state's key offset does not match batch x kv_heads x head_dim");
    }
    for (float x : state.key_offset) {
      if (!std::isfinite(x)) throw std::invalid_argument("state's key offset holds NaN or Inf");
    }
  }
  if (batch <= 0 || keys.streams != batch * config_.kv_heads || values.streams != keys.streams) {
    throw std::invalid_argument("state does not match batch x num_kv_heads streams");
  }
  if (keys.chunk_length + keys.window_length != values.chunk_length + values.window_length) {
    throw std::invalid_argument("state keys and values hold different numbers of tokens");
  }
  // Validate both sides on scratch stores first, so a bad state leaves this cache unchanged.
  TokenStore k_new(state.key, config_.head_dim, config_.key_seed, config_.residual_window, level_);
  TokenStore v_check(config_.value, config_.head_dim, 0, config_.residual_window, SimdLevel::kScalar);
  k_new.import_state(keys);
  v_check.import_state(values);
  values_.import_state(values);
  std::swap(keys_, k_new);
  key_offset_ = state.key_offset;
  batch_ = batch;
}

namespace {

// Stream-major arrays (each stream's part contiguous, equal sizes) with streams regrouped: new
// stream s is old stream (sources[s / heads] * heads + s % heads).
template <typename T>
std::vector<T> gather_streams(const std::vector<T>& in, int64_t old_streams, int64_t heads,
                              const std::vector<int64_t>& sources) {
  const size_t per = old_streams ? in.size() / static_cast<size_t>(old_streams) : 0;
  std::vector<T> out(per * sources.size() * static_cast<size_t>(heads));
  for (size_t b = 0; b < sources.size(); ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const size_t from = static_cast<size_t>(sources[b] * heads + h), to = b * heads + h;
      std::copy_n(in.begin() + from * per, per, out.begin() + to * per);
    }
  }
  return out;
}

TokenStore::State gather_store(const TokenStore::State& in, int64_t heads,
                               const std::vector<int64_t>& sources) {
  TokenStore::State out;
  out.streams = static_cast<int64_t>(sources.size()) * heads;
  out.chunk_length = in.chunk_length;
  out.window_length = in.window_length;
  out.codes = gather_streams(in.codes, in.streams, heads, sources);
  out.norms = gather_streams(in.norms, in.streams, heads, sources);
  out.qjl = gather_streams(in.qjl, in.streams, heads, sources);
  out.residual_norms = gather_streams(in.residual_norms, in.streams, heads, sources);
  out.halves = gather_streams(in.halves, in.streams, heads, sources);
  out.window = gather_streams(in.window, in.streams, heads, sources);
  return out;
}

}  // namespace

void KVCacheLayer::select_batch(const std::vector<int64_t>& sources) {
  WriteLock lock(mutex_);
  if (sources.empty()) throw std::invalid_argument("select_batch needs at least one batch row");
  for (int64_t b : sources) {
    if (b < 0 || b >= batch_) {
      throw std::invalid_argument("select_batch row " + std::to_string(b) + " is outside the batch of " +
                                  std::to_string(batch_));
    }
  }
  const int64_t heads = config_.kv_heads;
  TokenStore::State keys = gather_store(keys_.export_state(), heads, sources);
  TokenStore::State values = gather_store(values_.export_state(), heads, sources);
  std::vector<float> offset = gather_streams(key_offset_, batch_ * heads, heads, sources);
  keys_.import_state(keys);  // same stores, new stream count: validated sizes, nothing decoded
  values_.import_state(values);
  key_offset_ = std::move(offset);
  batch_ = static_cast<int64_t>(sources.size());
}

CacheState KVCacheLayer::export_state() const {
  ReadLock lock(mutex_);
  CacheState st;
  st.batch = batch_;
  st.key = keys_.side();
  st.key_offset = key_offset_;
  st.keys = keys_.export_state();
  st.values = values_.export_state();
  return st;
}

}  // namespace turbokv
