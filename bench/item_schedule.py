"""How evenly a prefill call's work items end on N threads, by the order threads claim them.

    python bench/item_schedule.py [--threads 2 16 64]

A fused attention call over many query positions cuts each (batch, KV head) stream's positions into
ranges of about 256 rows (query heads x positions, as cpp/src/attention.cpp does) and threads claim
the resulting items one by one in index order. An item's cost is modelled as its rows times the
256-key blocks its last query can see (the tiles path decodes and multiplies every such block).
This replays the claims (each item to the thread that frees up first) and prints each order's end
against the ideal (total cost / threads):
  * "earliest first": every range of stream 0 from the first, then stream 1, ... (before session 45);
  * "latest first": stream by stream, each stream's ranges from its latest;
  * "in turns": every stream's latest range, then every stream's next latest, ...
cpp/src/sequence_parts.hpp (item_order) numbers causal calls latest first, in turns where the
streams are fewer than half the threads; "used" is the order it picks. A model, not a timing: it
leaves out each item's set-up, the caches (on 2 cores "in turns" cost 1.04-1.08x in time for
SmolLM2's prompt, each item slower, kernel_choices_avx2.md round 46) and the threads' wake, and
assumes equal cores.
"""

from __future__ import annotations

import argparse
import heapq
import math
from typing import List

ITEM_ROWS = 256  # kItemRows in cpp/src/attention.cpp
BLOCK = 256  # kBlock: tokens per block


ORDERS = ("earliest first", "latest first", "in turns")
TURNS_THREADS_PER_STREAM = 2  # kTurnsThreadsPerStream in cpp/src/sequence_parts.hpp


def item_costs(batch: int, kv_heads: int, group: int, q_len: int, context: int, order: str) -> List[int]:
    """Cost of each item in claim order (one of ORDERS): rows x blocks visible to the range's last query."""
    chunk = min(q_len, max(1, ITEM_ROWS // group))
    chunks = math.ceil(q_len / chunk)
    streams = batch * kv_heads

    def cost(c: int) -> int:
        count = min(chunk, q_len - c * chunk)
        last_visible = context - q_len + c * chunk + count
        return group * count * math.ceil(last_visible / BLOCK)

    if order == "earliest first":
        return [cost(c) for _ in range(streams) for c in range(chunks)]
    if order == "in turns":
        return [cost(chunks - 1 - r) for r in range(chunks) for _ in range(streams)]
    if order == "latest first":
        return [cost(chunks - 1 - r) for _ in range(streams) for r in range(chunks)]
    raise ValueError(f"order must be one of {ORDERS}, not {order!r}")


def end_over_ideal(costs: List[int], threads: int) -> float:
    """The last thread's end, each item claimed by the thread free first, over total / threads."""
    ends = [0] * threads
    for c in costs:
        heapq.heapreplace(ends, ends[0] + c)
    return max(ends) / (sum(costs) / threads)


def used_order(streams: int, threads: int) -> str:
    """The order a causal call takes (item_order in cpp/src/sequence_parts.hpp)."""
    return "in turns" if streams * TURNS_THREADS_PER_STREAM < threads else "latest first"


SHAPES = {  # name: (kv_heads, query heads per KV head, query positions, cached tokens)
    "prompt 2K, 9/3 heads (SmolLM2-135M)": (3, 3, 2048, 2048),
    "prompt 2K, 14/2 heads (Qwen2.5-0.5B)": (2, 7, 2048, 2048),
    "prompt 2K, 32/8 heads": (8, 4, 2048, 2048),
    "chunk 512 x 8K, 32/8 heads": (8, 4, 512, 8192),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    if min(args.threads) < 1 or min(args.batches) < 1:
        parser.error("--threads and --batches take whole numbers >= 1")
    print("| shape | batch | threads | items | " + " | ".join(ORDERS) + " | used |")
    print("| --- | --- | --- | --- |" + " --- |" * (len(ORDERS) + 1))
    for name, (kv_heads, group, q_len, context) in SHAPES.items():
        for batch in args.batches:
            for threads in args.threads:
                orders = [item_costs(batch, kv_heads, group, q_len, context, order) for order in ORDERS]
                ends = " | ".join(f"{end_over_ideal(costs, threads):.3f}x" for costs in orders)
                print(f"| {name} | {batch} | {threads} | {len(orders[0])} | {ends} | "
                      f"{used_order(batch * kv_heads, threads)} |")


if __name__ == "__main__":
    main()
