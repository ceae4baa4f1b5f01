#include "turbokv/attention.hpp"

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <new>
#include <cfloat>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels.hpp"
#include "sequence_parts.hpp"

namespace turbokv {
namespace {

constexpr int64_t kBlock = TokenStore::kChunkTokens;

// Allocates on 64-byte boundaries: the tiles' and accumulators' rows (multiples of 64 bytes at
// head_dim 64 and 128 and kBlock tokens) then start on cache lines, so no 512-bit load or store
// of the prefill products splits across two.
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  bool operator==(const CacheLineAllocator&) const { return true; }
  bool operator!=(const CacheLineAllocator&) const { return false; }
};
using Floats = std::vector<float, CacheLineAllocator<float>>;

// One of a work item's float arrays: a piece of its single allocation (StreamWork::arena), each
// piece starting on a cache line. As 14 vectors per item, most of 2-5 KB, each such malloc first
// consolidated the small chunks freed before it: a quarter of a decode call over a short cache
// went to malloc and free (16 tokens, 8 KV heads; session 56).
struct FloatSpan {
  float* p = nullptr;
  size_t n = 0;
  float* data() const { return p; }
  float* begin() const { return p; }
  float* end() const { return p + n; }
  bool empty() const { return n == 0; }
  float& operator[](size_t i) const { return p[i]; }
};

// A run of tokens [t, t + count) of one stream that is stored one way.
struct Segment {
  int64_t count = 0;
  ConstEncodedBuffers codes;        // encoded tokens
  const uint16_t* halves = nullptr;  // float16 tokens (chunks of a bits = 0 side, or the window)
};

Segment segment_at(const TokenStore& st, int64_t s, int64_t t) {
  Segment seg;
  const int64_t d = st.head_dim();
  if (t < st.chunk_length()) {
    const int64_t c = t / kBlock, offset = t % kBlock;
    seg.count = std::min(kBlock - offset, st.chunk_length() - t);
    if (st.full_precision()) {
      seg.halves = st.chunk_halves(s, c) + offset * d;
    } else {
      const Codec& codec = *st.codec();
      seg.codes = st.chunk_codes(s, c);
      seg.codes.codes += offset * static_cast<int64_t>(codec.code_bytes());
      seg.codes.norms = static_cast<const uint8_t*>(seg.codes.norms) + offset * codec.norm_bytes();
      seg.codes.qjl_signs += offset * static_cast<int64_t>(codec.qjl_bytes());
      seg.codes.residual_norms =
          static_cast<const uint8_t*>(seg.codes.residual_norms) + offset * codec.norm_bytes();
    }
  } else {
    const int64_t w = t - st.chunk_length();
    seg.count = st.window_length() - w;
    seg.halves = st.window_halves(s) + w * d;
  }
  return seg;
}

// One work item: the query rows of one stream for query positions [q_first, q_first + q_count);
// row r is position q_first + (r % q_count) of query head r / q_count of the stream's group.
struct StreamWork {
  const TokenStore& keys;
  const TokenStore& values;
  const kernels::KernelSet& k;
  int64_t d, rows, q_len, q_first, q_count, length, window;
  float scale, softcap;
  bool tiles, causal;
  bool int8 = false;  // score the key codes in int8 (set before reset)
  ValuePrecision value_precision = ValuePrecision::kExact;  // how value codes are summed
  const uint8_t* valid = nullptr;  // this stream's batch row of key_valid, or nullptr
  std::vector<float> row_sink;     // the sink logit of each row's query head; empty: no sinks
  std::vector<float> row_offset;   // q . key_offset per row (raw score units); empty: none
  Floats arena;  // every FloatSpan below, zeroed at construction
  // Per-row state of the online softmax and the three value accumulators.
  FloatSpan q, q_rotated, q_sketched, scores, row_max, row_sum, acc_rotated, acc_sketch, acc_dense, scratch;
  // Tiles path: one block decoded. Keys transposed (d x kBlock, plus the sketch terms in prod
  // mode), values as rows (kBlock x d).
  FloatSpan key_tile, key_sketch_tile, value_tile, value_sketch_tile;
  // Int8 scores: the rotated queries rounded, one scale per row.
  std::vector<int8_t> q8;
  std::vector<int16_t> q16;  // instead of q8 for 5-8-bit keys (Codec::scores_use_int16)
  std::vector<float> q8_scale;

