// One side of bench/ab/run.sh: the library of one commit, compiled with its namespace renamed
// (-Dturbokv=<name>) and its entry points prefixed (-DAB_SIDE=<name>_), so that two commits link
// into one process and are timed call by call.
#include <cstdint>
#include <memory>
#include <vector>

#include "turbokv/codec.hpp"
#include "turbokv/kv_cache.hpp"

#define AB_CAT2(a, b) a##b
#define AB_CAT(a, b) AB_CAT2(a, b)
#define AB_NAME(name) AB_CAT(AB_SIDE, name)

void* AB_NAME(codec_new)(int head_dim, int bits, int simd) {
  turbokv::CodecConfig config;
  config.head_dim = head_dim;
  config.bits = bits;
  return new turbokv::Codec(config, turbokv::SimdLevel(simd));
}

int64_t AB_NAME(code_bytes)(void* codec) { return int64_t(static_cast<turbokv::Codec*>(codec)->code_bytes()); }

void AB_NAME(encode)(void* codec, const float* x, int64_t n, uint8_t* codes, float* norms) {
  auto* c = static_cast<turbokv::Codec*>(codec);
  turbokv::EncodedBuffers out{};
  out.codes = codes;
  out.norms = norms;
  c->encode(x, n, c->head_dim(), out);
}

void AB_NAME(codec_delete)(void* codec) { delete static_cast<turbokv::Codec*>(codec); }

// A layer of kv_heads x head_dim holding `context` tokens of k and v (batch x kv_heads x context x
// head_dim).
void* AB_NAME(layer_new)(int head_dim, int kv_heads, int key_bits, int value_bits, int simd,
                         const float* k, const float* v, int64_t batch, int64_t context) {
  turbokv::CacheConfig config;
  config.head_dim = head_dim;
  config.kv_heads = kv_heads;
  config.key.bits = key_bits;
  config.value.bits = value_bits;
  auto* layer = new turbokv::KVCacheLayer(config, turbokv::SimdLevel(simd));
  layer->update(k, v, batch, context);
  return layer;
}

// Int8 values where the commit has them (AttentionOptions::values, since b2945d7): the member's own
// type names the enum, so this compiles against older commits too, where it returns false.
template <typename Options>
auto set_int8_values(Options& o, int) -> decltype(o.values = decltype(o.values)(1), bool()) {
  o.values = decltype(o.values)(1);  // ValuePrecision::kInt8
  return true;
}
template <typename Options>
bool set_int8_values(Options&, long) {
  return false;
}

// q, out: (batch, q_heads, q_len, head_dim); q_len > 1 is a causal prefill of the cache's last
// q_len positions. int8: 0 float32 sums, 1 int8 scores, 2 int8 scores and values. Returns false if
// the commit lacks int8 values.
bool AB_NAME(attend)(void* layer, const float* q, int64_t batch, int q_heads, int64_t q_len, float scale,
                     bool threaded, int int8, float* out) {
  turbokv::AttentionOptions options;
  options.scale = scale;
  if (int8 >= 1) options.scores = turbokv::ScorePrecision::kInt8;
  if (int8 >= 2 && !set_int8_values(options, 0)) return false;
  static_cast<turbokv::KVCacheLayer*>(layer)->attention(q, batch, q_heads, q_len, options, out, threaded);
  return true;
}

void AB_NAME(layer_delete)(void* layer) { delete static_cast<turbokv::KVCacheLayer*>(layer); }
