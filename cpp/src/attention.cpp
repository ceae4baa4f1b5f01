#include "turbokv/attention.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.hpp"

namespace turbokv {
namespace {

constexpr int64_t kBlock = TokenStore::kChunkTokens;

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

struct StreamWork {
  const TokenStore& keys;
  const TokenStore& values;
  const kernels::KernelSet& k;
  int64_t d, rows, q_len, length;
  float scale, softcap;
  const uint8_t* valid = nullptr;  // this stream's batch row of key_valid, or nullptr
  std::vector<float> row_sink;     // the sink logit of each row's query head; empty: no sinks
  std::vector<float> row_offset;   // q . key_offset per row (raw score units); empty: none
  // Per-row state of the online softmax and the three value accumulators.
  std::vector<float> q, q_rotated, q_sketched, scores, row_max, row_sum, acc_rotated, acc_sketch,
      acc_dense, scratch;

  StreamWork(const TokenStore& k_store, const TokenStore& v_store, const kernels::KernelSet& ks,
             int64_t rows_, int64_t q_len_, float scale_, float softcap_)
      : keys(k_store), values(v_store), k(ks), d(k_store.head_dim()), rows(rows_), q_len(q_len_),
        length(k_store.length()), scale(scale_), softcap(softcap_) {
    const size_t rd = static_cast<size_t>(rows * d);
    q.resize(rd);
    q_rotated.resize(rd);
    q_sketched.resize(rd);
    scores.resize(static_cast<size_t>(rows * kBlock));
    scratch.resize(static_cast<size_t>((rows + 1) * kBlock));
    row_max.resize(rows);
    row_sum.resize(rows);
    acc_rotated.resize(rd);
    acc_sketch.resize(rd);
    acc_dense.resize(rd);
  }

  // Query row r is query token (r % q_len) of its head; it sees tokens [0, visible(r)).
  int64_t visible(int64_t r) const { return length - q_len + (r % q_len) + 1; }

