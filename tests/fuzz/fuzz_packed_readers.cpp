// Decode, fused scores (float32 and int8), int8 value sums and fused attention (float32 and int8)
// on arbitrary packed buffers (any bits, any norms and weights, including NaN/Inf) of arbitrary
// declared shapes: never out of bounds, never a crash.
#include <stdexcept>
#include <vector>

#include "fuzz_input.hpp"
#include "turbokv/codec.hpp"
#include "turbokv/kv_cache.hpp"

using namespace turbokv;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const auto levels = supported_simd();
  const auto level = levels[static_cast<size_t>(in.range(0, static_cast<int>(levels.size()) - 1))];
  CodecConfig config;
  config.head_dim = fuzz::head_dim(in);
  config.bits = in.range(1, 8);
  config.mode = in.byte() & 1 ? Mode::kProd : Mode::kMse;
  const Codec& codec = fuzz::codec_for(config, level);
  const int64_t n = in.range(0, 40), m = in.range(1, 5), d = config.head_dim;
  const std::vector<uint8_t> codes = in.bytes(n * codec.code_bytes());
  const std::vector<uint8_t> qjl = in.bytes(n * codec.qjl_bytes());
  const std::vector<float> norms = in.floats(n), residual_norms = in.floats(n);
  const std::vector<float> q = in.floats(m * d);
  const ConstEncodedBuffers enc{codes.data(), norms.data(), qjl.data(), residual_norms.data()};
  std::vector<float> out(n * d), scores(m * n);
  codec.decode(enc, n, out.data());
  codec.scores(q.data(), m, d, enc, n, scores.data());
  if (codec.int8_scores_supported()) codec.scores(q.data(), m, d, enc, n, scores.data(), ScorePrecision::kInt8);
  if (codec.int8_values_supported()) {
    // Weights of any bits: negative, NaN and infinite ones are refused, the rest summed.
    const std::vector<float> w = in.floats(m * n);
    std::vector<float> acc(m * d, 0.0f), sketch(m * d, 0.0f), scratch((m + 1) * n);
    try {
      codec.accumulate(w.data(), n, m, enc, n, acc.data(), sketch.data(), scratch.data(), ValuePrecision::kInt8);
    } catch (const std::invalid_argument&) {
    }
  }

  // The same bytes as a cache's state, then attention over it.
  CacheConfig cache;
  cache.head_dim = config.head_dim;
  cache.kv_heads = 1;
  cache.key.bits = in.range(0, 8);
  cache.value.bits = in.range(0, 8);
  cache.residual_window = in.range(0, 4);
  KVCacheLayer layer(cache, level);
  const int64_t tokens = in.range(1, 300);
  const std::vector<float> kv = in.floats(tokens * d);
  try {
    layer.update(kv.data(), kv.data(), 1, tokens);
  } catch (const std::invalid_argument&) {
    return 0;  // NaN/Inf or out-of-range input is refused
  }
  std::vector<float> attention_out(4 * d);
  const std::vector<float> queries = in.floats(4 * d);
  try {
    layer.attention(queries.data(), 1, 4, 1, AttentionOptions{0.1f}, attention_out.data(), false);
    AttentionOptions int8{0.1f};
    int8.scores = ScorePrecision::kInt8;
    int8.values = ValuePrecision::kInt8;
    layer.attention(queries.data(), 1, 4, 1, int8, attention_out.data(), false);
  } catch (const std::invalid_argument&) {
    return 0;  // NaN/Inf queries are refused (the documented behaviour)
  }
  return 0;
}
