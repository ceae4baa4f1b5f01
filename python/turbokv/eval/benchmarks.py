"""Decode-attention benchmark shared by ``python -m turbokv bench`` and ``bench/attention.py``.

One new token, batch 1, 32 query / 8 KV heads (GQA 4), head_dim 128: turbokv fused attention on the
codes against numpy float32 dense attention, torch SDPA (when torch is installed) and
decode-then-attend, each with its KV bytes, plus the memory-read floor of the turbokv rows.
"""

from __future__ import annotations

import math
import functools
import itertools
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..cache import KVCache
from .._core import detect_simd, kernel_routes, supported_simd
from ..threads import share_openmp_threads, thread_backend

KV_HEADS, Q_HEADS, HEAD_DIM = 8, 32, 128


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for naming the machine."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def routes_text() -> str:
    """The CPU facts the kernels picked their routes by (:func:`turbokv.kernel_routes`), in words,
    e.g. "AVX-512 VNNI, AVX-512 VBMI, AVX-VNNI; 2-3-bit lookups by vpermps; 5-6-bit lookups by
    vpshufb, 7-8-bit ones by gathers, packed rows by pdep",
    so that a table names them; "no x86 routes" off x86."""
    if "avx2" not in supported_simd():
        return "no x86 routes"
    r = kernel_routes()
    names = [label for key, label in (("avx512_vnni", "AVX-512 VNNI"), ("avx512_vbmi", "AVX-512 VBMI"),
                                      ("avx_vnni", "AVX-VNNI")) if r[key]]
    # Where gathers are slow, float32 scores broadcast each looked-up centroid (session 26).
    lookups = "scalar loads (float32 scores: broadcasts)" if r["gathers_slow"] else "gathers"
    if r["gds_mitigation"]:  # Intel's Gather Data Sampling microcode mitigation (gather_speed.hpp)
        lookups += " (GDS mitigation reported)"
    spread = "SIMD unpacking" if r["pdep_slow"] else "pdep"
    # 5-6-bit codes take vpshufb byte planes of the codebook's magnitudes where pdep is fast.
    widths = "5-8-bit lookups" if r["pdep_slow"] else "5-6-bit lookups by vpshufb, 7-8-bit ones"
    # Where gathers are slow, int16 scores of 7-bit keys take vpshufb too (session 25), and of
    # 8-bit ones except at 2-3 queries per KV head (session 26).
    int16 = "; int16 words of 7-8-bit keys by vpshufb" if r["gathers_slow"] else ""
    # Where lane swaps are fast, the AVX2 level's float32 2-3-bit scores and values take vpermps
    # (session 39); Zen 1 keeps the byte planes.
    small = "2-3-bit lookups by byte planes" if r["lane_swap_slow"] else "2-3-bit lookups by vpermps"
    return f"{', '.join(names) or 'no VNNI or VBMI'}; {small}; {widths} by {lookups}{int16}, packed rows by {spread}"


def cores_text() -> str:
    """The cores as the benchmarks' headers name them: 'N cores', or 'N cores (M usable)' where
    this process may run on fewer of them (taskset, a container's CPU set): turbokv's pool and the
    read pass take the usable ones."""
    cores = os.cpu_count() or 1
    usable = usable_cpus()
    return f"{cores} cores" + (f" ({usable} usable)" if usable < cores else "")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one), as turbokv's thread
    pool counts them when TURBOKV_NUM_THREADS is unset."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def machine_text() -> str:
    """This machine as the benchmarks' headers name it: CPU, cores, best SIMD level, routes."""
    return f"{cpu_name()}, {cores_text()}, best SIMD {detect_simd()} ({routes_text()})"


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# run_attention times each row primed (interleaved_times): on the 2-core Zen 3 VM the first
# turbokv row after the torch rows took 14.6 ms against 9.5 with OMP_WAIT_POLICY=PASSIVE, torch's
# OpenMP workers still spinning beside it (session 24).
PRIMED = True
# ... and primed for at least SETTLE_S seconds: one untimed call was not enough. Session 27, same
# VM class, 32K tokens, 9/3 heads, median of 15: a K5V5 call right after torch SDPA took 6.95 ms
# with one priming call and 4.30 with three, against 4.83 after itself; right after numpy's dense
# attention (OpenBLAS threads spin about 0.1 s) 7.2 ms even with three (50 ms asleep instead:
# 6.2); SDPA right after numpy 40.4 ms against 19.6 after itself (32/8 heads). Primed for 0.3 s,
# each row's time no longer depended on the row before it (within the VM's noise). So the first
# turbokv row of a table had been timed slow (K5V5 6.3-6.7 ms first, 3.9 second).
SETTLE_S = 0.25
# The name of the read pass among run_attention's timed calls.
READ_PASS = "read pass"


