// Causal decode/prefill attention computed on the compressed cache (DESIGN.md §2, "fusion").
//
// Per (batch, kv head) stream, for the q_heads / kv_heads query heads that share it (GQA, K/V
// never repeated), and per range of query positions: a streaming (online) softmax runs over
// blocks of 256 tokens; queries are rotated once and the inverse rotation runs once per query at
// the end, so scores and value sums stay in the rotated domain. Two ways to do a block:
//   codes: each query is scored on the packed codes and values are summed straight from them
//          (decode: the cache is read once, nothing is expanded);
//   tiles: the block is decoded once into float tiles (rotated domain) and two matrix products do
//          all queries at once (prefill, chunked prefill, speculative verification).
// Both compute the same decoded keys and values; they differ only in float rounding. Float16
// tokens (bits = 0, or the residual window) are read directly. The newest q_len cached tokens are
// the queries' own positions: query l attends tokens [0, length - q_len + l] (causal, the default;
// AttentionOptions::causal = false: every token; AttentionOptions::window: the newest `window`).
#pragma once
#include <cstdint>

#include "turbokv/thread_pool.hpp"
#include "turbokv/token_store.hpp"

namespace turbokv {

// How blocks are done (see above). kAuto: tiles when a work item holds at least
// min_tile_rows(key bits, value bits) query rows (query heads of a KV head x query positions), else codes.
enum class AttentionPath { kAuto, kCodes, kTiles };

// AttentionOptions::scores (ScorePrecision, codec.hpp) applies to keys scored on the codes path
// (int8 sums up to 4 bits, int16 ones for 5-8); float16 keys and tiles stay float32
// (AttentionReport::int8_items).
// AttentionOptions::values (ValuePrecision) likewise to values of at most 4 bits summed on the
// codes path (AttentionReport::int8_value_items).

// Where tiles start to win, measured (python3 bench/prefill.py --crossover: 8K cached tokens,
// 32/8 heads d 128 and 9/3 heads d 64, time tiles / codes; bench/results/crossover_zen3_s25.md,
// crossover_zen3_s26.md). Zen 3, AVX2, session 25: 2-4-bit keys 1.0-1.1 at 24-32 rows, 0.75-0.8
// at 48-64. 8-bit keys, session 26, since up to 8 rows take the broadcast lookups where gathers
// are slow: 1.7-2.4 at 6-8 rows, 0.8-1.0 at 9-12, 0.6-1.2 at 16 (0.9-1.2 at 8-16 in session 25);
// 5-7-bit keys (not in the table) take the 8-bit threshold, their codes path costing nearer 8-bit
// keys' than 4-bit ones'. Float16
// keys at the AVX2 level, whose codes path converts each 16 coordinates once for 4 queries
// (dot_half_avx2): 1.2-1.3 at 48-64 rows; other levels were measured only when their codes path
// converted every coordinate once per query (0.2 at 3 rows) and keep tiles from one row. The
// thresholds before (16 and 8 rows, 40 for float16) came from a Zen 1 VM before the codes path's
// byte planes and integer sums, and sent 8-row decodes (64/8 heads) to tiles 3x slower.
// AVX-512 (session 47, with its own 512-bit product; Emerald Rapids on 2 and 16 threads:
// crossover_emr2_s47.md, crossover_emr16_s47.md): its codes path is the faster one longer. 2-4-bit
// keys 1.14-1.42 at 24-32 rows, 0.88-0.96 at 48 (9/3 heads); 8-bit keys 0.84-1.15 at 24 rows,
// 1.2-1.6 at 12-16 on 2 threads; float16 keys, which took tiles from one row, 5-12x slower there
// at 3-4 rows (decode), 1.1-1.6 at 24-32 rows, K0V0 0.59-0.61 and K0V4 0.90-1.08 at 48.
// Float16 keys beside coded values (prefill protection's layers), session 48 on 2 threads
// (crossover_emr2_s48.md): K0V4 at 32/8 heads d 128 1.40 at 48 rows, 1.18 at 64, 0.90 at 96; at 9/3
// heads d 64 1.02 at 48, 0.60 at 72; K0V0 0.93 and 0.68 at 48: 64 rows for them, 48 for K0V0.
inline int64_t min_tile_rows(int key_bits, int value_bits, SimdLevel level) {
  if (level == SimdLevel::kAvx512) return key_bits >= 5 ? 24 : key_bits == 0 && value_bits != 0 ? 64 : 48;
  if (key_bits == 0) return level == SimdLevel::kAvx2 ? 96 : 1;
  return key_bits >= 5 ? 9 : 32;
}

// Which way the work went, for callers and tests: work items are (stream, query range) pairs.
struct AttentionReport {
  int64_t items = 0;
  int64_t tiled_items = 0;
  // Parts each item's tokens were split into (1: none); > 1 when items are fewer than threads.
  int64_t sequence_splits = 1;
  // Items whose keys were scored in int8 (ScorePrecision::kInt8 where it applies).
  int64_t int8_items = 0;
  // Items whose values were summed in int8 (ValuePrecision::kInt8 where it applies).
  int64_t int8_value_items = 0;
  // Threads the call ran on: the pool's size, or 1 (no pool, or a decode call below
  // AttentionOptions::min_parallel_bytes).
  int64_t threads = 1;
};

// A decode call (q_len 1) whose cache holds fewer bytes than this per thread beyond the first
// (weighted by (query heads per KV head + 4) / 8) runs on the calling thread, the pool asleep: on a
// 2-core Zen 4 VM, 9/3 heads of head_dim 64, K4V4 int8, the pool's median call took 48 us against
// one thread's 30 at 1K tokens (221 KB) and 52 against 57 at 2K (442 KB); 32/8 heads of head_dim
// 128 at 256 tokens (278 KB) 49 against 52 (kernel_choices_avx2.md, round 42). Divided by the
// extra threads, where the work divides further, but never below 3/8 of it (96 KiB): waking more
// workers costs more, and on 8 and 16 threads of a 16-core Emerald Rapids 9/3 heads at 512 tokens
// (97 KB weighted) took 0.95x and 0.67x the pooled median on one thread, at 1K 1.16x and 1.36x
// (round 43; the divided threshold alone was 37 and 17 KiB there).
constexpr int64_t kMinParallelBytes = 256 * 1024;

// Where row (batch b, query head h, position l) of the queries or the output starts: b * batch +
// h * head + l * position floats from the first (head_dim floats contiguous from there); not
// `given`: the contiguous (batch, q_heads, q_len, head_dim) layout. A model's queries arrive as a
// transposed view of (batch, q_len, q_heads, head_dim) and its output projection reads that
// layout: read and written in place, neither needs a transposing copy.
struct RowStrides {
  bool given = false;
  int64_t batch = 0, head = 0, position = 0;
};

struct AttentionShape {
  int64_t batch = 1;
  int64_t kv_heads = 1;
  int64_t q_heads = 1;
  int64_t q_len = 1;
  RowStrides queries, out;  // layouts (default: contiguous)