  StreamWork(const TokenStore& k_store, const TokenStore& v_store, const kernels::KernelSet& ks,
             int64_t group, int64_t q_len_, int64_t q_first_, int64_t q_count_, float scale_,
             float softcap_, bool tiles_, bool causal_, int64_t window_)
      : keys(k_store), values(v_store), k(ks), d(k_store.head_dim()), rows(group * q_count_),
        q_len(q_len_), q_first(q_first_), q_count(q_count_), length(k_store.length()),
        window(window_), scale(scale_), softcap(softcap_), tiles(tiles_), causal(causal_) {
    const size_t rd = static_cast<size_t>(rows * d), tile = static_cast<size_t>(kBlock * d);
    const bool key_sketch = tiles && keys.codec() && keys.codec()->config().mode == Mode::kProd;
    const bool value_sketch = tiles && values.codec() && values.codec()->config().mode == Mode::kProd;
    const std::pair<FloatSpan*, size_t> pieces[] = {
        {&q, rd}, {&q_rotated, rd}, {&q_sketched, rd}, {&scores, static_cast<size_t>(rows * kBlock)},
        {&row_max, static_cast<size_t>(rows)}, {&row_sum, static_cast<size_t>(rows)},
        {&acc_rotated, rd}, {&acc_sketch, rd}, {&acc_dense, rd},
        {&key_tile, tiles ? tile : 0}, {&value_tile, tiles ? tile : 0},
        {&key_sketch_tile, key_sketch ? tile : 0}, {&value_sketch_tile, value_sketch ? tile : 0},
        {&scratch, tiles ? 0 : static_cast<size_t>((rows + 1) * kBlock)}};
    const auto lines = [](size_t n) { return (n + 15) / 16 * 16; };  // whole 64-byte lines of floats
    size_t total = 0;
    for (const auto& piece : pieces) total += lines(piece.second);
    arena.resize(total);
    size_t at = 0;
    for (const auto& [span, n] : pieces) {
      *span = FloatSpan{n ? arena.data() + at : nullptr, n};
      at += lines(n);
    }
  }
  // The spans point into this object's arena.
  StreamWork(const StreamWork&) = delete;
  StreamWork& operator=(const StreamWork&) = delete;

  // Row r sees tokens [hidden(r), visible(r)): causal, the newest q_len tokens are the queries'
  // own; a sliding window hides all but the newest `window` of them.
  int64_t visible(int64_t r) const {
    return causal ? length - q_len + q_first + (r % q_count) + 1 : length;
  }
  int64_t hidden(int64_t r) const { return window > 0 ? std::max<int64_t>(0, visible(r) - window) : 0; }

  // Clears the softmax state and prepares the queries (q must be filled).
  void reset() {
    std::fill(row_max.begin(), row_max.end(), -INFINITY);
    std::fill(row_sum.begin(), row_sum.end(), 0.0f);
    std::fill(acc_rotated.begin(), acc_rotated.end(), 0.0f);
    std::fill(acc_sketch.begin(), acc_sketch.end(), 0.0f);
    std::fill(acc_dense.begin(), acc_dense.end(), 0.0f);
    if (keys.codec()) keys.codec()->prepare_queries(q.data(), rows, d, q_rotated.data(), q_sketched.data());
    if (int8) {
      q8_scale.resize(static_cast<size_t>(rows));
      if (keys.codec()->scores_use_int16()) {
        q16.resize(static_cast<size_t>(rows * d));
        keys.codec()->prepare_queries_int16(q_rotated.data(), rows, q16.data(), q8_scale.data());
      } else {
        q8.resize(static_cast<size_t>(rows * d));
        keys.codec()->prepare_queries_int8(q_rotated.data(), rows, q8.data(), q8_scale.data());
      }
    }
  }