def interleaved_times(calls: Dict[str, Tuple[Callable[[], object], int]],
                      primed: bool = False, settle_s: float = 0.0) -> Dict[str, List[float]]:
    """Seconds of each timed call of each named call, ``calls[name] = (fn, repeats)``, in turns.

    After one warm-up call each, round r calls every fn whose repeats exceed r, in order, so all
    rows sample the same stretches of time: on a machine whose speed drifts (a VM's neighbours,
    turbo) rows timed one after another moved by up to 1.5x against each other (2-core VM,
    session 19), which their ratios to the best dense row then carried. Element r of a row's list
    is its time in round r. ``primed``: each timed
    call right after an untimed call of the same fn, so that it neither runs beside the worker
    threads the previous row's library left spinning (torch's OpenMP workers spin for
    milliseconds after a call) nor wakes idle cores (a sleep before each call instead cost this
    2-core VM's fused rows up to 1.5x). Each row is then timed as it runs back to back.
    ``settle_s``: with ``primed``, untimed calls repeat until this many seconds have passed (at
    least one), so that another library's spinning threads have gone to sleep (SETTLE_S)."""
    for fn, _ in calls.values():
        fn()
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for r in range(max((n for _, n in calls.values()), default=0)):
        for name, (fn, n) in calls.items():
            if r < n:
                if primed:
                    start = time.perf_counter()
                    fn()
                    while time.perf_counter() - start < settle_s:
                        fn()
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


