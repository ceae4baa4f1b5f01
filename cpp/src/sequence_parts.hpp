// Internal: the order in which attention's threads claim work items (item_place), and how it splits
// one (batch, KV head) item's cached tokens into parts that threads attend side by side and then
// merge (flash-decoding), when there are few items per core.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace turbokv {

// Parts per thread that prefill aims for, and the items per thread below which decode splits
// items (into kDecodePartsPerThread per thread): several, so that a core that starts late or runs
// slow (a busy host) leaves its later parts to the others instead of holding up the call.
constexpr int64_t kPartsPerThread = 4;
// Decode with few items (fewer than kPartsPerThread per thread) splits them into about this many
// parts per thread, at least 2 per item: batch 1 at 32K on 16 Emerald Rapids cores (8 items, K4V4
// int8) in 4 parts each took 0.92-0.94x the time of 8 parts each (both A/B orders, 12 layers from
// memory; 1 layer in L3: 0.93-0.95x), 6 parts each the same as 4, 16 parts 1.24x and 2 parts
// 1.46x; on 8 threads (2 parts each, not 4) 1.00-1.01x (kernel_choices_avx2.md, round 52).
constexpr int64_t kDecodePartsPerThread = 2;
// The fewest blocks a part keeps (or 2 where that still makes two parts): on 16 cores 4K tokens in
// 8 parts of 2 blocks per stream took 1.31x the time of 4 parts of 4 (each part's set-up, claim
// and merge; kernel_choices_avx2.md, rounds 36-37).
constexpr int64_t kMinPartBlocks = 4;
// How much larger an item's first part is than its last, at most (below).
constexpr double kPartFall = 4.0;

// Threads from which decode also splits items that already give every thread kPartsPerThread
// of them, up to twice that many: each into a large part and a small one (sequence_part_bounds:
// the first 4x the last), all large parts claimed first, so that the call ends on short ones. 16
// cores at batch 8 (64 items of 128 blocks): 0.92-0.98x the median call; 8 and 4 threads of that
// host (32-40 and 16-24 items): medians 0.86-0.96x (8 threads, 32 items, in 7 of 7 runs) and
// 0.81-1.12x (median of runs 0.93-0.95); 2 cores at batch 1 (8 items): 1.01-1.08x, the parts'
// set-up and merge outweighing a tail that 2 threads hardly have (kernel_choices_avx2.md, rounds
// 42-43). So from 4 threads; 3 not measured.
constexpr int64_t kTailSplitThreads = 4;

// Prefill keeps kPartsPerThread too: 8 per thread for calls whose ranges see nearly every key (the
// 512 x 8K chunk at batch 1 on 16 cores, 64 items in 2 parts) took 0.97-0.98x the median call with
// the AVX2 tile product but 1.03-1.07x with the AVX-512 one (kernel_choices_avx2.md, round 47).
// Parts per item for `items` items of `blocks` blocks each on `threads` threads: more than 1 where
// the items alone give fewer than kPartsPerThread to each thread (decode: kDecodePartsPerThread
// parts per thread, at least 2 per item), or (`decode`: one query position per item) to
// tail-split on kTailSplitThreads threads or more.
inline int64_t sequence_parts(int64_t items, int64_t threads, int64_t blocks, bool decode) {
  if (threads <= 1) return 1;
  const int64_t units = kPartsPerThread * threads;
  if (items >= units) {
    // 5 x kMinPartBlocks blocks: the small part keeps kMinPartBlocks at the full fall.
    const bool tail = decode && threads >= kTailSplitThreads && items < 2 * units &&
                      blocks >= 5 * kMinPartBlocks;
    return tail ? 2 : 1;
  }
  const int64_t most = std::max(blocks / kMinPartBlocks, std::min<int64_t>(2, blocks / 2));
  const int64_t wanted = decode ? std::max<int64_t>(2, (kDecodePartsPerThread * threads + items - 1) / items)
                                : (units + items - 1) / items;
  return std::max<int64_t>(1, std::min(wanted, most));
}