  // Attends stream s's tokens in [t_begin, t_end) (clipped to what some row sees).
  void accumulate(int64_t s, int64_t t_begin, int64_t t_end) {
    // The last position of the range sees the most: tokens past it are nobody's.
    const int64_t end = std::min(t_end, causal ? length - q_len + q_first + q_count : length);
    // The first position of the range sees the oldest: tokens before its window are nobody's.
    for (int64_t t = std::max(t_begin, hidden(0)); t < end;) {
      const Segment ks = segment_at(keys, s, t), vs = segment_at(values, s, t);
      const int64_t n = std::min({ks.count, vs.count, end - t});
      if (tiles) {
        block_tiles(t, n, ks, vs);
      } else {
        block_codes(t, n, ks, vs);
      }
      t += n;
    }
  }

  // Merges the state of another part of the same rows (other tokens) into this one: both online
  // softmaxes are rescaled to the larger maximum (flash-decoding's reduction).
  void absorb(const StreamWork& other) {
    for (int64_t r = 0; r < rows; ++r) {
      if (other.row_max[r] == -INFINITY) continue;  // the other part saw nothing for this row
      const float top = std::max(row_max[r], other.row_max[r]);
      const float mine = std::exp(row_max[r] - top), theirs = std::exp(other.row_max[r] - top);
      row_max[r] = top;
      row_sum[r] = row_sum[r] * mine + other.row_sum[r] * theirs;
      for (auto [acc, add] : {std::pair{&acc_rotated, &other.acc_rotated},
                              std::pair{&acc_sketch, &other.acc_sketch},
                              std::pair{&acc_dense, &other.acc_dense}}) {
        float* a = acc->data() + r * d;
        const float* b = add->data() + r * d;
        for (int64_t i = 0; i < d; ++i) a[i] = a[i] * mine + b[i] * theirs;
      }
    }
  }

  void finish(float* const out_rows[]) {
    for (int64_t r = 0; r < rows; ++r) {
      float* out = out_rows[r];
      // The accumulators hold sum_t exp(s_t - row_max) v_t. A sink adds exp(sink - row_max) to
      // the denominator only; both are rescaled to the larger of the two maxima first.
      float sum = row_sum[r], factor = 1.0f;
      if (!row_sink.empty()) {
        const float sink = row_sink[static_cast<size_t>(r)];
        const float top = std::max(row_max[r], sink);
        factor = row_sum[r] > 0.0f ? std::exp(row_max[r] - top) : 0.0f;
        sum = row_sum[r] * factor + std::exp(sink - top);
      }
      const float inv = sum > 0.0f ? factor / sum : 0.0f;
      if (values.codec()) {
        values.codec()->finish_accumulated(acc_rotated.data() + r * d, acc_sketch.data() + r * d, out);
      } else {
        std::fill(out, out + d, 0.0f);
      }
      for (int64_t i = 0; i < d; ++i) out[i] = (out[i] + acc_dense[r * d + i]) * inv;
    }
  }

