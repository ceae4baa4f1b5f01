#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "test_util.hpp"
#include "turbokv/half.hpp"
#include "turbokv/attention.hpp"
#include "turbokv/kv_cache.hpp"
#include "turbokv/thread_pool.hpp"
#include "../../cpp/src/sequence_parts.hpp"

using namespace turbokv;

namespace {

// Causal GQA softmax attention in double over decoded K/V: the oracle for fused attention.
std::vector<double> naive_attention(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, int64_t batch, int64_t kv_heads,
                                    int64_t q_heads, int64_t q_len, int64_t length, int64_t d,
                                    double scale, double softcap = 0,
                                    const std::vector<float>* sinks = nullptr, bool causal = true,
                                    int64_t window = 0) {
  std::vector<double> out(q.size());
  const int64_t group = q_heads / kv_heads;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < q_heads; ++h) {
      const int64_t s = b * kv_heads + h / group;
      for (int64_t l = 0; l < q_len; ++l) {
        const float* qv = q.data() + ((b * q_heads + h) * q_len + l) * d;
        const int64_t visible = causal ? length - q_len + l + 1 : length;
        const int64_t oldest = window > 0 ? std::max<int64_t>(0, visible - window) : 0;
        std::vector<double> w(visible, -INFINITY);
        double max = -INFINITY, sum = 0;
        for (int64_t t = oldest; t < visible; ++t) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += double(qv[i]) * k[(s * length + t) * d + i];
          w[t] = dot * scale;
          if (softcap > 0) w[t] = softcap * std::tanh(w[t] / softcap);
          max = std::max(max, w[t]);
        }
        const double sink = sinks ? double((*sinks)[h]) : -INFINITY;
        max = std::max(max, sink);
        for (auto& x : w) sum += (x = std::exp(x - max));
        if (sinks) sum += std::exp(sink - max);  // a softmax column whose value is zero
        double* o = out.data() + ((b * q_heads + h) * q_len + l) * d;
        for (int64_t t = oldest; t < visible; ++t) {
          for (int64_t i = 0; i < d; ++i) o[i] += w[t] / sum * v[(s * length + t) * d + i];
        }
      }
    }
  }
  return out;
}

double relative_error(const std::vector<float>& got, const std::vector<double>& want);

CacheConfig config(int d, int heads, int kbits, int vbits, int64_t window, Mode mode = Mode::kMse) {
  CacheConfig c;
  c.head_dim = d;
  c.kv_heads = heads;
  c.key.bits = kbits;
  c.value.bits = vbits;
  c.key.mode = c.value.mode = mode;
  c.residual_window = window;
  return c;
}

}  // namespace

std::vector<float> keys_with_shared_component(int64_t streams, int64_t n, int d, uint64_t seed);

// Both ways of doing a block (codes: per query on the packed codes; tiles: decoded once, matrix
// products) against the double-precision oracle over the cache's decoded K/V, at every SIMD level,
// for a decode-sized and a prompt-sized q_len (the latter split into several work items).
TEST(KVCache, FusedAttentionEqualsDecodedAttention) {
  const int64_t batch = 2, heads = 2, q_heads = 6, d = 64;
  for (auto cfg : {config(64, 2, 4, 4, 0), config(64, 2, 3, 2, 20), config(64, 2, 0, 4, 0),
                   config(64, 2, 4, 0, 0), config(64, 2, 3, 3, 0, Mode::kProd)}) {
    for (SimdLevel level : supported_simd()) {
      for (int64_t q_len : {int64_t{3}, int64_t{100}}) {
        KVCacheLayer cache(cfg, level);
        for (int64_t n : {int64_t{270}, q_len}) {  // crosses a 256-token chunk
          auto k = test_util::gaussian_rows(batch * heads * n, int(d), 1);
          auto v = test_util::gaussian_rows(batch * heads * n, int(d), 2);
          cache.update(k.data(), v.data(), batch, n);
        }
        const CacheSnapshot snap = cache.fetch();
        auto q = test_util::gaussian_rows(batch * q_heads * q_len, int(d), 3);
        const auto expect =
            naive_attention(q, snap.keys, snap.values, batch, heads, q_heads, q_len, snap.length, d, 0.125);
        for (AttentionPath path : {AttentionPath::kCodes, AttentionPath::kTiles, AttentionPath::kAuto}) {
          AttentionOptions o{0.125f};
          o.path = path;
          std::vector<float> out(q.size());
          const AttentionReport report = cache.attention(q.data(), batch, q_heads, q_len, o, out.data(), true);
          const std::string where = std::string(simd_name(level)) + " q_len " + std::to_string(q_len) +
                                    " path " + std::to_string(int(path));
          // 100 positions at 3 query heads per KV head: work items of 85 and 15 positions (255 and
          // 45 rows) per stream.
          EXPECT_EQ(report.items, batch * heads * (q_len == 3 ? 1 : 2)) << where;
          const std::vector<int64_t> item_rows = q_len == 3 ? std::vector<int64_t>{9} : std::vector<int64_t>{255, 45};
          int64_t tiled_items = 0;
          for (int64_t rows : item_rows) {
            const bool tiled = path == AttentionPath::kTiles ||
                               (path == AttentionPath::kAuto && rows >= min_tile_rows(cfg.key.bits, cfg.value.bits, level));
            tiled_items += tiled ? batch * heads : 0;
          }
          if (path == AttentionPath::kAuto) {  // the rule's two outcomes both occur here
            // The 255-row items take tiles; 9 rows (decode) the codes, except float16 keys, which
            // take tiles from one row outside the AVX2 and AVX-512 levels.
            const bool f16_tiles = cfg.key.bits == 0 && level != SimdLevel::kAvx2 && level != SimdLevel::kAvx512;
            EXPECT_EQ(tiled_items, q_len == 3 ? (f16_tiles ? batch * heads : 0)
                                              : (f16_tiles || 45 >= min_tile_rows(cfg.key.bits, cfg.value.bits, level) ? 2 : 1) * batch * heads)
                << where;
          }
          EXPECT_EQ(report.tiled_items, tiled_items) << where;
          double max_err = 0, max_ref = 0;
          for (size_t i = 0; i < out.size(); ++i) {
            max_err = std::max(max_err, std::fabs(out[i] - expect[i]));
            max_ref = std::max(max_ref, std::fabs(expect[i]));
          }
          EXPECT_LT(max_err / max_ref, 1e-4) << where;
        }
      }
    }
  }
}

