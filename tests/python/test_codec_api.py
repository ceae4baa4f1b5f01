"""The public Codec API: shapes, dtypes, layouts, round trips and clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

import turbokv
from turbokv import reference

CODECS = [turbokv.Codec, reference.Codec]


@pytest.mark.parametrize("Codec", CODECS)
def test_shapes_and_dtypes(Codec, rng):
    codec = Codec(head_dim=64, bits=3)
    x = rng.standard_normal((2, 5, 64)).astype(np.float32)
    enc = codec.encode(x)
    assert enc.shape == (2, 5)
    assert enc.codes.shape == (2, 5, 24) and enc.codes.dtype == np.uint8
    assert enc.norms.dtype == np.float32
    assert enc.nbytes == 10 * (24 + 4) == 10 * codec.bytes_per_vector
    out = codec.decode(enc)
    assert out.shape == x.shape and out.dtype == np.float32
    s = codec.scores(x[0, :3], enc)
    assert s.shape == (3, 2, 5) and s.dtype == np.float32


def test_encoded_arrays_are_read_only_and_rebuildable(rng):
    codec = turbokv.Codec(128, 3, mode="prod")
    x = rng.standard_normal((7, 128)).astype(np.float32)
    enc = codec.encode(x)
    for a in (enc.codes, enc.norms, enc.qjl, enc.residual_norms):
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[...] = 0
    rebuilt = turbokv.Encoded(enc.codes.copy(), enc.norms.copy(), enc.qjl.copy(),
                              enc.residual_norms.copy())
    np.testing.assert_array_equal(codec.decode(rebuilt), codec.decode(enc))
    np.testing.assert_array_equal(codec.decode(enc[2:5]), codec.decode(enc)[2:5])
    np.testing.assert_array_equal(codec.decode(enc[3]), codec.decode(enc)[3])


def test_non_contiguous_and_float16_inputs(rng):
    codec = turbokv.Codec(64, 4)
    base = rng.standard_normal((10, 128)).astype(np.float32)
    strided = base[::2, :64]  # row stride 256 floats: read in place
    reversed_rows = base[::-1, :64]
    fortran = np.asfortranarray(base[:, :64])  # rows not contiguous: copied once
    dense = np.ascontiguousarray(base[:, :64])
    full = codec.encode(dense)
    np.testing.assert_array_equal(codec.encode(strided).codes, full.codes[::2])
    np.testing.assert_array_equal(codec.encode(reversed_rows).codes, full.codes[::-1])
    np.testing.assert_array_equal(codec.encode(fortran).codes, full.codes)
    half = dense.astype(np.float16)
    np.testing.assert_array_equal(codec.encode(half).codes, codec.encode(half.astype(np.float32)).codes)
    read_only = dense.copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(codec.encode(read_only).codes, full.codes)


@pytest.mark.parametrize("Codec", CODECS)
def test_empty_input_gives_empty_output(Codec):
    codec = Codec(32, 2, mode="prod")
    enc = codec.encode(np.zeros((0, 32), np.float32))
    assert enc.shape == (0,) and enc.nbytes == 0
    assert codec.decode(enc).shape == (0, 32)
    assert codec.scores(np.ones((3, 32), np.float32), enc).shape == (3, 0)
    assert codec.scores(np.ones((0, 32), np.float32), codec.encode(np.ones((4, 32), np.float32))).shape == (0, 4)


@pytest.mark.parametrize("Codec", CODECS)
@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(head_dim=7, bits=4), ValueError, "head_dim"),
        (dict(head_dim=2048, bits=4), ValueError, "head_dim"),
        (dict(head_dim=64.0, bits=4), TypeError, "head_dim"),
        (dict(head_dim=64, bits=0), ValueError, "bits must be in 1..8"),
        (dict(head_dim=64, bits=9), ValueError, "bits must be in 1..8"),
        (dict(head_dim=64, bits=4, mode="fast"), ValueError, "unknown mode"),
        (dict(head_dim=64, bits=4, norm_dtype="bfloat16"), ValueError, "norm_dtype"),
        (dict(head_dim=64, bits=4, seed=-1), ValueError, "seed"),
        (dict(head_dim=64, bits=4, mode="prod", norm_correction=True), ValueError, "mse"),
    ],
)
def test_bad_settings(Codec, kwargs, error, words):
    with pytest.raises(error, match=words):
        Codec(**kwargs)


@pytest.mark.parametrize("Codec", CODECS)
def test_bad_inputs_name_the_fix(Codec, rng):
    codec = Codec(64, 4)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    with pytest.raises(TypeError, match="astype"):
        codec.encode(x.astype(np.int16))
    with pytest.raises(TypeError, match="float32"):
        codec.encode(x.astype(np.int32))
    with pytest.raises(ValueError, match="head_dim=64"):
        codec.encode(x[:, :32])
    with pytest.raises(ValueError, match="head_dim"):
        codec.encode(np.float32(1.0))
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[1, 7] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            codec.encode(y)
    enc = codec.encode(x)
    with pytest.raises(TypeError, match="Encoded"):
        codec.decode(x)
    with pytest.raises(ValueError, match="bytes per vector"):
        Codec(64, 3).decode(enc)
    with pytest.raises(ValueError, match="mode"):
        Codec(64, 4, mode="prod").decode(enc)
    with pytest.raises(ValueError, match="norms are float32"):
        Codec(64, 4, norm_dtype="float16").decode(enc)


def test_cpp_reports_the_bad_row(rng):
    x = rng.standard_normal((5, 64)).astype(np.float32)
    x[3, 0] = np.nan
    with pytest.raises(ValueError, match="vector 3"):
        turbokv.Codec(64, 4).encode(x)


def test_float16_norm_overflow_is_an_error():
    codec = turbokv.Codec(64, 4, norm_dtype="float16")
    with pytest.raises(ValueError, match="float16"):
        codec.encode(np.full((1, 64), 1e4, np.float32))


def test_encoded_validation():
    with pytest.raises(TypeError, match="uint8"):
        turbokv.Encoded(np.zeros((2, 4), np.int8), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="shape"):
        turbokv.Encoded(np.zeros((3, 4), np.uint8), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="together"):
        turbokv.Encoded(np.zeros((2, 4), np.uint8), np.zeros(2, np.float32), qjl=np.zeros((2, 1), np.uint8))


def test_simd_override_is_honoured(monkeypatch):
    monkeypatch.setenv("TURBOKV_SIMD", "scalar")
    assert turbokv.Codec(64, 4).simd == "scalar"
    monkeypatch.setenv("TURBOKV_SIMD", "nonsense")
    with pytest.raises(ValueError, match="unknown SIMD level"):
        turbokv.Codec(64, 4)


def _fresh_python(code: str, env_threads, cpus=None):
    """Runs ``code`` in a new interpreter (the attention pool is fixed at its first use) with
    TURBOKV_NUM_THREADS set to ``env_threads`` (None: unset), on ``cpus`` only (None: all of this
    process's); returns the finished process."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TURBOKV_NUM_THREADS"}
    if env_threads is not None:
        env["TURBOKV_NUM_THREADS"] = env_threads
    prefix = f"import os; os.sched_setaffinity(0, {sorted(cpus)!r}); " if cpus is not None else ""
    return subprocess.run([sys.executable, "-c", prefix + code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_attention_threads_follow_the_environment_or_the_usable_cpus():
    import os

    done = _fresh_python("import turbokv; print(turbokv.attention_threads())", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3"]
    if not hasattr(os, "sched_getaffinity"):
        return
    allowed = sorted(os.sched_getaffinity(0))
    done = _fresh_python("import turbokv; print(turbokv.attention_threads())", None)
    assert done.stdout.split() == [str(len(allowed))], done.stderr
    # As under taskset or in a container given one CPU: one thread, whatever the host has.
    done = _fresh_python("import turbokv; print(turbokv.attention_threads())", None, cpus=allowed[:1])
    assert done.stdout.split() == ["1"], done.stderr


@pytest.mark.parametrize("bad", ["eight", "8x", "0", "-1", "100000"])
def test_a_thread_count_that_is_not_one_is_refused_not_ignored(bad):
    # Threaded attention, attention_threads() and an update large enough to encode on the pool
    # (a prefill: 4,096 x 64 floats) raise, that update leaving the cache as it was; small updates
    # need no pool. Before, "8x" ran 8 threads and "eight" all.
    code = ("import numpy as np, turbokv\n"
            "c = turbokv.KVCache(64, 1, key_bits=4, value_bits=4)\n"
            "x = np.ones((1, 1, 8, 64), np.float32)\n"
            "big = np.ones((1, 1, 4096, 64), np.float32)\n"
            "c.update(x, x)\n"
            "for call in (lambda: c.attention(np.ones((1, 2, 1, 64), np.float32)), turbokv.attention_threads,\n"
            "             lambda: c.update(big, big)):\n"
            "    try:\n"
            "        call()\n"
            "    except ValueError as e:\n"
            "        print('refused:', e)\n"
            "print('offset', c.offset)\n")
    done = _fresh_python(code, bad)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "offset 8", done.stdout
    assert len(lines) == 4 and all(f"TURBOKV_NUM_THREADS={bad} is not a whole number from 1 to 4096" in l
                                   for l in lines[:3]), done.stdout
    # The calling thread alone needs no pool: threaded=False still attends.
    done = _fresh_python(code.replace("c.attention(np.ones((1, 2, 1, 64), np.float32))",
                                      "c.attention(np.ones((1, 2, 1, 64), np.float32), threaded=False)"), bad)
    assert done.stdout.count("refused:") == 2, done.stdout


def test_supported_levels_run_and_others_are_refused(monkeypatch):
    levels = turbokv.supported_simd()
    assert levels[0] == "scalar" and levels[-1] == turbokv.detect_simd()
    for level in levels:
        monkeypatch.setenv("TURBOKV_SIMD", level)
        assert turbokv.Codec(64, 4).simd == level
    for level in {"avx2", "avx512", "neon"} - set(levels):
        monkeypatch.setenv("TURBOKV_SIMD", level)
        with pytest.raises(RuntimeError, match="supports at most"):
            turbokv.Codec(64, 4)


def test_bits_per_coordinate():
    assert turbokv.Codec(128, 4).bits_per_coordinate == 4.25
    assert turbokv.Codec(128, 4, norm_dtype="float16").bits_per_coordinate == 4.125
    assert turbokv.Codec(128, 3, mode="prod").bits_per_coordinate == 3.5
    assert reference.Codec(96, 3, mode="prod").bits_per_coordinate == turbokv.Codec(96, 3, mode="prod").bits_per_coordinate


def _cpuinfo():
    """(vendor, flags) from /proc/cpuinfo, or None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    vendor = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("vendor_id")), "")
    flags = next((l.split(":", 1)[1].split() for l in lines if l.startswith("flags")), [])
    return vendor, set(flags)


def test_kernel_routes_name_this_cpus_features():
    routes = turbokv.kernel_routes()
    assert set(routes) == {"avx512_vnni", "avx512_vbmi", "avx_vnni", "gathers_slow", "gds_mitigation", "pdep_slow",
                           "lane_swap_slow"}
    assert all(isinstance(v, bool) for v in routes.values())
    if "avx2" not in turbokv.supported_simd():  # arm64 (or an x86 without AVX2): no x86 routes
        assert not any(routes.values())
        return
    info = _cpuinfo()
    if info is None:  # not Linux: nothing independent to compare with
        return
    vendor, flags = info
    # The kernel's own view of the CPU, independent of turbokv's cpuid checks.
    assert routes["avx512_vnni"] == ("avx512_vnni" in flags)
    assert routes["avx512_vbmi"] == ("avx512vbmi" in flags)
    assert routes["avx_vnni"] == ("avx_vnni" in flags)
    # Linux's own report of Intel's Gather Data Sampling mitigation (Documentation/admin-guide/hw-vuln/
    # gather_data_sampling.rst): the microcode's, or a guest that cannot see its host's.
    gds = _gds_status()
    assert routes["gds_mitigation"] == (gds.startswith("Mitigation: Microcode")
                                        or gds.startswith("Unknown: Dependent on hypervisor status")), gds
    if os.environ.get("TURBOKV_GATHERS", "auto") == "auto" and vendor != "AuthenticAMD":
        # Off AMD Zen, gathers are slow only under that mitigation; pdep and lane swaps are fast.
        assert routes["gathers_slow"] == routes["gds_mitigation"]
        assert not routes["pdep_slow"] and not routes["lane_swap_slow"]


def _gds_status():
    """The first line of Linux's Gather Data Sampling report, or "" where there is none."""
    try:
        with open("/sys/devices/system/cpu/vulnerabilities/gather_data_sampling") as f:
            return f.readline().strip()
    except OSError:
        return ""


@pytest.mark.parametrize("value, slow", [("fast", False), ("slow", True), ("bogus", None)])
def test_turbokv_gathers_overrides_the_route_and_refuses_what_it_cannot_take(value, slow):
    if slow is not None and "avx2" not in turbokv.supported_simd():
        pytest.skip("gathers are an x86 route (a value it cannot take is refused everywhere)")
    # The flag is set once per process: each value in a fresh interpreter. The 8-bit keys' scores
    # must not depend on the route (same table values), compared against the numpy reference.
    code = f"""
import numpy as np, turbokv
from turbokv import reference
try:
    routes = turbokv.kernel_routes()
except ValueError as e:
    print("ERROR", e)
    try:
        turbokv.KVCache(64, 2)
    except ValueError as e:
        print("CACHE ERROR", e)
    raise SystemExit(0)
print("SLOW", routes["gathers_slow"])
rng = np.random.default_rng(3)
x = rng.standard_normal((64, 128)).astype(np.float32)
q = rng.standard_normal((4, 128)).astype(np.float32)
ours, ref = turbokv.Codec(128, 8, seed=5), reference.Codec(128, 8, seed=5)
enc = ours.encode(x)
want = ref.scores(q, ref.encode(x))
close = np.allclose(ours.scores(q, enc), want, rtol=1e-4, atol=1e-4)
close_int16 = np.allclose(ours.scores(q, enc, precision="int8"), want, rtol=1e-3, atol=0.05)
print("CLOSE", bool(close and close_int16))
"""
    # At the AVX2 level, where 8-bit lookups take the gathers or the scalar loads (AVX-512 VBMI
    # machines read them by byte planes at their own level).
    env = {**os.environ, "TURBOKV_GATHERS": value}
    if slow is not None:
        env["TURBOKV_SIMD"] = "avx2"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if slow is None:
        assert "\nCACHE ERROR TURBOKV_GATHERS='bogus': use one of auto, fast, slow" in out.stdout, out.stdout
        return
    assert f"SLOW {slow}" in out.stdout and "CLOSE True" in out.stdout, out.stdout


def test_benchmark_headers_name_the_usable_cores(monkeypatch):
    import os

    from turbokv.eval import benchmarks

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert benchmarks.cores_text() == "16 cores (2 usable)" and benchmarks.usable_cpus() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert benchmarks.cores_text() == "16 cores"


def test_benchmark_headers_name_the_routes():
    from turbokv.eval.benchmarks import machine_text

    text = machine_text()
    assert turbokv.detect_simd() in text and ("gathers" in text or "scalar loads" in text)
    if "avx2" in turbokv.supported_simd():  # the AVX2 level's 2-3-bit float32 lookups, by Zen 1 or not
        small = "byte planes" if turbokv.kernel_routes()["lane_swap_slow"] else "vpermps"
        assert f"2-3-bit lookups by {small}" in text
        assert ("GDS mitigation reported" in text) == turbokv.kernel_routes()["gds_mitigation"]