  // Row r's raw scores for tokens [t0, t0 + n) become its softmax weights under the running
  // maximum (scaled, capped, masked, exponentiated; zero past what it sees), and its running sum
  // and accumulators are rescaled to that maximum. Returns false (row all zero) if it sees none.
  bool softmax_row(int64_t r, float* row, int64_t t0, int64_t n) {
    const int64_t limit = std::clamp<int64_t>(visible(r) - t0, 0, n);
    if (!row_offset.empty()) {
      for (int64_t j = 0; j < limit; ++j) row[j] += row_offset[static_cast<size_t>(r)];
    }
    float row_scale = scale;
    if (softcap > 0.0f) {  // as transformers' eager Gemma 2: tanh((s * scale) / cap) * cap
      for (int64_t j = 0; j < limit; ++j) row[j] = std::tanh(row[j] * scale / softcap) * softcap;
      row_scale = 1.0f;
    }
    if (valid) {  // after the softcap: tanh would turn a masked -inf into -softcap
      for (int64_t j = 0; j < limit; ++j) {
        if (!valid[t0 + j]) row[j] = -INFINITY;
      }
    }
    const int64_t before = std::clamp<int64_t>(hidden(r) - t0, 0, limit);  // left its window
    std::fill(row, row + before, -INFINITY);
    const float block_max = k.scale_max(row, limit, row_scale);
    if (limit == 0 || block_max == -INFINITY) {  // nothing visible in this block
      std::fill(row, row + n, 0.0f);
      return false;
    }
    // Online softmax: rescale what was accumulated under the old maximum.
    const float new_max = std::max(row_max[r], block_max);
    const float correction = std::exp(row_max[r] - new_max);  // exp(-inf) = 0 on the first block
    row_max[r] = new_max;
    const float block_sum = k.exp_shifted(row, limit, new_max);
    std::fill(row + limit, row + n, 0.0f);
    row_sum[r] = row_sum[r] * correction + block_sum;
    if (correction != 1.0f) {
      for (float* acc : {acc_rotated.data(), acc_sketch.data(), acc_dense.data()}) {
        float* a = acc + r * d;
        for (int64_t i = 0; i < d; ++i) a[i] *= correction;
      }
    }
    return true;
  }

  void block_codes(int64_t t0, int64_t n, const Segment& ks, const Segment& vs) {
    // The value codes of this block are needed right after the scores: the score kernels fetch
    // value row j beside key j (RowsAhead); beside float16 keys they are all requested now, so
    // that the first pass over them does not wait on memory.
    const uint8_t* value_rows = vs.halves ? nullptr : vs.codes.codes;
    const int64_t value_bytes = value_rows ? static_cast<int64_t>(values.codec()->code_bytes()) : 0;
    if (value_rows && ks.halves) kernels::prefetch_lines(value_rows, n * value_bytes);
    // The norms of both sides (float16: 512 bytes per 256 tokens), read after the codes of each
    // side: a few lines, fetched now.
    if (!ks.halves) kernels::prefetch_lines(ks.codes.norms, n * static_cast<int64_t>(keys.codec()->norm_bytes()));
    if (!vs.halves) kernels::prefetch_lines(vs.codes.norms, n * static_cast<int64_t>(values.codec()->norm_bytes()));
    if (ks.halves) {
      k.dot_half(q.data(), static_cast<int>(rows), ks.halves, n, static_cast<int>(d), scores.data(), n);
    } else if (int8 && keys.codec()->scores_use_int16()) {
      keys.codec()->scores_prepared_int16(q16.data(), q8_scale.data(), q_sketched.data(), rows,
                                          ks.codes, n, scores.data(), n, value_rows, value_bytes);
    } else if (int8) {
      keys.codec()->scores_prepared_int8(q8.data(), q8_scale.data(), q_sketched.data(), rows,
                                         ks.codes, n, scores.data(), n, value_rows, value_bytes);
    } else {
      keys.codec()->scores_prepared(q_rotated.data(), q_sketched.data(), rows, ks.codes, n,
                                    scores.data(), n, value_rows, value_bytes);
    }
    bool any_visible = false;
    for (int64_t r = 0; r < rows; ++r) any_visible |= softmax_row(r, scores.data() + r * n, t0, n);
    if (!any_visible) return;
    if (vs.halves) {
      k.axpy_half(scores.data(), n, static_cast<int>(rows), vs.halves, n, static_cast<int>(d),
                  acc_dense.data());
    } else {
      values.codec()->accumulate(scores.data(), n, rows, vs.codes, n, acc_rotated.data(),
                                 acc_sketch.data(), scratch.data(), value_precision);
    }
  }