// Every option the softmax sees (softcap, sinks, a key mask, centred keys) and every storage
// (float16 window, float16 side, prod mode) gives the same output on both paths.
TEST(KVCache, TilesAndCodesAgreeUnderEveryOption) {
  const int64_t batch = 2, heads = 2, q_heads = 8, d = 32, n = 600, q_len = 40;
  auto k = keys_with_shared_component(batch * heads, n, int(d), 41);
  auto v = test_util::gaussian_rows(batch * heads * n, int(d), 42);
  auto q = test_util::gaussian_rows(batch * q_heads * q_len, int(d), 43);
  const std::vector<float> sinks{-1.0f, 0.5f, 3.0f, 2.0f, 0.0f, 1.0f, -2.0f, 4.0f};
  std::vector<uint8_t> valid(static_cast<size_t>(batch * n), 1);
  for (int64_t t = 0; t < 37; ++t) valid[static_cast<size_t>(n + t)] = 0;  // row 1: left padding
  for (int64_t t = 300; t < 520; ++t) valid[static_cast<size_t>(t)] = 0;   // row 0: a hole past a chunk
  for (auto cfg : {config(32, 2, 4, 4, 0), config(32, 2, 3, 2, 100), config(32, 2, 0, 4, 0),
                   config(32, 2, 4, 0, 50), config(32, 2, 3, 3, 0, Mode::kProd)}) {
    cfg.center_keys = cfg.key.bits > 0;
    for (SimdLevel level : supported_simd()) {
      KVCacheLayer cache(cfg, level);
      cache.update(k.data(), v.data(), batch, n - q_len);
      std::vector<float> k_tail(k.size()), v_tail(v.size());  // the last q_len tokens per stream
      for (int64_t s = 0; s < batch * heads; ++s) {
        std::copy_n(k.data() + (s * n + n - q_len) * d, q_len * d, k_tail.data() + s * q_len * d);
        std::copy_n(v.data() + (s * n + n - q_len) * d, q_len * d, v_tail.data() + s * q_len * d);
      }
      cache.update(k_tail.data(), v_tail.data(), batch, q_len);
      for (int option = 0; option < 4; ++option) {
        AttentionOptions o{0.3f};
        if (option == 1) o.softcap = 4.0f;
        if (option == 2) o.sinks = sinks.data();
        if (option == 3) {
          o.key_valid = valid.data();
          o.key_valid_tokens = n;
        }
        std::vector<float> by_codes(q.size()), by_tiles(q.size());
        o.path = AttentionPath::kCodes;
        EXPECT_EQ(cache.attention(q.data(), batch, q_heads, q_len, o, by_codes.data()).tiled_items, 0);
        o.path = AttentionPath::kTiles;
        const AttentionReport r = cache.attention(q.data(), batch, q_heads, q_len, o, by_tiles.data());
        EXPECT_EQ(r.tiled_items, r.items);
        EXPECT_LT(relative_error(by_tiles, std::vector<double>(by_codes.begin(), by_codes.end())), 1e-4)
            << simd_name(level) << " key bits " << cfg.key.bits << " option " << option;
      }
    }
  }
}

// Encoders and cross-attention: every query sees every cached token, and there may be more
// queries than tokens (300 queries over 100 tokens here, several work items per stream).
TEST(KVCache, NonCausalAttentionSeesEveryToken) {
  const int64_t batch = 1, heads = 2, q_heads = 4, d = 32, n = 100, q_len = 300;
  KVCacheLayer cache(config(int(d), int(heads), 4, 4, 0));
  auto k = test_util::gaussian_rows(batch * heads * n, int(d), 51);
  cache.update(k.data(), k.data(), batch, n);
  const CacheSnapshot snap = cache.fetch();
  auto q = test_util::gaussian_rows(batch * q_heads * q_len, int(d), 52);
  const auto want = naive_attention(q, snap.keys, snap.values, batch, heads, q_heads, q_len, n, d,
                                    0.2, 0, nullptr, /*causal=*/false);
  for (AttentionPath path : {AttentionPath::kCodes, AttentionPath::kTiles}) {
    AttentionOptions o{0.2f};
    o.causal = false;
    o.path = path;
    std::vector<float> out(q.size());
    cache.attention(q.data(), batch, q_heads, q_len, o, out.data());
    EXPECT_LT(relative_error(out, want), 1e-4) << int(path);
  }
  AttentionOptions causal{0.2f};
  std::vector<float> out(q.size());
  EXPECT_THROW(cache.attention(q.data(), batch, q_heads, q_len, causal, out.data()), std::invalid_argument);
}

// Sliding-window layers (Mistral, Gemma 2/3 local layers): query at position p sees tokens
// p - window < t <= p. Windows shorter than, equal to and longer than a 256-token block, and
// longer than the cache; a prefill of 160 positions (rows that leave a block
// behind) and a decode step; both paths, every SIMD level, with a softcap and a float16 window.
// 160 positions at 2 query heads per KV head: two work items per stream.
TEST(KVCache, SlidingWindowSeesOnlyItsNewestTokens) {
  const int64_t batch = 1, heads = 2, q_heads = 4, d = 32, n = 700;
  auto k = keys_with_shared_component(batch * heads, n, int(d), 61);
  auto v = test_util::gaussian_rows(batch * heads * n, int(d), 62);
  for (auto cfg : {config(32, 2, 4, 4, 0), config(32, 2, 3, 2, 40), config(32, 2, 0, 0, 0)}) {
    // Every level stores the same codes (test_simd_parity), so one oracle serves them all.
    KVCacheLayer scalar(cfg, SimdLevel::kScalar);
    scalar.update(k.data(), v.data(), batch, n);
    const CacheSnapshot snap = scalar.fetch();
    for (int64_t q_len : {int64_t{160}, int64_t{1}}) {
      auto q = test_util::gaussian_rows(batch * q_heads * q_len, int(d), 63);
      for (int64_t window : {1, 100, 256, 333, 1000}) {
        for (float softcap : {0.0f, 3.0f}) {
          const auto want = naive_attention(q, snap.keys, snap.values, batch, heads, q_heads, q_len,
                                            n, d, 0.3, softcap, nullptr, true, window);
          for (SimdLevel level : supported_simd()) {
            KVCacheLayer cache(cfg, level);
            cache.update(k.data(), v.data(), batch, n);
            for (AttentionPath path : {AttentionPath::kCodes, AttentionPath::kTiles}) {
              AttentionOptions o{0.3f};
              o.softcap = softcap;
              o.window = window;
              o.path = path;
              std::vector<float> out(q.size());
              const AttentionReport r = cache.attention(q.data(), batch, q_heads, q_len, o, out.data());
              EXPECT_EQ(r.tiled_items, path == AttentionPath::kTiles ? r.items : 0);
              EXPECT_LT(relative_error(out, want), 1e-4)
                  << simd_name(level) << " key bits " << cfg.key.bits << " q_len "
                  << q_len << " window " << window << " softcap " << softcap << " path " << int(path);
            }
          }
        }
      }
    }
  }
  KVCacheLayer cache(config(32, 2, 4, 4, 0));
  cache.update(k.data(), v.data(), 1, 10);
  auto q = test_util::gaussian_rows(q_heads, int(d), 64);
  std::vector<float> out(q.size());
  AttentionOptions negative{0.3f}, not_causal{0.3f};
  negative.window = -1;
  not_causal.window = 4;
  not_causal.causal = false;
  EXPECT_THROW(cache.attention(q.data(), 1, q_heads, 1, negative, out.data()), std::invalid_argument);
  EXPECT_THROW(cache.attention(q.data(), 1, q_heads, 1, not_causal, out.data()), std::invalid_argument);
}

