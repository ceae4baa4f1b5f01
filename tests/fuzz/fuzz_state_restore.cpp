// Cache-state restore from arbitrary bytes: arrays of arbitrary sizes and contents either are
// refused with std::invalid_argument (and leave the cache as it was) or restore a cache that can
// then be fetched, attended and appended to.
#include <stdexcept>
#include <vector>

#include "fuzz_input.hpp"
#include "turbokv/kv_cache.hpp"

using namespace turbokv;

namespace {

TokenStore::State arbitrary_state(fuzz::Input& in, int64_t streams) {
  TokenStore::State st;
  st.streams = streams;
  st.chunk_length = in.range(0, 300);
  st.window_length = in.range(0, 6);
  auto sized = [&](int64_t unit) { return static_cast<size_t>(std::max<int64_t>(0, unit + in.range(-2, 2))); };
  st.codes = in.bytes(sized(st.streams * st.chunk_length * in.range(0, 64)));
  st.norms = in.bytes(sized(st.streams * st.chunk_length * 4));
  st.qjl = in.bytes(sized(st.streams * st.chunk_length * in.range(0, 16)));
  st.residual_norms = in.bytes(sized(st.streams * st.chunk_length * in.range(0, 4)));
  const std::vector<uint8_t> halves = in.bytes(2 * sized(st.streams * st.chunk_length * in.range(0, 32)));
  st.halves.assign(halves.size() / 2, 0);
  const std::vector<uint8_t> window = in.bytes(2 * sized(st.streams * st.window_length * in.range(0, 32)));
  st.window.assign(window.size() / 2, 0);
  for (size_t i = 0; i < st.halves.size(); ++i) st.halves[i] = uint16_t(halves[2 * i] | halves[2 * i + 1] << 8);
  for (size_t i = 0; i < st.window.size(); ++i) st.window[i] = uint16_t(window[2 * i] | window[2 * i + 1] << 8);
  return st;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  CacheConfig config;
  config.head_dim = in.range(0, 1) ? 16 : 32;
  config.kv_heads = in.range(1, 2);
  config.key.bits = in.range(0, 8);
  config.value.bits = in.range(0, 8);
  config.key.mode = config.key.bits > 0 && (in.byte() & 1) ? Mode::kProd : Mode::kMse;
  config.value.norm_dtype = in.byte() & 1 ? NormDtype::kFloat16 : NormDtype::kFloat32;
  config.residual_window = in.range(0, 6);
  KVCacheLayer cache(config, SimdLevel::kScalar);
  const int64_t batch = in.range(1, 2);
  CacheState state;
  state.batch = batch;
  state.key = config.key;
  state.key.bits = in.range(0, 8);  // a state may carry other key bits (prefill protection)
  if (in.byte() & 1) state.key_offset.assign(static_cast<size_t>(in.range(0, 2) * config.kv_heads * config.head_dim), in.byte() - 128.0f);
  state.keys = arbitrary_state(in, batch * config.kv_heads);
  state.values = arbitrary_state(in, batch * config.kv_heads);
  try {
    cache.import_state(state);
  } catch (const std::invalid_argument&) {
    if (cache.length() != 0) __builtin_trap();  // a refused state must leave the cache unchanged
    return 0;
  }
  const int64_t d = config.head_dim, length = cache.length();
  const CacheSnapshot snap = cache.fetch();
  if (static_cast<int64_t>(snap.keys.size()) != batch * config.kv_heads * length * d) __builtin_trap();
  if (length > 0) {
    std::vector<float> q(batch * 2 * config.kv_heads * d, 0.5f), out(q.size());
    cache.attention(q.data(), batch, 2 * config.kv_heads, 1, AttentionOptions{0.25f}, out.data(), false);
  }
  std::vector<float> more(batch * config.kv_heads * d, 0.25f);
  cache.update(more.data(), more.data(), batch, 1);
  return 0;
}