// The order in which threads claim a call's work items (each a stream's range of query
// positions; threads claim them in index order, so the numbering is the schedule). In a causal
// prompt a later range sees more keys (SmolLM2's 2K prompt: the last of 25 ranges per KV head ~2x
// the average), so earliest first left a stream's costliest ranges to the end of the call and the
// other cores idle: 1.23x the ideal end on 16 threads in a schedule simulated from the ranges' key
// counts (bench/item_schedule.py), 1.01x on 2. Longest first ends within 4/3 of the optimum
// (Graham 1969), in one of two forms, chosen by measurement (kernel_choices_avx2.md round 46):
//   kLatestFirst: stream by stream, each stream's ranges latest first. A thread's next item is
//     mostly of the stream its last one read: on 2 cores, numbering the streams' ranges in turns
//     instead took 1.04-1.08x the call (SmolLM2's prompt, batch 1; each item slower), and on 16
//     cores at batch 4 (12 streams) 1.06-1.09x.
//   kLatestInTurns: every stream's latest range, then every stream's next latest, ... With few
//     streams on many threads the last stream's costliest ranges would otherwise start late:
//     SmolLM2's prompt at batch 1 (3 streams) on 16 cores took 0.91-0.93x the time of kLatestFirst.
enum class ItemOrder { kEarliestFirst, kLatestFirst, kLatestInTurns };

// Fewer streams than threads / kTurnsThreadsPerStream: their ranges go in turns (16 threads: 3
// and 2 streams in turns, 12 stream by stream, as measured; 8, the 512-query chunk's, either way
// within 2%).
constexpr int64_t kTurnsThreadsPerStream = 2;

inline ItemOrder item_order(bool causal, int64_t streams, int64_t threads) {
  if (!causal) return ItemOrder::kEarliestFirst;  // every range sees every key: equal costs
  return streams * kTurnsThreadsPerStream < threads ? ItemOrder::kLatestInTurns : ItemOrder::kLatestFirst;
}

// Where work item `item` lies: its (batch, KV head) stream and its range of query positions
// (`chunk`, in units of the call's positions per item).
struct ItemPlace {
  int64_t stream, chunk;
};
inline ItemPlace item_place(int64_t item, int64_t streams, int64_t chunks, ItemOrder order) {
  switch (order) {
    case ItemOrder::kLatestInTurns:
      return {item % streams, chunks - 1 - item / streams};
    case ItemOrder::kLatestFirst:
      return {item / chunks, chunks - 1 - item % chunks};
    case ItemOrder::kEarliestFirst:
      break;
  }
  return {item / chunks, item % chunks};
}

// Block boundaries of an item's `parts` parts: parts + 1 ascending values from 0 to `blocks`.
// The parts shrink linearly from the first to the last (guided self-scheduling, Polychronopoulos
// and Kuck 1987): threads claim every item's first part, then every item's second, ..., so the
// last claims are short and the threads finish close together. On a 16-core Emerald Rapids at 32K,
// 8 KV heads of 8 parts each, the first 4x the last took 0.93-0.96x the time of equal parts
// (kernel_choices_avx2.md, round 42). No part falls below kMinPartBlocks blocks where equal parts
// would not; where no fall fits, the parts are equal.
inline std::vector<int64_t> sequence_part_bounds(int64_t blocks, int64_t parts) {
  std::vector<int64_t> bounds(static_cast<size_t>(parts + 1));
  for (int64_t p = 0; p <= parts; ++p) bounds[static_cast<size_t>(p)] = p * blocks / parts;
  if (parts < 2) return bounds;
  // The last part's share of the blocks is 2 / (parts * (fall + 1)): at least kMinPartBlocks.
  const auto blocks_f = static_cast<double>(blocks), parts_f = static_cast<double>(parts);
  double fall = std::min(kPartFall, blocks_f / (static_cast<double>(kMinPartBlocks) * parts_f) * 2.0 - 1.0);
  for (; fall > 1.0; fall -= 0.25) {
    std::vector<int64_t> falling(bounds.size(), 0);
    const double total = parts_f * (fall + 1.0) / 2.0;
    double sum = 0.0;
    bool fits = true;
    for (int64_t p = 0; p < parts; ++p) {
      sum += fall + (1.0 - fall) * static_cast<double>(p) / (parts_f - 1.0);
      const int64_t end = p + 1 == parts ? blocks : std::llround(sum / total * blocks_f);
      falling[static_cast<size_t>(p + 1)] = end;
      fits = fits && end - falling[static_cast<size_t>(p)] >= kMinPartBlocks;
    }
    if (fits) return falling;
  }
  return bounds;
}

}  // namespace turbokv