TEST(KVCache, TrimAndStateRoundTrip) {
  KVCacheLayer a(config(32, 2, 4, 3, 8)), b(config(32, 2, 4, 3, 8));
  auto k = test_util::gaussian_rows(2 * 300, 32, 4);
  a.update(k.data(), k.data(), 1, 300);
  a.trim(40);
  EXPECT_EQ(a.length(), 260);
  CacheState st = a.export_state();
  TokenStore::State& ks = st.keys;
  EXPECT_EQ(st.batch, 1);
  b.import_state(st);
  EXPECT_EQ(b.length(), 260);
  const CacheSnapshot sa = a.fetch(), sb = b.fetch();
  EXPECT_EQ(sa.keys, sb.keys);
  EXPECT_EQ(sa.values, sb.values);
  ks.codes.pop_back();  // a corrupted state is refused and changes nothing
  EXPECT_THROW(b.import_state(st), std::invalid_argument);
  EXPECT_EQ(b.length(), 260);
  EXPECT_THROW(a.trim(261), std::invalid_argument);
}

TEST(KVCache, RejectedUpdateChangesNothing) {
  KVCacheLayer cache(config(16, 1, 4, 0, 0));
  auto k = test_util::gaussian_rows(5, 16, 5);
  cache.update(k.data(), k.data(), 1, 5);
  auto bad = k;
  bad[3] = NAN;
  EXPECT_THROW(cache.update(k.data(), bad.data(), 1, 5), std::invalid_argument);
  bad[3] = 1e6f;  // beyond float16 for the bits = 0 value side
  EXPECT_THROW(cache.update(k.data(), bad.data(), 1, 5), std::invalid_argument);
  EXPECT_THROW(cache.update(k.data(), k.data(), 2, 1), std::invalid_argument);
  EXPECT_EQ(cache.length(), 5);
}

namespace {

// The largest |got - want| over the largest |want|.
double relative_error(const std::vector<float>& got, const std::vector<double>& want) {
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_err = std::max(max_err, std::fabs(got[i] - want[i]));
    max_ref = std::max(max_ref, std::fabs(want[i]));
  }
  return max_err / max_ref;
}

TEST(KVCache, StridedQueriesAndPositionsFirstOutputEqualTheContiguousLayout) {
  // Queries read in a model's (batch, q_len, q_heads, head_dim) layout and the output written in
  // it: bit for bit the contiguous call's rows, on both paths, threaded.
  const int d = 64;
  const int64_t batch = 2, kv_heads = 2, q_heads = 6, q_len = 40, n = 300;
  KVCacheLayer cache(config(d, kv_heads, 4, 4, 0));
  const auto kv = test_util::gaussian_rows(batch * kv_heads * n, d, 41);
  cache.update(kv.data(), kv.data(), batch, n);
  const auto model = test_util::gaussian_rows(batch * q_len * q_heads, d, 42);  // (b, l, h, d)
  std::vector<float> contiguous(model.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < q_heads; ++h)
      for (int64_t l = 0; l < q_len; ++l)
        std::copy_n(model.data() + ((b * q_len + l) * q_heads + h) * d, d,
                    contiguous.data() + ((b * q_heads + h) * q_len + l) * d);
  const RowStrides model_layout{true, q_len * q_heads * d, d, q_heads * d};
  for (AttentionPath path : {AttentionPath::kCodes, AttentionPath::kTiles}) {
    AttentionOptions o;
    o.scale = 0.125f;
    o.path = path;
    std::vector<float> want(model.size()), got(model.size());
    const AttentionReport a = cache.attention(contiguous.data(), batch, q_heads, q_len, o, want.data());
    const AttentionReport b = cache.attention(model.data(), batch, q_heads, q_len, o, got.data(), true,
                                              model_layout, model_layout);
    EXPECT_EQ(a.tiled_items, path == AttentionPath::kTiles ? a.items : 0);
    EXPECT_EQ(b.tiled_items, a.tiled_items);
    for (int64_t bb = 0; bb < batch; ++bb)
      for (int64_t h = 0; h < q_heads; ++h)
        for (int64_t l = 0; l < q_len; ++l)
          for (int64_t i = 0; i < d; ++i)
            ASSERT_EQ(got[((bb * q_len + l) * q_heads + h) * d + i], want[((bb * q_heads + h) * q_len + l) * d + i]);
  }
}