  // Float offset of row (b, h, l) in `layout`.
  int64_t row(const RowStrides& layout, int64_t b, int64_t h, int64_t l, int64_t head_dim) const {
    if (!layout.given) return ((b * q_heads + h) * q_len + l) * head_dim;
    return b * layout.batch + h * layout.head + l * layout.position;
  }
};

// What the softmax sees besides the scores. Defaults: plain causal attention.
struct AttentionOptions {
  float scale = 1.0f;  // scores are q.k * scale; finite and > 0
  // > 0: scores become softcap * tanh(score / softcap) before masking (Gemma 2's attention logit
  // softcapping); 0: none.
  float softcap = 0.0f;
  // nullptr, or one logit per query head: an extra softmax column whose value vector is zero
  // (gpt-oss attention sinks). It takes weight from the tokens without adding to the output.
  const float* sinks = nullptr;
  // nullptr, or (batch, key_valid_tokens) bytes, 0 = that cached token is hidden from every query
  // of that batch row (left padding); combined with the causal rule. key_valid_tokens must equal
  // the cache length when the attention runs (checked under the cache's lock).
  const uint8_t* key_valid = nullptr;
  int64_t key_valid_tokens = 0;
  // Set by KVCacheLayer, not by callers: nullptr, or the (batch, kv_heads, head_dim) vectors
  // subtracted from every stored key of each stream. Scores get q . offset back where the softmax is not shift-invariant
  // (softcap, sinks); elsewhere it cancels exactly and is skipped.
  const float* key_offset = nullptr;
  AttentionPath path = AttentionPath::kAuto;
  ScorePrecision scores = ScorePrecision::kExact;
  ValuePrecision values = ValuePrecision::kExact;
  // false: every query sees every cached token (encoders, cross-attention), and q_len may exceed
  // the cache length.
  bool causal = true;
  // > 0: sliding-window attention (Mistral, Gemma 2/3 local layers, Qwen2 with sliding windows):
  // the query at position p sees tokens p - window < t <= p only, as transformers'
  // sliding_window masks; blocks wholly outside every query's window are not read. Needs causal.
  // 0: no window.
  int64_t window = 0;
  // Decode calls reading fewer bytes of cache (x (query heads per KV head + 4) / 8) than this over
  // (pool threads - 1), or than 3/8 of it, skip the pool (kMinParallelBytes); 0: always use the
  // pool; >= 0.
  int64_t min_parallel_bytes = kMinParallelBytes;
};

// queries and out: (batch, q_heads, q_len, head_dim) float32, C-contiguous. Queries must be
// finite (std::invalid_argument otherwise). A query that sees no token gets 0.
// Work is spread over (batch, kv head) streams and, for long q_len, ranges of query positions, on
// pool (nullptr: the calling thread only); with fewer of those than threads, also over parts of
// the sequence, merged afterwards.
AttentionReport fused_attention(const TokenStore& keys, const TokenStore& values, const float* queries,
                     const AttentionShape& shape, const AttentionOptions& options, float* out,
                     ThreadPool* pool);

}  // namespace turbokv
