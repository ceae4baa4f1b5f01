"""Caches used from several Python threads at once (the GIL is released in every heavy call)."""

import threading
import time

import numpy as np

import turbokv


def tokens(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def run_threads(target, count):
    errors = []

    def wrapped(i):
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_one_cache_per_thread_matches_single_threaded_results():
    rng = np.random.default_rng(0)
    steps = [(tokens(rng, 1, 2, 3, 64), tokens(rng, 1, 2, 3, 64), tokens(rng, 1, 4, 3, 64))
             for _ in range(40)]

    def run_alone():
        cache = turbokv.KVCache(64, 2, key_bits=3, value_bits=2, residual_window=5)
        return [cache.update(k, v) or cache.attention(q, threaded=False) for k, v, q in steps]

    expect = run_alone()
    results = {}

    def worker(i):
        results[i] = run_alone()

    run_threads(worker, 4)
    for outputs in results.values():
        for got, want in zip(outputs, expect):
            np.testing.assert_array_equal(got, want)


def test_shared_cache_readers_and_a_writer_for_a_bounded_time():
    rng = np.random.default_rng(1)
    cache = turbokv.KVCache(64, 2, key_bits=4, value_bits=4)
    cache.update(tokens(rng, 1, 2, 300, 64), tokens(rng, 1, 2, 300, 64))
    q = tokens(rng, 1, 4, 1, 64)
    before = cache.attention(q, threaded=False)
    stop = time.monotonic() + 3.0
    new_k, new_v = tokens(rng, 1, 2, 1, 64), tokens(rng, 1, 2, 1, 64)
    reads = []

    def reader(i):
        while time.monotonic() < stop:
            # A reader sees the cache before or after a writer's step, never a torn state: with
            # the writer appending then trimming the same token, every read equals `before` or
            # the one-token-longer result.
            reads.append(cache.attention(q, threaded=(i % 2 == 0)))

    writes = []

    def writer():
        while time.monotonic() < stop:
            cache.update(new_k, new_v)
            cache.trim(1)
            writes.append(1)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache.update(new_k, new_v)
    q_after = cache.attention(q[:, :, :1], threaded=False)
    cache.trim(1)
    # q attends the newest token as its own position, so the two valid states give two results.
    longer = q_after
    assert len(reads) > 10
    # Three readers whose calls overlap must not keep the writer out (a reader-preferring lock did).
    assert len(writes) > 10, len(writes)
    for r in reads:
        assert np.array_equal(r, before) or np.allclose(r, longer, rtol=1e-5, atol=1e-6) or \
            np.allclose(r, before, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cache.attention(q, threaded=False), before)


BASE, GROW = 40, 4096


def race(cache, reader, seconds=2.0, readers=2):
    """A writer grows the cache by GROW tokens and trims them again (every 5th cycle it clears it
    and refills it with the other batch size) while `readers` threads call reader(i) in a loop.
    Returns the number of reads. Before the fix, fetch() beside this writer aborted the process."""
    rng = np.random.default_rng(5)
    grow = {b: tokens(rng, b, 2, GROW, 64) for b in (1, 2)}
    stop = time.monotonic() + seconds
    reads = []

    def read_loop(i):
        while time.monotonic() < stop:
            reader(i)
            reads.append(1)

    def writer(_):
        cycle = 0
        while time.monotonic() < stop:
            batch = cache.batch
            cache.update(grow[batch], grow[batch])
            cache.trim(GROW)
            cycle += 1
            if cycle % 5 == 0:
                other = 3 - batch
                cache.clear()
                cache.update(grow[other][:, :, :BASE], grow[other][:, :, :BASE])

    threads = [threading.Thread(target=read_loop, args=(i,)) for i in range(readers)]
    threads.append(threading.Thread(target=writer, args=(0,)))
    errors = []
    for t in threads:
        t.run = (lambda run: lambda: _record(run, errors))(t.run)
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return len(reads)


def _record(run, errors):
    try:
        run()
    except BaseException as e:  # noqa: BLE001 - reported by race()
        errors.append(e)


def racing_cache():
    rng = np.random.default_rng(6)
    cache = turbokv.KVCache(64, 2, key_bits=4, value_bits=3, residual_window=16)
    cache.update(tokens(rng, 1, 2, BASE, 64), tokens(rng, 1, 2, BASE, 64))
    return cache


def test_fetch_beside_a_growing_and_trimming_writer():
    cache = racing_cache()
    shapes = set()

    def reader(_):
        k, v = cache.fetch()
        assert k.shape == v.shape and k.shape[1:] == (2, k.shape[2], 64)
        shapes.add(k.shape[:3])

    assert race(cache, reader) > 10
    # Only whole states: batch 1 or 2 at BASE or BASE + GROW tokens (0 just after a clear).
    assert shapes <= {(b, 2, n) for b in (1, 2) for n in (0, BASE, BASE + GROW)}


def test_attention_with_and_without_key_mask_beside_a_writer():
    cache = racing_cache()
    rng = np.random.default_rng(7)
    q = {b: tokens(rng, b, 4, 1, 64) for b in (1, 2)}
    masks = {(b, n): np.ones((b, n), bool) for b in (1, 2) for n in (BASE, BASE + GROW)}
    outcomes = {"ran": 0, "refused": 0}

    def reader(i):
        b = 1 + (i % 2)
        mask = masks[(b, BASE + GROW)] if i % 2 else None
        try:
            out = cache.attention(q[b], key_mask=mask, threaded=bool(i % 2))
            assert out.shape == (b, 4, 1, 64) and np.isfinite(out).all()
            outcomes["ran"] += 1
        except ValueError as e:  # the mask or batch did not fit the state the cache held
            assert any(w in str(e) for w in ("key_mask", "batch", "empty cache")), e
            outcomes["refused"] += 1

    race(cache, reader, readers=2)
    assert outcomes["ran"] > 0


def test_sizes_snapshots_and_saves_beside_a_writer(tmp_path):
    cache = racing_cache()
    saved = []

    def reader(i):
        if i == 0:
            assert cache.offset in (0, BASE, BASE + GROW)
            assert cache.nbytes >= 0 and cache.used_nbytes >= 0
            meta, state = cache.snapshot()
            if meta["batch"]:
                assert state["keys.codes"].shape[:2] == (meta["batch"], 2)
        else:
            path = tmp_path / f"race-{len(saved) % 3}.tkv"
            turbokv.save_cache(path, [cache])
            (restored,) = turbokv.load_cache(path)  # checksummed and checked against its meta
            saved.append(restored.offset)

    race(cache, reader, readers=2)
    assert saved and set(saved) <= {0, BASE, BASE + GROW}  # 0: just after a clear


def test_update_and_fetch_is_one_step():
    # Two threads each append one token and fetch: each result must end with its own token
    # (no other update slipped in between its update and its fetch).
    cache = turbokv.KVCache(64, 2, key_bits=0, value_bits=0)  # float16: tokens come back exact
    rng = np.random.default_rng(8)
    cache.update(tokens(rng, 1, 2, 1, 64), tokens(rng, 1, 2, 1, 64))

    def worker(i):
        mine = np.full((1, 2, 1, 64), float(i + 1), np.float32)
        for _ in range(200):
            k, _ = cache.update_and_fetch(mine, mine)
            assert (k[:, :, -1] == i + 1).all()

    run_threads(worker, 3)
    assert cache.offset == 1 + 3 * 200