TEST(KVCache, PrefillAppendOnThePoolStoresTheSameBytes) {
  // A prefill large enough for the pool (3 streams x 1000 tokens x 128 floats), appended after 37
  // tokens so that its pieces start inside a chunk, and a second append across chunk edges: every
  // field's bytes equal a serial append's, at every level, for every width, prod mode and float16.
  const int d = 128;
  constexpr int64_t streams = 3, n = 1000;
  static_assert(streams * n * d >= TokenStore::kParallelAppendFloats, "the second append takes the pool");
  static_assert(streams * 37 * d < TokenStore::kParallelAppendFloats, "the first does not");
  ThreadPool pool(4);
  const auto x = test_util::gaussian_rows(streams * (n + 37), d, 31);
  for (SimdLevel level : supported_simd()) {
    for (SideConfig side : {SideConfig{1, Mode::kMse}, SideConfig{3, Mode::kMse}, SideConfig{4, Mode::kMse},
                            SideConfig{5, Mode::kProd}, SideConfig{8, Mode::kMse}, SideConfig{0, Mode::kMse}}) {
      TokenStore serial(side, d, 7, 0, level), threaded(side, d, 7, 0, level);
      for (TokenStore* store : {&serial, &threaded}) {
        store->set_streams(streams);
        store->append(x.data(), 37, (n + 37) * d, d, store == &threaded ? &pool : nullptr);
        store->append(x.data() + 37 * d, n, (n + 37) * d, d, store == &threaded ? &pool : nullptr);
      }
      const TokenStore::State a = serial.export_state(), b = threaded.export_state();
      EXPECT_EQ(a.chunk_length, n + 37);
      EXPECT_EQ(b.chunk_length, n + 37);
      EXPECT_EQ(a.codes, b.codes) << simd_name(level) << " bits " << side.bits;
      EXPECT_EQ(a.norms, b.norms);
      EXPECT_EQ(a.qjl, b.qjl);
      EXPECT_EQ(a.residual_norms, b.residual_norms);
      EXPECT_EQ(a.halves, b.halves);
      EXPECT_FALSE(a.codes.empty() && a.halves.empty());
    }
  }
}

}  // namespace

TEST(KVCache, SoftcapAndSinksMatchTheNaiveSoftmax) {
  const int64_t batch = 1, heads = 2, q_heads = 4, d = 32, q_len = 2, n = 300;
  KVCacheLayer cache(config(int(d), int(heads), 8, 8, 0));
  auto k = test_util::gaussian_rows(batch * heads * n, int(d), 11);
  auto v = test_util::gaussian_rows(batch * heads * n, int(d), 12);
  for (auto& x : k) x *= 4.0f;  // large scores, so that the cap bites
  cache.update(k.data(), v.data(), batch, n);
  const CacheSnapshot snap = cache.fetch();
  auto q = test_util::gaussian_rows(batch * q_heads * q_len, int(d), 13);
  const std::vector<float> sinks{-1.0f, 0.5f, 3.0f, 40.0f};  // the last outweighs every token
  const float scale = 0.3f;
  for (float softcap : {0.0f, 5.0f}) {
    for (bool with_sinks : {false, true}) {
      AttentionOptions o{scale};
      o.softcap = softcap;
      o.sinks = with_sinks ? sinks.data() : nullptr;
      std::vector<float> out(q.size());
      cache.attention(q.data(), batch, q_heads, q_len, o, out.data(), true);
      const auto want = naive_attention(q, snap.keys, snap.values, batch, heads, q_heads, q_len,
                                        snap.length, d, scale, softcap, with_sinks ? &sinks : nullptr);
      EXPECT_LT(relative_error(out, want), 1e-4) << "softcap " << softcap << " sinks " << with_sinks;
      // Without the option the result must differ: the option is not ignored.
      if (softcap > 0 || with_sinks) {
        const auto plain = naive_attention(q, snap.keys, snap.values, batch, heads, q_heads, q_len,
                                           snap.length, d, scale);
        EXPECT_GT(relative_error(out, plain), 1e-2);
      }
    }
  }
}

TEST(KVCache, RefusesNonFiniteQueriesAndBadOptions) {
  KVCacheLayer cache(config(16, 1, 4, 4, 0));
  auto k = test_util::gaussian_rows(8, 16, 14);
  cache.update(k.data(), k.data(), 1, 8);
  std::vector<float> out(2 * 16);
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    auto q = test_util::gaussian_rows(2, 16, 15);
    q[16 + 5] = bad;
    EXPECT_THROW(cache.attention(q.data(), 1, 2, 1, AttentionOptions{0.25f}, out.data()),
                 std::invalid_argument);
  }
  auto q = test_util::gaussian_rows(2, 16, 15);
  for (float scale : {0.0f, -1.0f, NAN, INFINITY}) {
    EXPECT_THROW(cache.attention(q.data(), 1, 2, 1, AttentionOptions{scale}, out.data()),
                 std::invalid_argument);
  }
  AttentionOptions o{0.25f};
  o.softcap = -1.0f;
  EXPECT_THROW(cache.attention(q.data(), 1, 2, 1, o, out.data()), std::invalid_argument);
  const std::vector<uint8_t> valid(7, 1);  // one token short of the cache
  o = AttentionOptions{0.25f};
  o.key_valid = valid.data();
  o.key_valid_tokens = 7;
  EXPECT_THROW(cache.attention(q.data(), 1, 2, 1, o, out.data()), std::invalid_argument);
}

// Keys that share one large component (as Qwen2.5's key bias makes them): coded as they are,
// the shared part takes the bits and the softmax sees noise; centred, attention is accurate.
std::vector<float> keys_with_shared_component(int64_t streams, int64_t n, int d, uint64_t seed) {
  auto k = test_util::gaussian_rows(streams * n, d, seed);
  for (int64_t r = 0; r < streams * n; ++r) {
    for (int i = 0; i < 4; ++i) k[r * d + i] += 60.0f * float(1 + i);  // ||shared|| >> ||k - mean||
  }
  return k;
}