  void block_tiles(int64_t t0, int64_t n, const Segment& ks, const Segment& vs) {
    // Causal: in every query head, positions before `first` see none of this block.
    const int64_t base = length - q_len + q_first;  // the position before the range's first
    const int64_t first = causal ? std::clamp<int64_t>(t0 - base, 0, q_count) : 0;
    // Sliding window: positions from `stop` on have left this block behind.
    const int64_t stop =
        window > 0 ? std::clamp<int64_t>(t0 + n - 1 + window - base, first, q_count) : q_count;
    const int64_t m = stop - first;
    const int64_t group = rows / q_count;
    if (m == 0) return;
    const int di = static_cast<int>(d), ni = static_cast<int>(n);
    // Scores: the queries of each head against the transposed key tile.
    const float* query = q_rotated.data();
    if (ks.halves) {
      k.from_half(ks.halves, value_tile.data(), n * d);  // value_tile is free until the values
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t i = 0; i < d; ++i) key_tile[i * kBlock + j] = value_tile[j * d + i];
      }
      query = q.data();
    } else {
      keys.codec()->decode_terms(ks.codes, n, 1.0f, 1.0f, true, kBlock, key_tile.data(),
                                 key_sketch_tile.data());
    }
    // Every head's rows [first, stop) in one product where they are all of them (decode, a block
    // every position sees): the register-blocked kernel then reuses each tile load across rows
    // (K8V4 decode at 32K, 64/8 heads, one thread on Zen 3: one product per head took 1.6x the time).
    const bool whole = first == 0 && stop == q_count;
    const int64_t bands = whole ? 1 : group;
    const int band_rows = static_cast<int>(whole ? group * q_count : m);
    bool any_visible = false;
    for (int64_t g = 0; g < bands; ++g) {
      const int64_t r0 = g * q_count + first;
      float* out = scores.data() + r0 * kBlock;
      k.gemm(query + r0 * d, d, key_tile.data(), kBlock, out, kBlock, band_rows, ni, di, false);
      if (!ks.halves && !key_sketch_tile.empty()) {
        k.gemm(q_sketched.data() + r0 * d, d, key_sketch_tile.data(), kBlock, out, kBlock, band_rows, ni,
               di, true);
      }
      for (int64_t r = r0; r < r0 + band_rows; ++r) any_visible |= softmax_row(r, scores.data() + r * kBlock, t0, n);
    }
    if (!any_visible) return;
    // Values: the weights of each head times the value tile, into the matching accumulator.
    float* acc = acc_rotated.data();
    if (vs.halves) {
      k.from_half(vs.halves, value_tile.data(), n * d);
      acc = acc_dense.data();
    } else {
      const Codec::TermScales sc = values.codec()->value_scales();
      values.codec()->decode_terms(vs.codes, n, sc.main, sc.sketch, false, d, value_tile.data(),
                                   value_sketch_tile.data());
    }
    for (int64_t g = 0; g < bands; ++g) {
      const int64_t r0 = g * q_count + first;
      const float* weights = scores.data() + r0 * kBlock;
      k.gemm(weights, kBlock, value_tile.data(), d, acc + r0 * d, d, band_rows, di, ni, true);
      if (!vs.halves && !value_sketch_tile.empty()) {
        k.gemm(weights, kBlock, value_sketch_tile.data(), d, acc_sketch.data() + r0 * d, d, band_rows, di,
               ni, true);
      }
    }
  }
};

