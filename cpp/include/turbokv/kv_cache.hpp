// One layer of a compressed KV cache: keys and values of every (batch, kv head) stream, with
// fused attention over them. The Python class turbokv.KVCache is a thin wrapper of this.
// Thread safety: any number of concurrent readers (attention, fetch, export) or one writer
// (update, trim, clear, import), enforced by a reader-writer lock in which a waiting writer
// goes before new readers.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "turbokv/attention.hpp"
#include "turbokv/probe.hpp"
#include "turbokv/token_store.hpp"
#include "turbokv/writer_first_mutex.hpp"

namespace turbokv {

struct CacheConfig {
  int head_dim = 128;
  int kv_heads = 1;
  SideConfig key, value;
  int64_t residual_window = 0;
  uint64_t key_seed = 0, value_seed = 1;
  // Subtract each stream's mean key (over the first update's tokens) before encoding keys
  // (bits > 0 only). Softmax ignores a constant added to every score of a query, so this is
  // exact; it stops one large shared component (Qwen2.5's key bias) from swallowing the bits.
  bool center_keys = false;
};

// A consistent copy of a layer taken under one lock: its shape and its decoded tokens or state.
struct CacheSnapshot {
  int64_t batch = 0, length = 0;
  std::vector<float> keys, values;  // fetch: (batch, kv_heads, length, head_dim) float32
};
struct CacheState {
  int64_t batch = 0;
  SideConfig key;                 // the key side in use (reencode_keys may have changed it)
  std::vector<float> key_offset;  // (batch, kv_heads, head_dim) subtracted from keys; empty: none
  TokenStore::State keys, values;
};

class KVCacheLayer {
 public:
  explicit KVCacheLayer(const CacheConfig& config, SimdLevel level = default_simd());

  // The configuration it was built with; key_side() is the key side in use now.
  const CacheConfig& config() const { return config_; }
  SimdLevel simd_level() const { return level_; }  // the kernels its codecs and attention use
  SideConfig key_side() const;
  // (batch, kv_heads, head_dim): the vector subtracted from every key of each stream before
  // encoding; empty when keys are not centred (center_keys off, float16 keys, an empty cache).
  std::vector<float> key_offset() const;
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
  // q, out: (batch, q_heads, q_len, head_dim) float32, contiguous or laid out as q_strides and
  // out_strides say (attention.hpp's RowStrides); options as in fused_attention (its
  // key_valid_tokens is checked against the length under the lock).
  AttentionReport attention(const float* q, int64_t batch, int64_t q_heads, int64_t q_len,
                            const AttentionOptions& options, float* out, bool threaded = true,
                            const RowStrides& q_strides = {}, const RowStrides& out_strides = {}) const;
  void trim(int64_t n);
  void clear();

  // Stores the keys of a cache that holds exactly one update (k: its keys again, batch x n
  // tokens) with another key side, e.g. more bits after a prefill showed the requested ones fail.
  // Values are untouched. Throws std::invalid_argument if the cache holds anything else.
  void reencode_keys(const SideConfig& key, const float* k, int64_t batch, int64_t n);
  // Prefill protection's KL (probe.hpp) of the stored keys against exact_keys (batch, kv_heads,
  // length, head_dim: the keys of the cache's only update), decoding each stream's keys on the
  // pool's threads (no values, no copy of the whole layer). Throws std::invalid_argument if the
  // cache's batch or length differ from exact_keys'.
  std::vector<double> attention_kl(const float* queries, const float* exact_keys, int64_t batch,
                                   int64_t q_heads, int64_t rows, int64_t length, float scale,
                                   bool causal, int64_t window, bool threaded) const;

  // Keeps batch rows sources[0], sources[1], ... (any row any number of times, in any order) as
  // the new batch: beam search's reorder, num_return_sequences' repeat. Codes are copied, never
  // decoded. Throws std::invalid_argument (cache unchanged) for an empty list or a bad row.
  void select_batch(const std::vector<int64_t>& sources);

  // Restores a saved state (batch, and the two sides' arrays); validates before replacing.
  void import_state(const CacheState& state);
  CacheState export_state() const;

 private:
  void update_locked(const float* k, const float* v, int64_t batch, int64_t n);
  // The shared pool for an append of n tokens large enough to encode on it (a prefill), else null.
  ThreadPool* append_pool(int64_t batch, int64_t n) const;
  CacheSnapshot fetch_locked() const;
  // k centred by key_offset_ (into scratch), or k itself when there is no offset.
  const float* centred_keys(const float* k, int64_t batch, int64_t n, std::unique_ptr<float[]>& scratch) const;
  void set_key_offset(const float* k, int64_t batch, int64_t n);

  CacheConfig config_;
  SimdLevel level_;
  TokenStore keys_, values_;
  std::vector<float> key_offset_;
  int64_t batch_ = 0;
  mutable WriterFirstMutex mutex_;
};

}  // namespace turbokv