TEST(KVCache, CentredKeysKeepAttentionExactUnderSoftcapAndSinks) {
  const int64_t batch = 2, heads = 2, q_heads = 4, d = 32, q_len = 3, n = 300;
  auto k = keys_with_shared_component(batch * heads, n, int(d), 21);
  auto v = test_util::gaussian_rows(batch * heads * n, int(d), 22);
  auto q = test_util::gaussian_rows(batch * q_heads * q_len, int(d), 23);
  const std::vector<float> sinks{-1.0f, 0.5f, 3.0f, 2.0f};
  const float scale = 0.2f;
  // The oracle: the exact keys, values decoded from the cache (values are not centred).
  double err[2][3] = {};
  for (bool centre : {false, true}) {
    CacheConfig c = config(int(d), int(heads), 4, 8, 0);
    c.center_keys = centre;
    KVCacheLayer cache(c);
    cache.update(k.data(), v.data(), batch, n);
    EXPECT_EQ(cache.key_offset().size(), centre ? size_t(batch * heads * d) : 0u);
    const CacheSnapshot snap = cache.fetch();
    int option = 0;
    for (auto [softcap, with_sinks] : {std::pair{0.0f, false}, {5.0f, false}, {0.0f, true}}) {
      AttentionOptions o{scale};
      o.softcap = softcap;
      o.sinks = with_sinks ? sinks.data() : nullptr;
      std::vector<float> out(q.size());
      cache.attention(q.data(), batch, q_heads, q_len, o, out.data(), true);
      // Fused attention equals attention over the cache's own decoded keys (offset added back).
      const auto decoded = naive_attention(q, snap.keys, snap.values, batch, heads, q_heads, q_len,
                                           n, d, scale, softcap, with_sinks ? &sinks : nullptr);
      EXPECT_LT(relative_error(out, decoded), 1e-4) << centre << " " << option;
      const auto exact = naive_attention(q, k, snap.values, batch, heads, q_heads, q_len, n, d,
                                         scale, softcap, with_sinks ? &sinks : nullptr);
      err[centre][option++] = relative_error(out, exact);
    }
  }
  for (int option = 0; option < 3; ++option) {
    EXPECT_GT(err[0][option], 0.5) << option;   // uncentred 4-bit keys: the softmax is lost
    EXPECT_LT(err[1][option], 0.25) << option;  // centred: ordinary 4-bit error
  }
}

TEST(KVCache, ReencodeKeysChangesOnlyTheKeys) {
  const int64_t batch = 1, heads = 2, d = 32, n = 40;
  CacheConfig c = config(int(d), int(heads), 3, 4, 8);
  c.center_keys = true;
  KVCacheLayer cache(c);
  auto k = keys_with_shared_component(batch * heads, n, int(d), 31);
  auto v = test_util::gaussian_rows(batch * heads * n, int(d), 32);
  cache.update(k.data(), v.data(), batch, n);
  const CacheSnapshot before = cache.fetch();
  cache.reencode_keys(SideConfig{8, Mode::kMse}, k.data(), batch, n);
  EXPECT_EQ(cache.key_side().bits, 8);
  const CacheSnapshot after = cache.fetch();
  EXPECT_EQ(after.values, before.values);
  EXPECT_LT(relative_error(after.keys, std::vector<double>(k.begin(), k.end())),
            relative_error(before.keys, std::vector<double>(k.begin(), k.end())) / 8);
  // The state carries the key side and the offset; a fresh cache continues identically.
  KVCacheLayer copy(c);
  copy.import_state(cache.export_state());
  EXPECT_EQ(copy.key_side().bits, 8);
  EXPECT_EQ(copy.key_offset(), cache.key_offset());
  EXPECT_EQ(copy.fetch().keys, after.keys);
  for (KVCacheLayer* layer : {&cache, &copy}) layer->update(k.data(), v.data(), batch, 1);
  EXPECT_EQ(copy.fetch().keys, cache.fetch().keys);
  // Only the keys of the cache's single update can be re-encoded.
  EXPECT_THROW(cache.reencode_keys(SideConfig{0}, k.data(), batch, n), std::invalid_argument);
  // Float16 keys are stored as given: no offset. clear() returns to the configured side.
  cache.clear();
  EXPECT_EQ(cache.key_side().bits, 3);
  EXPECT_TRUE(cache.key_offset().empty());
  cache.update(k.data(), v.data(), batch, n);
  cache.reencode_keys(SideConfig{0}, k.data(), batch, n);
  EXPECT_TRUE(cache.key_offset().empty());
  EXPECT_EQ(cache.fetch().keys[5], half_to_float(float_to_half(k[5])));
}

// How many parts decode splits one item's tokens into: 2 per thread wanted, each of at least 4
// blocks, or of 2 where that still gives two parts (below: 8 threads, one KV head, 256-token
// blocks). Parts of 2 blocks took 1.31x the time of parts of 4 at 4K on 16 cores.
TEST(KVCache, SequencePartsKeepAtLeastFourBlocks) {
  const int d = 64;
  ThreadPool pool(8);
  const std::vector<std::pair<int64_t, int64_t>> tokens_to_parts = {
      {400, 1}, {1024, 2}, {2048, 2}, {3000, 3}, {4096, 4}, {8192, 8}, {40000, 16}};
  for (const auto& [n, parts] : tokens_to_parts) {
    TokenStore keys(SideConfig{4, Mode::kMse}, d, 7, 0, default_simd());
    TokenStore values(SideConfig{4, Mode::kMse}, d, 8, 0, default_simd());
    keys.set_streams(1);
    values.set_streams(1);
    const auto k = test_util::gaussian_rows(n, d, 21);
    keys.append(k.data(), n, n * d, d);
    values.append(k.data(), n, n * d, d);
    const auto q = test_util::gaussian_rows(4, d, 23);
    std::vector<float> out(q.size());
    AttentionOptions o;
    o.scale = 0.125f;
    o.min_parallel_bytes = 0;  // the partition, not the small-call rule (1K tokens: 72 KiB of codes)
    const AttentionReport r = fused_attention(keys, values, q.data(), AttentionShape{1, 1, 4, 1}, o,
                                              out.data(), &pool);
    EXPECT_EQ(r.sequence_splits, parts) << n << " tokens";
  }
}

// An item's parts fall from the first to the last (guided self-scheduling) where each keeps at least
// 4 blocks; else they are equal. Expected bounds worked by hand from the linear weights: 128 blocks
// in 8 parts of weights 4, 4 - 3/7, ..., 1 (sum 20) end at 25.6, 48.5, 68.6, 85.9, 100.6, 112.5,
// 121.6 and 128 blocks.
TEST(KVCache, SequencePartBoundsFallWhereFourBlocksStayInEveryPart) {
  EXPECT_EQ(sequence_part_bounds(128, 8), (std::vector<int64_t>{0, 26, 48, 69, 86, 101, 112, 122, 128}));
  EXPECT_EQ(sequence_part_bounds(32, 8), (std::vector<int64_t>{0, 4, 8, 12, 16, 20, 24, 28, 32}));
  EXPECT_EQ(sequence_part_bounds(16, 4), (std::vector<int64_t>{0, 4, 8, 12, 16}));
  EXPECT_EQ(sequence_part_bounds(40, 1), (std::vector<int64_t>{0, 40}));
  EXPECT_EQ(sequence_part_bounds(3, 2), (std::vector<int64_t>{0, 1, 3}));
  for (int64_t blocks = 1; blocks <= 600; ++blocks) {
    for (int64_t threads : {2, 4, 8, 16, 64}) {
      for (int64_t items : {1, 2, 8, 64, 100}) {
        const int64_t parts = sequence_parts(items, threads, blocks, true);
        const auto b = sequence_part_bounds(blocks, parts);
        const std::string where = std::to_string(blocks) + " blocks in " + std::to_string(parts) + " parts";
        ASSERT_EQ(b.size(), static_cast<size_t>(parts + 1)) << where;
        ASSERT_EQ(b.front(), 0) << where;
        ASSERT_EQ(b.back(), blocks) << where;
        for (int64_t p = 0; p < parts; ++p) {
          const int64_t size = b[p + 1] - b[p];
          ASSERT_GE(size, std::min<int64_t>(kMinPartBlocks, blocks / parts)) << where;
          if (p > 0) {
            ASSERT_LE(size, b[p] - b[p - 1] + 1) << where;  // never grows (equal parts: by one at most)
          }
        }
        // The fall, give or take the rounding of each end to whole blocks.
        ASSERT_LE(b[1] - b[0], kPartFall * static_cast<double>(b[parts] - b[parts - 1] + 1)) << where;
      }
    }
  }
}