// Throws if any query row holds NaN or Inf: a non-finite query would otherwise be skipped by the
// max and exp kernels and come back as zeros, hiding an overflow upstream.
void check_finite_queries(const kernels::KernelSet& ks, const float* q, const AttentionShape& shape,
                          int64_t d) {
  const int64_t rows = shape.batch * shape.q_heads * shape.q_len;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t l = r % shape.q_len, h = (r / shape.q_len) % shape.q_heads,
                  b = r / (shape.q_len * shape.q_heads);
    const float* row = q + shape.row(shape.queries, b, h, l, d);
    if (ks.sum_squares(row, static_cast<int>(d)) <= FLT_MAX) continue;  // fast path: all finite
    for (int64_t i = 0; i < d; ++i) {
      if (!std::isfinite(row[i])) {
        throw std::invalid_argument("queries hold NaN or Inf (batch " + std::to_string(b) +
                                    ", head " + std::to_string(h) + ", position " +
                                    std::to_string(l) + "): an overflow upstream of attention");
      }
    }
  }
}

void check_options(const AttentionOptions& o, int64_t q_heads, int64_t length) {
  if (!(std::isfinite(o.scale) && o.scale > 0.0f)) {
    throw std::invalid_argument("scale must be finite and > 0, got " + std::to_string(o.scale));
  }
  if (!(std::isfinite(o.softcap) && o.softcap >= 0.0f)) {
    throw std::invalid_argument("softcap must be finite and > 0 (0 = none), got " +
                                std::to_string(o.softcap));
  }
  if (o.min_parallel_bytes < 0) {
    throw std::invalid_argument("min_parallel_bytes must be >= 0 (0 = always the pool), got " +
                                std::to_string(o.min_parallel_bytes));
  }
  if (o.sinks) {
    for (int64_t h = 0; h < q_heads; ++h) {
      if (!std::isfinite(o.sinks[h])) throw std::invalid_argument("sinks hold NaN or Inf");
    }
  }
  if (o.window < 0 || (o.window > 0 && !o.causal)) {
    throw std::invalid_argument("window must be >= 0 (0 = none) and needs causal attention, got " +
                                std::to_string(o.window));
  }
  if (o.key_valid && o.key_valid_tokens != length) {
    throw std::invalid_argument("key_mask covers " + std::to_string(o.key_valid_tokens) +
                                " tokens but the cache holds " + std::to_string(length));
  }
}

}  // namespace