class ReadPass:
    """One read of a 1 GiB float32 array split over every usable core (numpy reductions on per-thread
    slices): the pass behind the read floor. Use as a context manager (it holds the array, paged
    in, and a thread pool); calling it reads the array once."""

    def __init__(self, gib: float = 1.0) -> None:
        self.array = np.ones(int(gib * 2**30) // 4, dtype=np.float32)
        self.threads = usable_cpus()
        self._parts = np.array_split(self.array, self.threads)
        self._pool = None

    @property
    def nbytes(self) -> int:
        """Bytes read per pass."""
        return self.array.nbytes

    def __enter__(self) -> "ReadPass":
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(self.threads)
        self()  # warm up: page in, start threads
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown()
        self._pool = None

    def __call__(self) -> None:
        if self._pool is None:
            raise RuntimeError("ReadPass reads inside its with-block only")
        list(self._pool.map(np.max, self._parts))

    def best_gbs(self, repeats: int = 10) -> float:
        """GB/s of the fastest of ``repeats`` passes: the floor should be the fastest this machine
        can read (a median swings with whatever else runs)."""
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            self()
            best = min(best, time.perf_counter() - start)
        return self.nbytes / best / 1e9


def numpy_attention(q, k, v):
    """Dense float32 GQA attention for one query token: q (b, q_heads, 1, d), k/v (b, kv_heads, T, d)."""
    kv_heads = k.shape[1]
    group = q.shape[1] // kv_heads
    d = q.shape[-1]
    qg = q.reshape(len(q), kv_heads, group, d)
    s = (qg @ k.swapaxes(-1, -2)) * np.float32(1 / math.sqrt(d))
    s -= s.max(axis=-1, keepdims=True)
    w = np.exp(s)
    w /= w.sum(axis=-1, keepdims=True)
    return (w @ v).reshape(q.shape)


def in_turn(fns: Sequence[Callable[[], object]]) -> Callable[[], object]:
    """One callable that calls ``fns`` in turn, one per call (a model's layers, one after another)."""
    turn = itertools.cycle(fns)
    return lambda: next(turn)()


def layer_caches(k: np.ndarray, v: np.ndarray, key_bits: int, value_bits: int,
                 level: Optional[str], layers: int) -> List[KVCache]:
    """``layers`` caches, each holding ``k`` and ``v`` (float32, (batch, kv_heads, T, head_dim)),
    made at SIMD ``level`` (as ``TURBOKV_SIMD`` picks it; ``None``: this CPU's best). Raises
    RuntimeError if the caches run another level than asked."""
    head_dim, kv_heads = k.shape[3], k.shape[1]
    previous = os.environ.get("TURBOKV_SIMD")
    if level:
        os.environ["TURBOKV_SIMD"] = level  # read when the cache is made
    try:
        caches = [KVCache(head_dim, kv_heads, key_bits=key_bits, value_bits=value_bits)
                  for _ in range(layers)]
    finally:
        if previous is None:
            os.environ.pop("TURBOKV_SIMD", None)
        else:
            os.environ["TURBOKV_SIMD"] = previous
    if level and caches[0].simd != level:
        raise RuntimeError(f"asked for {level}, the cache runs {caches[0].simd}")
    for cache in caches:
        cache.update(k, v)
    return caches


# torch's kernels for an instruction set (ATEN_CPU_CAPABILITY), by the names --simd takes.
TORCH_ISAS = {"scalar": "default", "avx2": "avx2", "avx512": "avx512"}

# The cap on MKL's instruction set (MKL_ENABLE_INSTRUCTIONS) that goes with each level below the
# machine's best (None: MKL's own pick). torch's float products (matmul, SDPA's blocks) run in MKL,
# which picks its level whatever ATen's is: on the model-167 VM (AVX-512), SDPA's decode at 32K
# took 13.86 ms with ATen alone at AVX2 and 21.12 with MKL at AVX2 too, the 512 x 8K chunk 312 and
# 419 ms (bench/torch_levels.py, session 59).
TORCH_BLAS_ISAS = {"scalar": "SSE4_2", "avx2": "AVX2", "avx512": None}


# Where run_attention runs turbokv's parallel work (``threads``).
THREAD_CHOICES = ("pool", "openmp")


def use_thread_backend(threads: str) -> None:
    """Runs turbokv's parallel work on ``threads``: "pool" (its own) or "openmp" (torch's OpenMP
    threads, as in a transformers loop). Raises RuntimeError where the process already runs on the
    other one (the choice holds for the process), or where "openmp" cannot be had (torch not
    installed or without an OpenMP runtime in /proc/self/maps, TURBOKV_OPENMP=0)."""
    if threads not in THREAD_CHOICES:
        raise ValueError(f"threads must be one of {THREAD_CHOICES}, got {threads!r}")
    if threads == "openmp" and thread_backend() != "openmp":
        if import_torch() is None or share_openmp_threads("torch") is None:
            raise RuntimeError("threads='openmp' needs torch's OpenMP runtime (Linux, torch installed, "
                               "TURBOKV_OPENMP not 0); thread backend stays " + thread_backend())
    if thread_backend() != threads:
        raise RuntimeError(f"turbokv already runs on {thread_backend()} threads in this process (import turbokv.hf "
                           f"shares torch's OpenMP threads); threads={threads!r} needs a fresh process")


def import_torch(isa: Optional[str] = None):
    """torch, its kernels at ``isa`` ("scalar", "avx2", "avx512"; None: torch's own pick), or None
    where torch is not installed. The dense baselines of a run that emulates an AVX2 machine on an
    AVX-512 one (``--simd avx2``) should run at AVX2 as well, as torch does on such a machine (on
    the Zen 4 VM, session 38, a lone SDPA decode call at 32K took 1.1-1.2x the time at AVX2, the
    same call among this benchmark's rows ~1%: memory-bound there): ATen's own kernels
    (``ATEN_CPU_CAPABILITY``) and MKL's products (``MKL_ENABLE_INSTRUCTIONS``, TORCH_BLAS_ISAS).
    Each reads its variable once, at its first call (torch's level also at a query of it), so this
    makes both calls before putting the variables back; it raises RuntimeError where torch already
    runs at another level, and ValueError for an unknown ``isa``. A process that ran an MKL product
    before keeps MKL's level: :func:`torch_sgemm_gflops` shows the rate it runs at. The level torch
    took is ``torch.backends.cpu.get_cpu_capability()``."""
    if isa is not None and isa not in TORCH_ISAS:
        raise ValueError(f"torch's instruction set must be one of {sorted(TORCH_ISAS)}, got {isa!r}")
    asked = {} if isa is None else {"ATEN_CPU_CAPABILITY": TORCH_ISAS[isa],
                                    "MKL_ENABLE_INSTRUCTIONS": TORCH_BLAS_ISAS[isa]}
    asked = {name: value for name, value in asked.items() if value is not None}
    saved = {name: os.environ.get(name) for name in asked}
    os.environ.update(asked)
    try:
        import torch
        running = torch.backends.cpu.get_cpu_capability().lower()
        if "MKL_ENABLE_INSTRUCTIONS" in asked:
            torch.ones(64, 64) @ torch.ones(64, 64)  # MKL's first call reads its variable
    except ImportError:
        return None
    finally:  # read by now: no later process inherits them from here
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if isa is not None and running != TORCH_ISAS[isa]:
        raise RuntimeError(f"torch runs its kernels at {running}, not {isa}: it had run or reported its level before "
                           f"(fixed then), or this CPU lacks {isa}; run in a fresh process")
    return torch


def torch_sgemm_gflops(torch, n: int = 1024, repeats: int = 3) -> float:
    """GFLOP/s of torch's float32 n x n x n product on all its threads (median of ``repeats``
    after one untimed): where a run names the instruction set of its dense baselines, this says
    the rate their products ran at (an AVX2 cap on MKL shows as a lower rate than MKL's own pick
    on an AVX-512 machine)."""
    a = torch.ones(n, n)
    return 2 * n ** 3 / median_time(lambda: a @ a, repeats) / 1e9


def parse_bits_pair(text: str) -> Tuple[int, int]:
    """``"K,V"`` (e.g. ``"4,4"``, ``"8,4"``) as (key_bits, value_bits); raises ValueError otherwise.
    The benchmarks' command lines take settings so."""
    try:
        key_bits, value_bits = (int(b) for b in text.split(","))
    except ValueError:
        raise ValueError(f"expected KEY_BITS,VALUE_BITS such as 4,4, got {text!r}") from None
    return key_bits, value_bits


def run_attention(contexts: Sequence[int] = (1024, 4096, 16384, 32768, 65536), repeats: int = 15,
                  show_progress: bool = True, settings: Sequence[Tuple[int, int]] = ((4, 4), (4, 2)),
                  batch: int = 1, simd_levels: Sequence[Optional[str]] = (None,),
                  heads: Tuple[int, int] = (Q_HEADS, KV_HEADS),
                  score_modes: Sequence[str] = ("exact",),
                  value_modes: Sequence[str] = ("exact",), head_dim: int = HEAD_DIM,
                  layers: int = 1, torch_isa: Optional[str] = None, threads: Optional[str] = None) -> Dict:
    """Runs the benchmark; returns {"machine", "batch", "heads", "head_dim", "layers", "read_bandwidth_gbs",
    "torch", "torch_isa", "thread_backend", "read_bandwidth_start_gbs", "read_passes", "rows": [...]}, one row per (context,
    implementation) with ms, kv_bytes and the speedup / floor ratios. The read floor is the
    fastest read pass of the run (``read_bandwidth_gbs``): the best of 10 at the start
    (``read_bandwidth_start_gbs``) or one of those timed in turns with each context's rows
    (``read_passes``: GB/s, one per round). On the 2-core Zen 4 VM the pass moved between 30 and
    67 GB/s within seconds while decode times did not follow (session 35), so a floor taken once
    at the start put a row at 2.3x or at 4.4x the floor depending on the phase it fell in.

    ``settings``: (key_bits, value_bits) pairs, one fused row each; the first also gets the
    decode-then-attend row. ``batch``: sequences decoded at once (each with its own cache rows).
    ``simd_levels``: instruction sets to time the fused rows at (``None`` = this CPU's best; a
    level names the row, as ``TURBOKV_SIMD`` would pick it). ``heads``: (query, KV) heads.
    ``score_modes``: ``KVCache.attention(scores=...)`` per fused row ("exact", "int8"); an int8
    row is labelled so (integer sums: int8 for keys of 1-4 bits, int16 for 5-8).
    ``value_modes``: ``KVCache.attention(values=...)`` likewise ("int8 values" rows: values of at
    most 4 bits), each combined with every score mode. ``head_dim``: 128 unless given (80: Phi-2;
    96: Phi-3; 256: Gemma). ``layers``: caches (and dense arrays) per row, called in turn as a
    model's layers are: one call attends one layer's. With 1 every call re-reads the cache the
    last call read, which a large last-level cache holds (a 32K K4V4 cache is 36 MB; the 16-core
    Emerald Rapids has 300 MiB of L3); with layers x a row's bytes beyond it, every call reads
    from memory, as the floor's pass does. Timing: the median of ``repeats`` calls
    per row (decode-then-attend: a third of them), a context's rows and a read pass timed in
    turns (:func:`interleaved_times`), each timed call right after untimed ones of the same row
    (``SETTLE_S`` seconds of them).
    ``torch_isa``: the instruction set of torch's kernels ("scalar", "avx2", "avx512";
    :func:`import_torch`), so that a run of ``simd_levels=("avx2",)`` on an AVX-512 machine times
    the dense baselines as an AVX2 machine runs them; None leaves torch's pick, and
    ``results["torch_isa"]`` names the level torch ran at either way (numpy's BLAS keeps its own).
    ``threads``: where turbokv's parallel work runs, for the whole process from here on: "pool"
    (its own pool, as in a numpy loop) or "openmp" (torch's OpenMP threads, as ``import
    turbokv.hf`` arranges in a transformers loop: :func:`turbokv.share_openmp_threads`; those threads
    spin between calls, so a call finds them awake); None: as the process runs now.
    ``results["thread_backend"]`` says which ran.
    ``show_progress`` draws a progress bar on stderr (tqdm). Raises ValueError for heads that are
    not (query, KV) with query a positive multiple of KV, and for a batch, repeat count or context
    below 1 (head_dim and bits: as KVCache refuses them)."""
    q_heads, kv_heads = heads
    if kv_heads < 1 or q_heads < 1 or q_heads % kv_heads:
        raise ValueError(f"heads must be (query, KV) with query a positive multiple of KV, got {tuple(heads)}")
    if threads is not None and threads not in THREAD_CHOICES:
        raise ValueError(f"threads must be one of {THREAD_CHOICES} or None, got {threads!r}")
    if batch < 1 or repeats < 1 or layers < 1 or not contexts or min(contexts) < 1:
        raise ValueError(f"batch, repeats, layers and every context must be at least 1, got batch {batch}, "
                         f"repeats {repeats}, layers {layers}, contexts {list(contexts)}")
    torch = import_torch(torch_isa)
    if torch is not None:
        import torch.nn.functional as F
    if threads is not None:
        use_thread_backend(threads)
    from ._progress import tqdm

    with ReadPass() as read_pass:  # held for the run: timed at the start and in turns with the rows
        start_bandwidth = read_pass.best_gbs(10)
        rng = np.random.default_rng(0)
        results = {"machine": machine_text(),
                   "batch": batch, "heads": [q_heads, kv_heads], "head_dim": head_dim, "layers": layers,
                   "read_bandwidth_start_gbs": start_bandwidth, "torch": torch is not None,
                   "torch_isa": torch.backends.cpu.get_cpu_capability().lower() if torch is not None else None,
                   "torch_sgemm_gflops": torch_sgemm_gflops(torch) if torch is not None else None,
                   "thread_backend": thread_backend(), "read_passes": [], "rows": []}
        for T in tqdm(contexts, desc="contexts", disable=not show_progress, leave=False):
            k = rng.standard_normal((batch, kv_heads, T, head_dim), dtype=np.float32)
            v = rng.standard_normal((batch, kv_heads, T, head_dim), dtype=np.float32)
            q = rng.standard_normal((batch, q_heads, 1, head_dim), dtype=np.float32)
            # Every row's call and bytes first, then all timed in turns (interleaved_times).
            # One (k, v) per layer: the first is the one generated, the others copies of it.
            kv_layers = [(k, v)] + [(k.copy(), v.copy()) for _ in range(layers - 1)]
            calls: Dict[str, Tuple[Callable[[], object], int]] = {
                "numpy float32 dense": (in_turn([functools.partial(numpy_attention, q, lk, lv)
                                                 for lk, lv in kv_layers]), repeats)}
            nbytes = {"numpy float32 dense": k.nbytes * 2}
            if torch is not None:
                tq = torch.from_numpy(q)
                t_layers = [(torch.from_numpy(lk), torch.from_numpy(lv)) for lk, lv in kv_layers]
                # One decode token: the query heads of a KV head can ride as a query sequence of
                # length 4 (no causal mask needed), which avoids SDPA repeating K/V for GQA.
                tq_grouped = tq.reshape(batch, kv_heads, q_heads // kv_heads, head_dim)
                calls["torch SDPA float32 (enable_gqa)"] = (in_turn([
                    functools.partial(F.scaled_dot_product_attention, tq, tk, tv, enable_gqa=True)
                    for tk, tv in t_layers]), repeats)
                calls["torch SDPA float32 (query heads as q_len)"] = (in_turn([
                    functools.partial(F.scaled_dot_product_attention, tq_grouped, tk, tv)
                    for tk, tv in t_layers]), repeats)
                nbytes["torch SDPA float32 (enable_gqa)"] = nbytes["torch SDPA float32 (query heads as q_len)"] = k.nbytes * 2
            first = None
            for level in simd_levels:
                for kb, vb in settings:
                    label = f"turbokv fused K{kb}V{vb}" + (f" {level}" if level else "")
                    caches = layer_caches(k, v, kb, vb, level, layers)
                    cache = caches[0]
                    # A cache's first attention also runs its one-time key probe (protect_keys):
                    # ~0.3 s per 32K-token layer on one thread, which the timed calls must not
                    # include. Untimed, each layer's cache could meet its first call inside the
                    # timing (a settle loop ends after one such call), as every call of a
                    # 12-layer row did at one thread on 16 cores (session 60).
                    for c in caches:
                        c.attention(q)
                    for mode, vmode in itertools.product(score_modes, value_modes):
                        if vmode == "int8" and vb > 4:
                            continue  # summed in float32 anyway: the exact row is that row
                        name = label + (" int8" if mode == "int8" else "") + (" int8 values" if vmode == "int8" else "")
                        fused = functools.partial(cache.attention, q, scores=mode, values=vmode)
                        fused()  # the path this row names must be the one that runs
                        if cache.last_attention_scores != mode or cache.last_attention_values != vmode:
                            raise RuntimeError(f"{name}: asked for {mode} scores and {vmode} values, ran "
                                               f"{cache.last_attention_scores} and {cache.last_attention_values}")
                        calls[name] = (in_turn([functools.partial(c.attention, q, scores=mode, values=vmode)
                                                for c in caches]), repeats)
                        nbytes[name] = cache.used_nbytes
                        if cache.last_attention_splits > 1:  # fewer streams than threads: split tokens
                            calls[name + " one thread"] = (in_turn([
                                functools.partial(c.attention, q, threaded=False, scores=mode, values=vmode)
                                for c in caches]), repeats)
                            nbytes[name + " one thread"] = cache.used_nbytes
                    first = first or (label, caches)
            label, caches = first

            def decode_then_attend(cache):
                kd, vd = cache.fetch()
                return numpy_attention(q, kd, vd)

            decode_label = label.replace("fused", "decode-then-attend")
            calls[decode_label] = (in_turn([functools.partial(decode_then_attend, c) for c in caches]),
                                   max(3, repeats // 3))
            nbytes[decode_label] = caches[0].used_nbytes
            # A read pass first in every round: the floor (the run's fastest pass) samples the
            # same stretches of time as the rows.
            calls = {READ_PASS: (read_pass, max(n for _, n in calls.values())), **calls}
            if torch is not None:
                with torch.inference_mode():
                    times = interleaved_times(calls, primed=PRIMED, settle_s=SETTLE_S)
            else:
                times = interleaved_times(calls, primed=PRIMED, settle_s=SETTLE_S)
            passes = times.pop(READ_PASS)
            results["read_passes"].append({"context": T, "gbs": [read_pass.nbytes / p / 1e9 for p in passes]})
            rows = {name: (statistics.median(times[name]), nbytes[name]) for name in times}
            best_dense = min(t for name, (t, _) in rows.items() if "dense" in name or "SDPA" in name)
            decode_t = rows[decode_label][0]
            for name, (t, row_bytes) in rows.items():
                results["rows"].append({
                    "context": T, "impl": name, "ms": t * 1e3, "kv_bytes": row_bytes,
                    "speedup_vs_best_dense": best_dense / t, "speedup_vs_decode_then_attend": decode_t / t})
        # The floor: the fastest pass of the whole run, known once every context has run.
        bandwidth = max([start_bandwidth] + [g for p in results["read_passes"] for g in p["gbs"]])
        results["read_bandwidth_gbs"] = bandwidth
        for row in results["rows"]:
            row["times_read_floor"] = row["ms"] / 1e3 / (row["kv_bytes"] / (bandwidth * 1e9))
        return results


def attention_table(results: Dict) -> str:
    """The results of :func:`run_attention` as a markdown table."""
    q_heads, kv_heads = results.get("heads", (Q_HEADS, KV_HEADS))
    passes = [g for p in results.get("read_passes", []) for g in p["gbs"]]
    spread = (f" (the fastest pass of the run; the best of 10 at the start {results['read_bandwidth_start_gbs']:.1f}, "
              f"{len(passes)} in turns with the rows {min(passes):.1f}-{max(passes):.1f}, median "
              f"{statistics.median(passes):.1f})") if passes else ""
    layers = results.get("layers", 1)
    in_turns = f", {layers} layers' caches per row called in turn" if layers > 1 else ""
    torch_isa = f"; torch's kernels at {results['torch_isa']}" if results.get("torch_isa") else ""
    if results.get("torch_sgemm_gflops"):
        torch_isa += f" (its 1024^3 float32 product {results['torch_sgemm_gflops']:.0f} GFLOP/s)"
    backend = {"pool": "turbokv's own thread pool", "openmp": "turbokv on torch's OpenMP threads"}.get(
        results.get("thread_backend"), "")
    backend = f"; {backend}" if backend else ""
    lines = [f"Decode attention, batch {results.get('batch', 1)}, {q_heads} query / {kv_heads} KV heads, "
             f"head_dim {results.get('head_dim', HEAD_DIM)}{in_turns}, "
             f"on {results['machine']}{torch_isa}{backend}; read bandwidth {results['read_bandwidth_gbs']:.1f} GB/s{spread}", "",
             "| context | implementation | ms | KV MB | vs best dense | vs decode-then-attend | x read floor |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["rows"]:
        fused = r["impl"].startswith("turbokv fused")
        vs_decode = f"{r['speedup_vs_decode_then_attend']:.1f}x" if fused else ""
        floor = f"{r['times_read_floor']:.1f}" if fused else ""
        lines.append(f"| {r['context']} | {r['impl']} | {r['ms']:.2f} | {r['kv_bytes'] / 1e6:.1f} | "
                     f"{r['speedup_vs_best_dense']:.2f}x | {vs_decode} | {floor} |")
    return "\n".join(lines)