// Items number every (stream, range of query positions) once, in the order named: earliest first
// stream by stream; latest first stream by stream; or latest first with the streams in turns.
TEST(KVCache, ItemPlacesCoverEveryRangeOnceInTheOrderNamed) {
  for (const ItemOrder order : {ItemOrder::kEarliestFirst, ItemOrder::kLatestFirst, ItemOrder::kLatestInTurns}) {
    for (int64_t streams : {1, 3, 8}) {
      for (int64_t chunks : {1, 2, 25}) {
        std::vector<int> seen(static_cast<size_t>(streams * chunks), 0);
        for (int64_t item = 0; item < streams * chunks; ++item) {
          const ItemPlace at = item_place(item, streams, chunks, order);
          ASSERT_TRUE(at.stream >= 0 && at.stream < streams && at.chunk >= 0 && at.chunk < chunks);
          ++seen[static_cast<size_t>(at.stream * chunks + at.chunk)];
          if (item == 0) continue;
          const ItemPlace before = item_place(item - 1, streams, chunks, order);
          if (order == ItemOrder::kLatestInTurns) {  // streams in turns, chunks falling per turn
            ASSERT_EQ(at.stream, item % streams) << item;
            ASSERT_EQ(at.chunk, chunks - 1 - item / streams) << item;
          } else if (item % chunks != 0) {  // stream by stream
            ASSERT_EQ(at.stream, before.stream) << item;
            ASSERT_EQ(at.chunk, before.chunk + (order == ItemOrder::kLatestFirst ? -1 : 1)) << item;
          }
        }
        ASSERT_EQ(std::count(seen.begin(), seen.end(), 1), streams * chunks);
      }
    }
  }
  EXPECT_EQ(item_place(0, 3, 25, ItemOrder::kLatestFirst).chunk, 24);
  EXPECT_EQ(item_place(25, 3, 25, ItemOrder::kLatestFirst).stream, 1);
  EXPECT_EQ(item_place(25, 3, 25, ItemOrder::kLatestFirst).chunk, 24);
  EXPECT_EQ(item_place(2, 3, 25, ItemOrder::kLatestInTurns).stream, 2);
  EXPECT_EQ(item_place(3, 3, 25, ItemOrder::kLatestInTurns).chunk, 23);
  EXPECT_EQ(item_place(25, 3, 25, ItemOrder::kEarliestFirst).stream, 1);
  EXPECT_EQ(item_place(25, 3, 25, ItemOrder::kEarliestFirst).chunk, 0);
}

// Causal calls go latest first; in turns only where streams are fewer than half the threads
// (round 46: 16 threads, SmolLM2's 3 streams in turns, 12 stream by stream; 2 threads never).
TEST(KVCache, CausalCallsTakeStreamsInTurnsOnlyWhenFewerThanHalfTheThreads) {
  EXPECT_EQ(item_order(false, 3, 16), ItemOrder::kEarliestFirst);
  EXPECT_EQ(item_order(true, 3, 16), ItemOrder::kLatestInTurns);
  EXPECT_EQ(item_order(true, 7, 16), ItemOrder::kLatestInTurns);
  EXPECT_EQ(item_order(true, 8, 16), ItemOrder::kLatestFirst);
  EXPECT_EQ(item_order(true, 12, 16), ItemOrder::kLatestFirst);
  EXPECT_EQ(item_order(true, 1, 2), ItemOrder::kLatestFirst);
  EXPECT_EQ(item_order(true, 1, 1), ItemOrder::kLatestFirst);
}

// Decode with fewer items than 4 per thread splits each into ceil(2 x threads / items) parts, at
// least 2 (kDecodePartsPerThread: 4 per item at batch 1, 8 KV heads, 16 threads); prefill aims
// at 4 parts per thread; a short cache keeps 4 blocks per part.
TEST(KVCache, FewItemDecodeAimsAtTwoPartsPerThread) {
  EXPECT_EQ(sequence_parts(8, 16, 128, true), 4);
  EXPECT_EQ(sequence_parts(8, 16, 128, false), 8);
  EXPECT_EQ(sequence_parts(8, 8, 128, true), 2);
  EXPECT_EQ(sequence_parts(40, 16, 128, true), 2);  // between 2 and 4 items per thread
  EXPECT_EQ(sequence_parts(3, 2, 128, true), 2);    // 3 KV heads on 2 cores (SmolLM2)
  EXPECT_EQ(sequence_parts(3, 2, 128, false), 3);
  EXPECT_EQ(sequence_parts(1, 2, 128, true), 4);
  EXPECT_EQ(sequence_parts(1, 16, 128, true), 32);
  EXPECT_EQ(sequence_parts(1, 16, 64, true), 16);   // 64 blocks: 4 per part at most 16 parts
  EXPECT_EQ(sequence_parts(1, 2, 4, true), 2);      // 4 blocks: 2 parts of 2
  EXPECT_EQ(sequence_parts(1, 2, 3, true), 1);      // 3 blocks: no part of 2 blocks fits twice
  EXPECT_EQ(sequence_parts(8, 1, 128, true), 1);
}

