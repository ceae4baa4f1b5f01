"""Which threads run turbokv's parallel work: its own pool, or torch's OpenMP threads once
``import turbokv.hf`` shared them (turbokv.share_openmp_threads). Each case runs in a fresh
interpreter: the choice holds for the rest of a process."""

import os
import subprocess
import sys

import pytest

# Prints the backend and a digest of everything parallel work computes: a prefill's encode (a
# pooled append), prefill protection's probe (its KL), attention on tiles and on codes (prefill),
# decode with the sequence split; 4 threads so that every item kind runs concurrently.
WORKLOAD = """
import hashlib, numpy as np, turbokv
{setup}
rng = np.random.default_rng(0)
digest = hashlib.sha256()
for settings in (dict(key_bits=4, value_bits=4), dict(key_bits=3, value_bits=2, key_mode="prod")):
    c = turbokv.KVCache(64, 3, **settings)
    k = rng.standard_normal((2, 3, 2100, 64), dtype=np.float32)
    c.update(k, rng.standard_normal(k.shape, dtype=np.float32))
    q = rng.standard_normal((2, 9, 300, 64), dtype=np.float32)
    for path in ("tiles", "codes"):
        digest.update(c.attention(q, path=path).tobytes())
    digest.update(repr(c.protection["tried"]).encode())
    digest.update(np.concatenate([a.ravel() for a in c.fetch()]).tobytes())
c = turbokv.KVCache(64, 1, protect_keys=False)
c.update(*rng.standard_normal((2, 1, 1, 8200, 64), dtype=np.float32))
digest.update(c.attention(rng.standard_normal((1, 4, 1, 64), dtype=np.float32)).tobytes())
assert c.last_attention_splits > 1 or turbokv.attention_threads() == 1, c.last_attention_splits
print(turbokv.thread_backend(), turbokv.attention_threads(), digest.hexdigest())
"""


def run(setup: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("TURBOKV_OPENMP", "TURBOKV_NUM_THREADS", "OMP_NUM_THREADS")}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", WORKLOAD.format(setup=setup)], env=environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.hf
def test_torch_openmp_threads_give_the_pools_results_bit_for_bit():
    """After import turbokv.hf the work runs on torch's OpenMP threads (their count: torch's),
    and every output equals the one of turbokv's own pool of as many threads, bit for bit (one
    thread differs in the decode's rounding: it does not split the sequence)."""
    shared = run("import torch, turbokv.hf; torch.set_num_threads(4)\n"
                 "assert turbokv.hf.OPENMP_LIBRARY and 'torch' in turbokv.hf.OPENMP_LIBRARY")
    own = run("", TURBOKV_NUM_THREADS="4")
    assert shared[:2] == ["openmp", "4"] and own[:2] == ["pool", "4"]
    assert shared[2] == own[2]


@pytest.mark.hf
def test_the_shared_thread_count_follows_torch_unless_turbokv_num_threads_is_set():
    code = ("import torch, turbokv, turbokv.hf\n"
            "counts = []\n"
            "for n in (3, 1, 2):\n"
            "    torch.set_num_threads(n); counts.append(turbokv.attention_threads())\n"
            "print(turbokv.thread_backend(), *counts)\n")
    environment = {k: v for k, v in os.environ.items() if k not in ("TURBOKV_OPENMP", "TURBOKV_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["openmp", "3", "1", "2"], done.stderr
    done = subprocess.run([sys.executable, "-c", code], env={**environment, "TURBOKV_NUM_THREADS": "5"},
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["openmp", "5", "5", "5"], done.stderr


@pytest.mark.parametrize("setup, backend", [
    ("", "pool"),  # torch not imported: nothing to share
    pytest.param("import torch; assert turbokv.share_openmp_threads('numpy') is None", "pool",  # no runtime there
                 marks=pytest.mark.hf),
])
def test_without_a_host_runtime_turbokv_keeps_its_pool(setup, backend):
    assert run(setup, TURBOKV_NUM_THREADS="2")[0] == backend


@pytest.mark.hf
def test_turbokv_openmp_0_keeps_the_pool():
    got = run("import turbokv.hf; assert turbokv.hf.OPENMP_LIBRARY is None", TURBOKV_OPENMP="0",
              TURBOKV_NUM_THREADS="2")
    assert got[0] == "pool"


@pytest.mark.hf
def test_a_forked_child_goes_back_to_turbokvs_pool_and_computes_the_same():
    """A forked child has none of the OpenMP runtime's threads: it uses turbokv's pool (its caller
    runs the items) and computes the parent's results, instead of waiting on threads that do not
    exist there."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    code = """
import os, numpy as np, torch, turbokv, turbokv.hf
torch.set_num_threads(2)
c = turbokv.KVCache(64, 2, protect_keys=False)
rng = np.random.default_rng(0)
k = rng.standard_normal((1, 2, 3000, 64), dtype=np.float32)
c.update(k, k)
q = rng.standard_normal((1, 8, 300, 64), dtype=np.float32)
want = c.attention(q)
torch.ones(500, 500) @ torch.ones(500, 500)  # torch's OpenMP threads exist in the parent
pid = os.fork()
if pid == 0:
    same = np.array_equal(c.attention(q), want)
    os._exit(0 if same and turbokv.thread_backend() == "pool" else 3)
_, status = os.waitpid(pid, 0)
print(turbokv.thread_backend(), os.waitstatus_to_exitcode(status))
"""
    environment = {k: v for k, v in os.environ.items() if k not in ("TURBOKV_OPENMP", "TURBOKV_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split() == ["openmp", "0"], done.stderr