  void run(int64_t s, float* out_rows[]) {
    std::fill(row_max.begin(), row_max.end(), -INFINITY);
    std::fill(row_sum.begin(), row_sum.end(), 0.0f);
    std::fill(acc_rotated.begin(), acc_rotated.end(), 0.0f);
    std::fill(acc_sketch.begin(), acc_sketch.end(), 0.0f);
    std::fill(acc_dense.begin(), acc_dense.end(), 0.0f);
    if (keys.codec()) keys.codec()->prepare_queries(q.data(), rows, d, q_rotated.data(), q_sketched.data());
    for (int64_t t = 0; t < length;) {
      const Segment ks = segment_at(keys, s, t), vs = segment_at(values, s, t);
      const int64_t n = std::min(ks.count, vs.count);
      block(t, n, ks, vs);
      t += n;
    }
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

  void block(int64_t t0, int64_t n, const Segment& ks, const Segment& vs) {
    // The value codes of this block are needed right after the scores: start fetching them now
    // so that the first pass over them does not wait on memory.
    if (!vs.halves) {
      const auto* bytes = reinterpret_cast<const char*>(vs.codes.codes);
      const int64_t total = n * static_cast<int64_t>(values.codec()->code_bytes());
      for (int64_t offset = 0; offset < total; offset += 64) __builtin_prefetch(bytes + offset);
    }
    // Scores, scaled and causally masked.
    if (ks.halves) {
      k.dot_half(q.data(), static_cast<int>(rows), ks.halves, n, static_cast<int>(d), scores.data(), n);
    } else {
      keys.codec()->scores_prepared(q_rotated.data(), q_sketched.data(), rows, ks.codes, n,
                                    scores.data(), n);
    }
    bool any_visible = false;
    for (int64_t r = 0; r < rows; ++r) {
      float* row = scores.data() + r * n;
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
      const float block_max = k.scale_max(row, limit, row_scale);
      if (limit == 0 || block_max == -INFINITY) {  // nothing visible in this block
        std::fill(row, row + n, 0.0f);
        continue;
      }
      any_visible = true;
      // Online softmax: rescale what was accumulated under the old maximum.
      const float new_max = std::max(row_max[r], block_max);
      const float correction = std::exp(row_max[r] - new_max);  // exp(-inf) = 0 on the first block
      row_max[r] = new_max;
      const float block_sum = k.exp_shifted(row, limit, new_max);
      std::fill(row + limit, row + n, 0.0f);
      row_sum[r] = row_sum[r] * correction + block_sum;
      if (correction != 1.0f) {
        for (int64_t i = 0; i < d; ++i) {
          acc_rotated[r * d + i] *= correction;
          acc_sketch[r * d + i] *= correction;
          acc_dense[r * d + i] *= correction;
        }
      }
    }
    if (!any_visible) return;
    if (vs.halves) {
      k.axpy_half(scores.data(), n, static_cast<int>(rows), vs.halves, n, static_cast<int>(d),
                  acc_dense.data());
    } else {
      values.codec()->accumulate(scores.data(), n, rows, vs.codes, n, acc_rotated.data(),
                                 acc_sketch.data(), scratch.data());
    }
  }
};


// Throws if any query row holds NaN or Inf: a non-finite query would otherwise be skipped by the
// max and exp kernels and come back as zeros, hiding an overflow upstream.
void check_finite_queries(const kernels::KernelSet& ks, const float* q, const AttentionShape& shape,
                          int64_t d) {
  const int64_t rows = shape.batch * shape.q_heads * shape.q_len;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = q + r * d;
    if (ks.sum_squares(row, static_cast<int>(d)) <= FLT_MAX) continue;  // fast path: all finite
    for (int64_t i = 0; i < d; ++i) {
      if (!std::isfinite(row[i])) {
        const int64_t l = r % shape.q_len, h = (r / shape.q_len) % shape.q_heads,
                      b = r / (shape.q_len * shape.q_heads);
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
  if (o.sinks) {
    for (int64_t h = 0; h < q_heads; ++h) {
      if (!std::isfinite(o.sinks[h])) throw std::invalid_argument("sinks hold NaN or Inf");
    }
  }
  if (o.key_valid && o.key_valid_tokens != length) {
    throw std::invalid_argument("key_mask covers " + std::to_string(o.key_valid_tokens) +
                                " tokens but the cache holds " + std::to_string(length));
  }
}

}  // namespace

void fused_attention(const TokenStore& keys, const TokenStore& values, const float* queries,
                     const AttentionShape& shape, const AttentionOptions& options, float* out,
                     ThreadPool* pool) {
  const int64_t d = keys.head_dim();
  if (values.head_dim() != d) throw std::invalid_argument("keys and values differ in head_dim");
  if (shape.kv_heads <= 0 || shape.q_heads % shape.kv_heads != 0) {
    throw std::invalid_argument("q_heads (" + std::to_string(shape.q_heads) +
                                ") must be a multiple of kv_heads (" + std::to_string(shape.kv_heads) + ")");
  }
  if (keys.streams() != shape.batch * shape.kv_heads || values.streams() != keys.streams()) {
    throw std::invalid_argument("queries have batch " + std::to_string(shape.batch) +
                                " but the cache holds " + std::to_string(keys.streams()) +
                                " (batch x kv_heads) streams");
  }
  if (keys.length() != values.length()) throw std::logic_error("keys and values differ in length");
  if (shape.q_len > keys.length()) {
    throw std::invalid_argument("q_len " + std::to_string(shape.q_len) + " exceeds the " +
                                std::to_string(keys.length()) +
                                " cached tokens: update the cache with this step's keys and values first");
  }
  check_options(options, shape.q_heads, keys.length());
  const int64_t group = shape.q_heads / shape.kv_heads;
  const int64_t rows = group * shape.q_len;
  const SimdLevel level = keys.codec() ? keys.codec()->simd_level()
                                       : (values.codec() ? values.codec()->simd_level() : default_simd());
  const kernels::KernelSet& ks = kernels::kernel_set(level);
  check_finite_queries(ks, queries, shape, d);
  auto work = [&](int64_t s) {
    const int64_t b = s / shape.kv_heads, h = s % shape.kv_heads;
    StreamWork w(keys, values, ks, rows, shape.q_len, options.scale, options.softcap);
    if (options.key_valid) w.valid = options.key_valid + b * keys.length();
    if (options.sinks) w.row_sink.resize(static_cast<size_t>(rows));
    // Centred keys: the softmax alone ignores the per-query constant q . offset, a softcap or a
    // sink does not.
    const bool add_offset = options.key_offset && (options.sinks || options.softcap > 0.0f);
    if (add_offset) w.row_offset.resize(static_cast<size_t>(rows));
    std::vector<float*> out_rows(rows);
    for (int64_t g = 0; g < group; ++g) {
      const int64_t head = h * group + g;  // query heads of kv head h: contiguous, as repeat_kv
      const int64_t base = ((b * shape.q_heads + head) * shape.q_len) * d;
      std::copy_n(queries + base, shape.q_len * d, w.q.data() + g * shape.q_len * d);
      for (int64_t l = 0; l < shape.q_len; ++l) {
        out_rows[g * shape.q_len + l] = out + base + l * d;
        if (options.sinks) w.row_sink[static_cast<size_t>(g * shape.q_len + l)] = options.sinks[head];
        if (add_offset) {
          const float* qrow = queries + base + l * d;
          const float* mu = options.key_offset + s * d;
          double dot = 0.0;
          for (int64_t i = 0; i < d; ++i) dot += static_cast<double>(qrow[i]) * mu[i];
          w.row_offset[static_cast<size_t>(g * shape.q_len + l)] = static_cast<float>(dot);
        }
      }
    }
    w.run(s, out_rows.data());
  };
  const int64_t streams = keys.streams();
  if (pool) {
    pool->parallel_for(streams, work);
  } else {
    for (int64_t s = 0; s < streams; ++s) work(s);
  }
}

}  // namespace turbokv