// On 4 threads or more, decode with between 4 and 8 items per thread splits each item in two, the
// first part 4x the second (128 blocks: 102.4 and 25.6, rounded), where the second keeps 4 blocks;
// fewer threads, fewer blocks, more items or prefill (several query positions) keep items whole.
TEST(KVCache, ManyThreadDecodeSplitsItemsInALargeAndASmallPart) {
  EXPECT_EQ(sequence_parts(64, 16, 128, true), 2);
  EXPECT_EQ(sequence_parts(127, 16, 128, true), 2);
  EXPECT_EQ(sequence_parts(128, 16, 128, true), 1);
  EXPECT_EQ(sequence_parts(64, 16, 128, false), 1);
  EXPECT_EQ(sequence_parts(64, 16, 19, true), 1);
  EXPECT_EQ(sequence_parts(32, 8, 128, true), 2);
  EXPECT_EQ(sequence_parts(63, 8, 128, true), 2);
  EXPECT_EQ(sequence_parts(64, 8, 128, true), 1);
  EXPECT_EQ(sequence_parts(16, 4, 128, true), 2);
  EXPECT_EQ(sequence_parts(12, 3, 128, true), 1);
  EXPECT_EQ(sequence_parts(8, 2, 128, true), 1);
  EXPECT_EQ(sequence_part_bounds(128, 2), (std::vector<int64_t>{0, 102, 128}));
  EXPECT_EQ(sequence_part_bounds(20, 2), (std::vector<int64_t>{0, 16, 20}));

  // And the two parts merge to the unsplit result: 64 KV heads of 20 blocks on 16 threads.
  const int d = 32;
  const int64_t kv_heads = 64, n = 5120;
  ThreadPool pool(16);
  TokenStore keys(SideConfig{4, Mode::kMse}, d, 7, 0, default_simd());
  TokenStore values(SideConfig{4, Mode::kMse}, d, 8, 0, default_simd());
  keys.set_streams(kv_heads);
  values.set_streams(kv_heads);
  const auto k = test_util::gaussian_rows(kv_heads * n, d, 31), v = test_util::gaussian_rows(kv_heads * n, d, 32);
  keys.append(k.data(), n, n * d, d);
  values.append(v.data(), n, n * d, d);
  const auto q = test_util::gaussian_rows(kv_heads * 2, d, 33);
  std::vector<float> split(q.size()), whole(q.size());
  AttentionOptions o;
  o.scale = 0.2f;
  const AttentionShape shape{1, kv_heads, kv_heads * 2, 1};
  ASSERT_EQ(fused_attention(keys, values, q.data(), shape, o, split.data(), &pool).sequence_splits, 2);
  ASSERT_EQ(fused_attention(keys, values, q.data(), shape, o, whole.data(), nullptr).sequence_splits, 1);
  for (size_t i = 0; i < split.size(); ++i) ASSERT_NEAR(split[i], whole[i], 2e-5f) << i;
}

// K4V4 stores of 3 streams (9/3 heads) at head_dim 64, each holding `n` tokens of gaussian rows;
// append() adds the same n tokens again. The small-call tests' cache.
struct ThreeStreamStores {
  static constexpr int d = 64;
  TokenStore keys{SideConfig{4, Mode::kMse}, d, 7, 0, default_simd()};
  TokenStore values{SideConfig{4, Mode::kMse}, d, 8, 0, default_simd()};
  int64_t n;
  std::vector<float> k, v;
  ThreeStreamStores(int64_t n_, uint32_t seed)
      : n(n_), k(test_util::gaussian_rows(3 * n_, d, seed)), v(test_util::gaussian_rows(3 * n_, d, seed + 1)) {
    keys.set_streams(3);
    values.set_streams(3);
    append();
  }
  void append() {
    keys.append(k.data(), n, n * d, d);
    values.append(v.data(), n, n * d, d);
  }
};

// A decode call whose cache is small for the pool's threads runs on the calling thread (its bytes of
// codes x (query heads per KV head + 4) / 8 under kMinParallelBytes / (threads - 1)); min_parallel_bytes
// 0 always uses the pool; prefill (q_len > 1) keeps the pool; a negative threshold is refused.
TEST(KVCache, SmallDecodeCallsSkipThePool) {
  const int d = ThreeStreamStores::d;
  ThreadPool pool(2);
  ThreeStreamStores stores(1024, 41);  // 3 x 1024 x 72 = 221,184 bytes, x 7 / 8 < 262,144
  TokenStore &keys = stores.keys, &values = stores.values;
  const int64_t per_token = keys.bytes_per_token() + values.bytes_per_token();
  ASSERT_EQ(per_token, 2 * (32 + 4));  // 4-bit codes of 64 coordinates and a float32 norm, each side
  const auto q = test_util::gaussian_rows(9 * 2, d, 43);
  std::vector<float> out(q.size()), serial(q.size());
  AttentionOptions o;
  o.scale = 0.125f;
  const AttentionShape decode{1, 3, 9, 1}, prefill{1, 3, 9, 2};
  EXPECT_EQ(fused_attention(keys, values, q.data(), decode, o, out.data(), &pool).threads, 1);
  EXPECT_EQ(fused_attention(keys, values, q.data(), prefill, o, out.data(), &pool).threads, 2);
  fused_attention(keys, values, q.data(), decode, o, serial.data(), nullptr);
  o.min_parallel_bytes = 0;
  const AttentionReport forced = fused_attention(keys, values, q.data(), decode, o, out.data(), &pool);
  EXPECT_EQ(forced.threads, 2);
  for (size_t i = 0; i < 9 * d; ++i) ASSERT_NEAR(out[i], serial[i], 2e-5f) << i;
  o.min_parallel_bytes = -1;
  EXPECT_THROW(fused_attention(keys, values, q.data(), decode, o, out.data(), &pool), std::invalid_argument);
  // 2,048 tokens (442,368 bytes, x 7 / 8 = 387,072) are worth the second thread.
  o.min_parallel_bytes = kMinParallelBytes;
  stores.append();
  EXPECT_EQ(fused_attention(keys, values, q.data(), decode, o, out.data(), &pool).threads, 2);
  EXPECT_EQ(fused_attention(keys, values, q.data(), decode, o, out.data(), nullptr).threads, 1);
}