AttentionReport fused_attention(const TokenStore& keys, const TokenStore& values, const float* queries,
                                const AttentionShape& shape, const AttentionOptions& options,
                                float* out, ThreadPool* pool) {
  const int64_t d = keys.head_dim();
  if (values.head_dim() != d) throw std::invalid_argument("keys and values differ in head_dim");
  if (shape.kv_heads <= 0 || shape.q_heads % shape.kv_heads != 0) {
    throw std::invalid_argument("q_heads (" + std::to_string(shape.q_heads) +
                                ") must be a multiple of kv_heads (" + std::to_string(shape.kv_heads) + ")");
  }
  if (keys.streams() != shape.batch * shape.kv_heads || values.streams() != keys.streams()) {
    const int64_t held = keys.streams();
    throw std::invalid_argument(
        "queries have batch " + std::to_string(shape.batch) + " (" + std::to_string(shape.batch * shape.kv_heads) +
        " streams of " + std::to_string(shape.kv_heads) + " KV heads) but the cache holds " + std::to_string(held) +
        " streams" + (held % shape.kv_heads == 0 ? " (batch " + std::to_string(held / shape.kv_heads) + ")" : ""));
  }
  if (keys.length() != values.length()) throw std::logic_error("keys and values differ in length");
  if (options.causal && shape.q_len > keys.length()) {
    throw std::invalid_argument("q_len " + std::to_string(shape.q_len) + " exceeds the " +
                                std::to_string(keys.length()) +
                                " cached tokens: update the cache with this step's keys and values first");
  }
  check_options(options, shape.q_heads, keys.length());
  const int64_t group = shape.q_heads / shape.kv_heads;
  const kernels::KernelSet& ks = kernels::kernel_set(keys.simd_level());
  check_finite_queries(ks, queries, shape, d);
  // Query positions per work item: about kItemRows rows (query heads x positions), so a tile of
  // scores (rows x 256 floats) stays in L2 and a long prompt gives every core work even when
  // batch x kv_heads is small. Decode (q_len 1) keeps one item per stream.
  constexpr int64_t kItemRows = 256;
  const int64_t chunk = std::min(shape.q_len, std::max<int64_t>(1, kItemRows / group));
  const int64_t chunks = (shape.q_len + chunk - 1) / chunk;
  const int64_t streams = keys.streams();
  const int64_t items = streams * chunks;
  if (pool && shape.q_len == 1 && pool->size() > 1) {
    // The codes' bytes, weighted by (query heads per KV head + 4) / 8: a key's lookups, norm and
    // softmax cost the same at any head count, its products one per query head. Break-even on a
    // 2-core Zen 4 VM at head_dim 64: 12/12 heads ~512 tokens (442 KB), 9/3 ~1.3K, 14/2 ~1K.
    const int64_t bytes = streams * keys.length() * (keys.bytes_per_token() + values.bytes_per_token());
    const int64_t weighted = bytes * (group + 4) / 8;
    if (weighted * (pool->size() - 1) < options.min_parallel_bytes ||
        weighted < options.min_parallel_bytes / 8 * 3) {
      pool = nullptr;  // waking the pool would cost more than it saves (kMinParallelBytes)
    }
  }
  // Decode with fewer items than kPartsPerThread x threads (small batch x kv_heads): each item's
  // tokens are also split into parts of whole blocks, attended side by side and merged
  // (flash-decoding), so that every core gets work; on many cores, decode also splits a few more
  // items so that the call ends on short parts (sequence_parts.hpp).
  const int64_t threads = pool ? pool->size() : 1;
  // Which stream and range of query positions item i covers: a causal prompt's costliest first.
  const ItemOrder order = item_order(options.causal, streams, threads);
  auto place = [streams, chunks, order](int64_t item) { return item_place(item, streams, chunks, order); };
  const int64_t blocks = (keys.length() + kBlock - 1) / kBlock;
  const int64_t splits = sequence_parts(items, threads, blocks, shape.q_len == 1);
  const std::vector<int64_t> part_bounds = sequence_part_bounds(blocks, splits);
  const int64_t tile_rows = min_tile_rows(keys.side().bits, values.side().bits, keys.simd_level());
  const bool int8_keys = options.scores == ScorePrecision::kInt8 && keys.codec() &&
                         keys.codec()->int8_scores_supported();
  const bool int8_values = options.values == ValuePrecision::kInt8 && values.codec() &&
                           values.codec()->int8_values_supported();
  std::vector<std::unique_ptr<StreamWork>> parts(static_cast<size_t>(items * splits));
  std::vector<std::vector<float*>> out_rows(static_cast<size_t>(items));
  // The work of one item with its queries loaded; `keep_rows`: record where its rows go (once per
  // item, so that parts of one item never write the same slot).
  auto make = [&](int64_t item, bool keep_rows) {
    const ItemPlace at = place(item);
    const int64_t s = at.stream, c = at.chunk;
    const int64_t b = s / shape.kv_heads, h = s % shape.kv_heads;
    const int64_t first = c * chunk, count = std::min(chunk, shape.q_len - first);
    const int64_t rows = group * count;
    const bool tiles = options.path == AttentionPath::kTiles ||
                       (options.path == AttentionPath::kAuto && rows >= tile_rows);
    auto w = std::make_unique<StreamWork>(keys, values, ks, group, shape.q_len, first, count,
                                          options.scale, options.softcap, tiles, options.causal,
                                          options.window);
    w->int8 = int8_keys && !tiles;
    if (int8_values && !tiles) w->value_precision = ValuePrecision::kInt8;
    if (options.key_valid) w->valid = options.key_valid + b * keys.length();
    if (options.sinks) w->row_sink.resize(static_cast<size_t>(rows));
    // Centred keys: the softmax alone ignores the per-query constant q . offset, a softcap or a
    // sink does not.
    const bool add_offset = options.key_offset && (options.sinks || options.softcap > 0.0f);
    if (add_offset) w->row_offset.resize(static_cast<size_t>(rows));
    std::vector<float*> rows_out(static_cast<size_t>(rows));
    for (int64_t g = 0; g < group; ++g) {
      const int64_t head = h * group + g;  // query heads of kv head h: contiguous, as repeat_kv
      for (int64_t l = 0; l < count; ++l) {
        const size_t r = static_cast<size_t>(g * count + l);
        const float* qrow = queries + shape.row(shape.queries, b, head, first + l, d);
        std::copy_n(qrow, d, w->q.data() + (g * count + l) * d);
        rows_out[r] = out + shape.row(shape.out, b, head, first + l, d);
        if (options.sinks) w->row_sink[r] = options.sinks[head];
        if (add_offset) {
          const float* mu = options.key_offset + s * d;
          double dot = 0.0;
          for (int64_t i = 0; i < d; ++i) dot += static_cast<double>(qrow[i]) * mu[i];
          w->row_offset[r] = static_cast<float>(dot);
        }
      }
    }
    if (keep_rows) out_rows[static_cast<size_t>(item)] = std::move(rows_out);
    w->reset();
    return w;
  };
  auto merge = [&](int64_t item) {
    StreamWork& first = *parts[static_cast<size_t>(item * splits)];
    for (int64_t p = 1; p < splits; ++p) first.absorb(*parts[static_cast<size_t>(item * splits + p)]);
    first.finish(out_rows[static_cast<size_t>(item)].data());
  };
  // The part that finishes an item last merges it (in part order, so the output does not depend
  // on which): a second parallel_for would wake every worker again for a few microseconds' work.
  std::vector<std::atomic<int64_t>> parts_left(static_cast<size_t>(splits > 1 ? items : 0));
  for (auto& left : parts_left) left.store(splits, std::memory_order_relaxed);
  // Units in part order: every item's first (largest) part, then every item's second, ...
  auto attend = [&](int64_t unit) {
    const int64_t item = unit % items, part = unit / items;
    auto w = make(item, part == 0);
    const int64_t t_begin = part_bounds[static_cast<size_t>(part)] * kBlock;
    const int64_t t_end = part + 1 == splits ? keys.length() : part_bounds[static_cast<size_t>(part + 1)] * kBlock;
    w->accumulate(place(item).stream, t_begin, t_end);
    if (splits == 1) {
      w->finish(out_rows[static_cast<size_t>(item)].data());
      return;
    }
    parts[static_cast<size_t>(item * splits + part)] = std::move(w);
    if (parts_left[static_cast<size_t>(item)].fetch_sub(1, std::memory_order_acq_rel) == 1) merge(item);
  };
  auto run_all = [&](int64_t n, const std::function<void(int64_t)>& fn) {
    if (pool) {
      pool->parallel_for(n, fn);
    } else {
      for (int64_t i = 0; i < n; ++i) fn(i);
    }
  };
  run_all(items * splits, attend);
  int64_t tiled = 0;
  for (int64_t item = 0; item < items; ++item) {
    const int64_t rows = group * std::min(chunk, shape.q_len - place(item).chunk * chunk);
    tiled += options.path == AttentionPath::kTiles ||
             (options.path == AttentionPath::kAuto && rows >= tile_rows);
  }
  AttentionReport report{items, tiled, splits};
  report.threads = threads;
  report.int8_items = int8_keys ? items - tiled : 0;
  report.int8_value_items = int8_values ? items - tiled : 0;
  return report;
}

}  // namespace turbokv
