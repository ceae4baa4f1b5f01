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

    def writer():
        while time.monotonic() < stop:
            cache.update(new_k, new_v)
            cache.trim(1)

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
    for r in reads:
        assert np.array_equal(r, before) or np.allclose(r, longer, rtol=1e-5, atol=1e-6) or \
            np.allclose(r, before, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cache.attention(q, threaded=False), before)