// On many threads the threshold divided by the extra threads stops at 3/8 of it (96 KiB): 3 KV heads
// of 512 tokens at head_dim 64 (110,592 bytes, x 7 / 8 = 96,768) stay on the calling thread of a
// 16-thread pool, where 1,024 tokens (193,536 weighted) and a zero threshold wake it.
TEST(KVCache, SmallDecodeCallsSkipThePoolOfManyThreads) {
  const int d = ThreeStreamStores::d;
  const int64_t n = 512;
  ThreadPool pool(16);
  ThreeStreamStores stores(n, 51);
  TokenStore &keys = stores.keys, &values = stores.values;
  const auto q = test_util::gaussian_rows(9, d, 53);
  std::vector<float> out(q.size());
  AttentionOptions o;
  o.scale = 0.125f;
  const AttentionShape decode{1, 3, 9, 1};
  ASSERT_LT(3 * n * (keys.bytes_per_token() + values.bytes_per_token()) * 7 / 8, kMinParallelBytes / 8 * 3);
  EXPECT_EQ(fused_attention(keys, values, q.data(), decode, o, out.data(), &pool).threads, 1);
  o.min_parallel_bytes = 0;
  EXPECT_EQ(fused_attention(keys, values, q.data(), decode, o, out.data(), &pool).threads, 16);
  o.min_parallel_bytes = kMinParallelBytes;
  stores.append();
  EXPECT_EQ(fused_attention(keys, values, q.data(), decode, o, out.data(), &pool).threads, 16);
}

// Decode whose parts fall in size merges to the unsplit result: one KV head, 157 blocks on 4
// threads, 8 parts of 31 blocks down to 8 (the weights' ends at 31.4, 59.4, 84.1, 105.4, 123.4,
// 137.9, 149.2 and 157 blocks).
TEST(KVCache, SequenceSplitDecodeOfFallingPartsEqualsOneSweep) {
  const int d = 64;
  const int64_t n = 40000;
  ThreadPool pool(4);
  ASSERT_EQ(sequence_part_bounds(157, 8), (std::vector<int64_t>{0, 31, 59, 84, 105, 123, 138, 149, 157}));
  TokenStore keys(SideConfig{4, Mode::kMse}, d, 7, 0, default_simd());
  TokenStore values(SideConfig{4, Mode::kMse}, d, 8, 0, default_simd());
  keys.set_streams(1);
  values.set_streams(1);
  const auto k = test_util::gaussian_rows(n, d, 21), v = test_util::gaussian_rows(n, d, 22);
  keys.append(k.data(), n, n * d, d);
  values.append(v.data(), n, n * d, d);
  const auto q = test_util::gaussian_rows(4, d, 23);
  std::vector<float> split(q.size()), whole(q.size());
  AttentionOptions o;
  o.scale = 0.125f;
  const AttentionShape shape{1, 1, 4, 1};
  ASSERT_EQ(fused_attention(keys, values, q.data(), shape, o, split.data(), &pool).sequence_splits, 8);
  ASSERT_EQ(fused_attention(keys, values, q.data(), shape, o, whole.data(), nullptr).sequence_splits, 1);
  for (size_t i = 0; i < split.size(); ++i) ASSERT_NEAR(split[i], whole[i], 2e-5f) << i;
}

// Decode with fewer (batch, kv head) items than threads splits every item's tokens into parts that
// are attended side by side and merged (flash-decoding). The merged result equals the unsplit one
// and the double-precision oracle, on both paths, under sinks, softcap, a key mask and a window,
// and with a float16 window after the chunks.
TEST(KVCache, SequenceSplitDecodeEqualsOneSweep) {
  const int d = 64;
  const int64_t kv_heads = 1, q_heads = 4, n = 3900;  // 16 blocks: up to 4 parts of 4 blocks
  ThreadPool pool(8);
  for (SimdLevel level : supported_simd()) {
    for (int64_t residual : {int64_t{0}, int64_t{100}}) {
      TokenStore keys(SideConfig{4, Mode::kMse}, d, 7, residual, level);
      TokenStore values(SideConfig{3, Mode::kMse}, d, 8, residual, level);
      const auto k = test_util::gaussian_rows(n, d, 21), v = test_util::gaussian_rows(n, d, 22);
      keys.set_streams(kv_heads);
      values.set_streams(kv_heads);
      keys.append(k.data(), n, n * d, d);
      values.append(v.data(), n, n * d, d);
      std::vector<float> kd(size_t(n) * d), vd(size_t(n) * d);
      keys.decode_stream(0, kd.data());
      values.decode_stream(0, vd.data());
      std::vector<uint8_t> valid(n, 1);
      for (int64_t t = 300; t < 420; ++t) valid[t] = 0;
      const std::vector<float> sinks = {0.5f, -1.0f, 2.0f, 0.0f};
      for (AttentionPath path : {AttentionPath::kCodes, AttentionPath::kTiles}) {
        for (int64_t q_len : {int64_t{1}, int64_t{3}}) {
          for (int option = 0; option < 3; ++option) {
            AttentionOptions o;
            o.scale = 0.15f;
            o.path = path;
            if (option == 1) {
              o.softcap = 20.0f;
              o.sinks = sinks.data();
              o.key_valid = valid.data();
              o.key_valid_tokens = n;
            }
            if (option == 2) o.window = 700;
            const auto q = test_util::gaussian_rows(q_heads * q_len, d, 23);
            std::vector<float> split(q.size()), whole(q.size());
            const AttentionShape shape{1, kv_heads, q_heads, q_len};
            const AttentionReport by_parts = fused_attention(keys, values, q.data(), shape, o, split.data(), &pool);
            const AttentionReport at_once = fused_attention(keys, values, q.data(), shape, o, whole.data(), nullptr);
            const std::string where = std::string(simd_name(level)) + " residual " + std::to_string(residual) +
                                      " q_len " + std::to_string(q_len) + " option " + std::to_string(option) +
                                      (path == AttentionPath::kTiles ? " tiles" : " codes");
            ASSERT_EQ(by_parts.sequence_splits, 4) << where;
            ASSERT_EQ(at_once.sequence_splits, 1) << where;
            ASSERT_EQ(by_parts.tiled_items, path == AttentionPath::kTiles ? 1 : 0) << where;
            for (size_t i = 0; i < split.size(); ++i) ASSERT_NEAR(split[i], whole[i], 2e-5f) << where;
            if (!o.key_valid) {  // (the mask is covered by the equality above and other tests)
              const auto want = naive_attention(q, kd, vd, 1, kv_heads, q_heads, q_len, n, d, o.scale,
                                                o.softcap, o.sinks ? &sinks : nullptr, true, o.window);
              EXPECT_LT(relative_error(split, want), 1e-5) << where;
            }
          }
        }
      }
    }
  }
}
