"""The benchmark scripts run (tiny sizes; their timings are not checked: speed is never a test)."""

import itertools
import json
import os
import pathlib
import subprocess
import sys
import time
import types

import pytest

import turbokv

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"


def run(script, *args, tmp_path):
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, str(BENCH / script), *args, "--json", str(out)], check=True,
                   capture_output=True, timeout=300)
    return json.loads(out.read_text())


def test_codec_throughput_script(tmp_path):
    result = run("codec_throughput.py", "--vectors", "4096", "--keys", "2048", "--repeats", "1",
                 "--bits", "3", "8", tmp_path=tmp_path)
    import turbokv
    levels = turbokv.supported_simd()
    assert {(r["impl"], r["bits"]) for r in result["encode"]} >= {(f"turbokv {lv}{into}", b) for lv in levels
                                                                   for b in (3, 8) for into in ("", ", into reused arrays")}
    simd = [lv for lv in levels if lv != "scalar"]
    # float32 rows per (queries, level, width), plus integer rows for both widths on SIMD levels
    assert len(result["scores"]) == 3 * len(levels) * 2 + 3 * len(simd) * 2
    for bits in (3, 8):
        assert {r["impl"] for r in result["scores"] if r["bits"] == bits} >= {f"turbokv {lv} int8" for lv in simd}


def test_attention_script(tmp_path):
    result = run("attention.py", "--contexts", "300", "--repeats", "1", tmp_path=tmp_path)
    names = {r["impl"] for r in result["rows"]}
    assert "turbokv fused K4V4" in names and "numpy float32 dense" in names


@pytest.mark.hf
def test_attention_script_runs_torch_at_the_level_asked(tmp_path):
    import turbokv
    result = run("attention.py", "--contexts", "300", "--repeats", "1", "--simd", "avx2", "--torch-isa", "avx2",
                 tmp_path=tmp_path)
    assert "avx2" in turbokv.supported_simd()  # x86-64 hosts of this suite; else the script refuses
    # torch's own report of its kernels' level, read after the import the option steered
    assert result["torch_isa"] == "avx2" and result["torch"] and result["torch_sgemm_gflops"] > 0
    names = {r["impl"] for r in result["rows"]}
    assert {"turbokv fused K4V4 avx2", "torch SDPA float32 (query heads as q_len)"} <= names


def _torch_has_mkl() -> bool:
    # asked in a child: importing torch here would fix its level for this worker's later tests
    code = "import torch; print(torch.backends.mkl.is_available())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip() == "True"


TORCH_HAS_MKL = _torch_has_mkl()


@pytest.mark.hf
@pytest.mark.skipif(not TORCH_HAS_MKL, reason="torch without MKL: no MKL level to cap")
def test_torch_at_avx2_runs_its_mkl_products_at_avx2():
    # ATen's level alone leaves MKL at its own pick (AVX-512 where the CPU has it); MKL reads its
    # cap at its first call, which must come before the variable is put back.
    code = ("import os\n"
            "from turbokv.eval.benchmarks import import_torch\n"
            "torch = import_torch('avx2')\n"
            "assert 'MKL_ENABLE_INSTRUCTIONS' not in os.environ  # put back as it was\n"
            "a = torch.ones(64, 64)\n"
            "a @ a\n")
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")}
    env["MKL_VERBOSE"] = "1"  # MKL names the instruction set it runs at in its first line
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120,
                         env=env).stdout
    banner = [line for line in out.splitlines() if line.startswith("MKL_VERBOSE") and "Intel(R) 64" in line]
    assert banner, out
    assert "AVX-512" not in banner[0], banner[0]
    if "(Intel(R) AVX" not in banner[0]:
        # On AMD CPUs MKL's banner reads "Intel(R) Architecture processors", naming no instruction
        # set (seen on a Zen 3 EPYC VM, session 62): the level it runs at cannot be read here.
        pytest.skip(f"MKL names no instruction set on this CPU: {banner[0]!r}")
    assert "(Intel(R) AVX2)" in banner[0], banner[0]


@pytest.mark.hf
@pytest.mark.skipif(not TORCH_HAS_MKL, reason="torch without MKL: no MKL level to cap")
def test_torch_levels_script_runs_each_cap_in_its_own_process(tmp_path):
    out = tmp_path / "levels"
    subprocess.run([sys.executable, str(BENCH / "torch_levels.py"), "--rounds", "1", "--small", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    result = json.loads(out.with_suffix(".json").read_text())
    # ATen's level as torch itself reports it in each cell's process
    assert result["runs"]["ATen at AVX2"][0]["aten"] == "AVX2" == result["runs"]["both at AVX2"][0]["aten"]
    assert all(cell[0]["decode_s"] > 0 and cell[0]["chunk_s"] > 0 for cell in result["runs"].values())
    assert "| MKL at AVX2 |" in out.with_suffix(".md").read_text()


@pytest.mark.hf
def test_torch_at_another_level_than_it_was_imported_at_is_refused():
    # torch fixes its level at import: asking for another one afterwards must fail, not be ignored
    code = ("import os, torch\n"
            "from turbokv.eval.benchmarks import import_torch\n"
            "level = torch.backends.cpu.get_cpu_capability().lower()\n"
            "other = 'avx2' if level != 'avx2' else 'scalar'\n"
            "assert import_torch(None) is torch\n"
            "try:\n"
            "    import_torch(other)\n"
            "except RuntimeError as e:\n"
            "    assert 'fresh process' in str(e), e\n"
            "else:\n"
            "    raise SystemExit('not refused')\n"
            "assert 'ATEN_CPU_CAPABILITY' not in os.environ  # put back as it was\n"
            "try:\n"
            "    import_torch('sse4')\n"
            "except ValueError as e:\n"
            "    assert 'sse4' in str(e)\n"
            "else:\n"
            "    raise SystemExit('unknown level not refused')\n")
    import os
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)


def test_floor_phases_script(tmp_path):
    result = run("floor_phases.py", "--rounds", "3", "--context", "300", tmp_path=tmp_path)
    rounds = result["rounds"]
    assert len(rounds) == 3 and result["setting"] == "K4V4 int8 scores, int8 values"
    assert [r["gbs"] for r in rounds] == sorted(r["gbs"] for r in rounds)
    for r in rounds:  # each round's decode against that round's pass
        assert r["times_floor"] == pytest.approx(r["ms"] / 1e3 / (result["kv_bytes"] / (r["gbs"] * 1e9)))


def test_floor_phases_script_idle_gaps(tmp_path):
    result = run("floor_phases.py", "--gaps", "0", "0.01", "--passes", "2", tmp_path=tmp_path)
    assert [g["gap_s"] for g in result["gaps"]] == [0.0, 0.01]
    assert all(len(g["gbs"]) == 2 and min(g["gbs"]) > 0 for g in result["gaps"])


def test_attention_script_int8_rows(tmp_path):
    result = run("attention.py", "--contexts", "300", "--repeats", "1", "--settings", "4,4", "8,4",
                 "--scores", "exact", "int8", tmp_path=tmp_path)
    names = {r["impl"] for r in result["rows"]}
    # integer scores apply to every width: int16 sums for K8V4's 8-bit keys
    assert {"turbokv fused K4V4", "turbokv fused K4V4 int8", "turbokv fused K8V4", "turbokv fused K8V4 int8"} <= names


def test_attention_script_int8_value_rows(tmp_path):
    result = run("attention.py", "--contexts", "300", "--repeats", "1", "--settings", "4,4", "4,8",
                 "--scores", "int8", "--values", "exact", "int8", tmp_path=tmp_path)
    names = {r["impl"] for r in result["rows"]}
    # int8 values apply to values of at most 4 bits: none for K4V8
    assert {"turbokv fused K4V4 int8", "turbokv fused K4V4 int8 int8 values", "turbokv fused K4V8 int8"} <= names
    assert "turbokv fused K4V8 int8 int8 values" not in names


def test_attention_script_widths_batch_and_levels(tmp_path):
    result = run("attention.py", "--contexts", "300", "--repeats", "1", "--settings", "3,3", "8,4",
                 "--batch", "2", "--simd", "scalar", tmp_path=tmp_path)
    names = {r["impl"] for r in result["rows"]}
    assert result["batch"] == 2
    assert {"turbokv fused K3V3 scalar", "turbokv fused K8V4 scalar",
            "turbokv decode-then-attend K3V3 scalar"} <= names


def test_attention_script_head_dim(tmp_path):
    result = run("attention.py", "--contexts", "300", "--repeats", "1", "--head-dim", "80",
                 "--settings", "4,4", "--scores", "int8", tmp_path=tmp_path)
    rows = {r["impl"]: r for r in result["rows"]}
    assert result["head_dim"] == 80 and "turbokv fused K4V4 int8" in rows
    assert rows["numpy float32 dense"]["kv_bytes"] == 2 * 8 * 300 * 80 * 4  # K and V, 8 KV heads


def test_attention_script_one_kv_head_splits_the_tokens(tmp_path):
    import turbokv
    # 4,096 tokens (557 KB of K4V4 codes): past the size below which decode leaves the pool asleep.
    result = run("attention.py", "--contexts", "4096", "--repeats", "1", "--heads", "4", "1",
                 tmp_path=tmp_path)
    names = {r["impl"] for r in result["rows"]}
    assert result["heads"] == [4, 1] and "turbokv fused K4V4" in names
    threads = turbokv.attention_threads()
    assert ("turbokv fused K4V4 one thread" in names) == (threads > 1)


def test_ab_sources_compile_against_the_core():
    """bench/ab/run.sh builds whole libraries (minutes); here its two sources are only compiled
    against this tree's headers, so that an API change that breaks the tool fails a test."""
    root = BENCH.parent
    side = ["g++", "-std=c++17", "-fsyntax-only", "-Dturbokv=ab_head", "-DAB_SIDE=ab_head_",
            f"-I{root / 'cpp' / 'include'}", str(BENCH / "ab" / "side.cpp")]
    subprocess.run(side, check=True, capture_output=True, timeout=120)
    subprocess.run(["g++", "-std=c++17", "-fsyntax-only", str(BENCH / "ab" / "main.cpp")], check=True,
                   capture_output=True, timeout=120)
    usage = subprocess.run(["bash", str(BENCH / "ab" / "run.sh"), "HEAD"], capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_interleaved_times_times_rows_in_turns():
    from turbokv.eval.benchmarks import interleaved_times

    order = []

    def call(name):
        order.append(name)
        # Each timed call sleeps 10 ms longer than the one before: more than a loaded CI machine's
        # scheduling delay, so the order of the times is the order of the calls.
        time.sleep(0.01 * max(0, len(order) - 3))

    calls = {name: ((lambda name=name: call(name)), n) for name, n in (("a", 3), ("b", 1), ("c", 2))}
    times = interleaved_times(calls)
    # One warm-up call each, then rounds: every row once per round while its repeats last.
    assert order == ["a", "b", "c", "a", "b", "c", "a", "c", "a"]
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 1, "c": 2}
    # Element r is round r's call: each later timed call slept longer (calls 4-9 of order).
    assert times["a"][0] < times["b"][0] < times["c"][0] < times["a"][1] < times["c"][1] < times["a"][2]


def test_attention_floor_is_the_fastest_read_pass_of_the_run(monkeypatch):
    from turbokv.eval import benchmarks

    # A read pass whose timed calls take 40, 10 and 20 ms in turn (no array: nothing is read).
    durations = iter([0.04, 0.01, 0.02] * 20)

    class FakePass:
        nbytes = 2**30

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def __call__(self):
            time.sleep(next(durations))

        def best_gbs(self, repeats=10):
            return 10.0  # the start's best: slower than any pass below (40 ms: 27 GB/s)

    monkeypatch.setattr(benchmarks, "ReadPass", FakePass)
    monkeypatch.setattr(benchmarks, "SETTLE_S", 0.0)
    result = benchmarks.run_attention([300], repeats=2, show_progress=False)
    passes = result["read_passes"][0]["gbs"]
    assert result["read_bandwidth_start_gbs"] == 10.0
    # The fastest in-turn pass, not the start's, the median or the last (timed 20, 10, 40 ms).
    assert result["read_bandwidth_gbs"] == max(passes) > 10.0 and len(passes) == 3
    row = next(r for r in result["rows"] if r["impl"] == "turbokv fused K4V4")
    floor_s = row["kv_bytes"] / (result["read_bandwidth_gbs"] * 1e9)
    assert row["times_read_floor"] == pytest.approx(row["ms"] / 1e3 / floor_s)
    assert "the fastest pass of the run" in benchmarks.attention_table(result)


def test_in_turn_calls_each_function_once_per_call_in_order():
    from turbokv.eval.benchmarks import in_turn

    order = []
    call = in_turn([lambda i=i: order.append(i) for i in range(3)])
    for _ in range(7):
        call()
    assert order == [0, 1, 2, 0, 1, 2, 0]


def test_attention_layers_call_their_caches_in_turn(monkeypatch):
    from turbokv.eval import benchmarks

    used = []

    class Recording(benchmarks.KVCache):
        def attention(self, *args, **kwargs):
            if kwargs.get("threaded", True):  # not the "one thread" row, which hosts of >2 cores add
                used.append(id(self))
            return super().attention(*args, **kwargs)

    monkeypatch.setattr(benchmarks, "KVCache", Recording)
    monkeypatch.setattr(benchmarks, "SETTLE_S", 0.0)
    result = benchmarks.run_attention([300], repeats=4, show_progress=False, settings=[(4, 4)], layers=3)
    assert result["layers"] == 3
    assert "3 layers' caches per row called in turn" in benchmarks.attention_table(result)
    # Each layer's cache is called once first (its key probe), then the path check calls the first
    # layer's; then every call of the row takes the next one.
    turns = used[4:]
    assert len(turns) >= 6 and len(set(turns)) == 3, turns
    assert all(turns[i] == turns[i % 3] for i in range(len(turns))), turns
    with pytest.raises(ValueError, match="layers"):
        benchmarks.run_attention([300], repeats=1, show_progress=False, layers=0)


def test_attention_times_no_cache_on_its_first_call(monkeypatch):
    from turbokv.eval import benchmarks

    made = []

    class Recording(benchmarks.KVCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    real = benchmarks.interleaved_times
    probed_at_timing = []

    def checked(calls, **kwargs):
        # A cache's first attention runs its key probe (protection is None until then).
        probed_at_timing.append([c.protection is not None for c in made])
        return real(calls, **kwargs)

    monkeypatch.setattr(benchmarks, "KVCache", Recording)
    monkeypatch.setattr(benchmarks, "interleaved_times", checked)
    monkeypatch.setattr(benchmarks, "SETTLE_S", 0.0)
    benchmarks.run_attention([300], repeats=1, show_progress=False, settings=[(2, 2), (4, 4)], layers=3)
    assert len(made) == 6 and probed_at_timing == [[True] * 6], probed_at_timing


def test_interleaved_times_primes_every_timed_call():
    from turbokv.eval.benchmarks import PRIMED, interleaved_times

    order = []
    calls = {name: ((lambda name=name: order.append(name)), n) for name, n in (("a", 2), ("b", 1))}
    interleaved_times(calls, primed=True)
    # Warm-up calls, then each timed call right after an untimed one of the same row.
    assert order == ["a", "b", "a", "a", "b", "b", "a", "a"]
    assert PRIMED  # run_attention primes (torch's OpenMP workers spin after a call)


def test_interleaved_times_primes_for_the_settling_time(monkeypatch):
    from turbokv.eval import benchmarks
    from turbokv.eval.benchmarks import SETTLE_S, interleaved_times

    # A clock that each call moves by exactly 0.01 s: with time.sleep(0.01) a loaded machine (the
    # full test run, pytest-xdist on 2 cores) overslept and the settle loop rightly ran fewer
    # calls ([('a', 4), ('b', 5), ('a', 3)] once, session 61).
    clock = [0.0]
    monkeypatch.setattr(benchmarks, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    order = []

    def slow(name):
        order.append(name)
        clock[0] += 0.01

    calls = {name: ((lambda name=name: slow(name)), n) for name, n in (("a", 2), ("b", 1))}
    interleaved_times(calls, primed=True, settle_s=0.035)
    # Warm-up a, b; then per timed call 4 untimed ones (each takes 0.01 s, and they run until
    # 0.035 s have passed) in one run of the same row, then the timed one.
    runs = [(name, len(list(group))) for name, group in itertools.groupby(order[2:])]
    assert runs == [("a", 5), ("b", 5), ("a", 5)]
    assert SETTLE_S >= 0.1  # run_attention waits out OpenBLAS's spinning threads (about 0.1 s)


def test_int8_rounding_script(tmp_path):
    result = run("int8_rounding.py", tmp_path=tmp_path)
    assert [r["bits"] for r in result["rounding"]] == [1, 2, 3, 4]
    assert {(r["keys"], r["bits"]) for r in result["scores"]} == {
        (k, b) for k in ("gaussian", "qwen2.5 layer 0", "qwen2.5 layer 27") for b in (2, 3, 4)}
    # A coarser table cannot round 4-bit centroids better (their largest sets both scales).
    four = result["rounding"][3]
    assert four["share_63"] > four["share_127"] > 0


def build_microbenchmark(tmp_path, name, *flags, isa="avx2"):
    """Compiles bench/NAME.cpp for ISA ("avx2" or "avx512_vnni") with FLAGS; skips the caller where
    this CPU cannot run it (after compiling: the build is tested everywhere)."""
    import turbokv
    isa_flags = {"avx2": ["-mavx2"], "avx512_vnni": ["-mavx512f", "-mavx512bw", "-mavx512vnni"]}[isa]
    binary = tmp_path / name
    subprocess.run(["g++", "-O2", *isa_flags, *flags, str(BENCH / f"{name}.cpp"), "-o", str(binary)],
                   check=True, capture_output=True, timeout=120)
    runs_here = ("avx2" in turbokv.supported_simd() if isa == "avx2"
                 else "avx512" in turbokv.supported_simd() and turbokv.kernel_routes()["avx512_vnni"])
    if not runs_here:
        pytest.skip(f"built for x86 {isa} (compiled above); this CPU cannot run it")
    return binary


def test_ports_microbenchmark_builds_and_runs(tmp_path):
    binary = build_microbenchmark(tmp_path, "ports_avx2", "-mfma")
    out = subprocess.run([str(binary), "1000"], check=True, capture_output=True, text=True, timeout=60).stdout
    rows = [line for line in out.splitlines() if line.startswith("| vp")]
    assert len(rows) == 12 and all(float(r.rsplit("|", 2)[1]) > 0 for r in rows)
    assert "vpdpbusd" not in out  # its rows need -mavxvnni


def test_ports_microbenchmark_times_vpdpbusd_with_avx_vnni(tmp_path):
    import turbokv
    binary = build_microbenchmark(tmp_path, "ports_avx2", "-mfma", "-mavxvnni")
    if not turbokv.kernel_routes()["avx_vnni"]:
        pytest.skip("built with -mavxvnni (compiled above); this CPU has no AVX-VNNI to run it")
    out = subprocess.run([str(binary), "1000"], check=True, capture_output=True, text=True, timeout=60).stdout
    rows = [line for line in out.splitlines() if line.startswith("| vp")]
    assert [r.split("|")[1].strip() for r in rows[-2:]] == ["vpdpbusd (VEX)", "vpdpbusd + vpshufb"]
    assert len(rows) == 14 and all(float(r.rsplit("|", 2)[1]) > 0 for r in rows)


def test_read_layout_microbenchmark_builds_and_runs(tmp_path):
    binary = build_microbenchmark(tmp_path, "read_layout", "-pthread")
    out = subprocess.run([str(binary), "8", "2"], check=True, capture_output=True, text=True, timeout=120).stdout
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r[1].strip() for r in rows] == ["chunked", "chunked, value lines prefetched beside keys",
                                            "per stream", "groups of 8"]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    assert "threads 2, 8 chunks (2048 tokens)" in out
    # Arguments it cannot take: exit status 2.
    assert subprocess.run([str(binary), "8", "3"], capture_output=True, timeout=60).returncode == 2


def test_interleaved_keys_microbenchmark_builds_runs_and_checks_its_scores(tmp_path):
    binary = build_microbenchmark(tmp_path, "interleaved_keys", isa="avx512_vnni")
    done = subprocess.run([str(binary), "256", "3"], capture_output=True, text=True, timeout=60)
    # Exit status 0 only when every score of both layouts equals the scalar sum.
    assert done.returncode == 0 and "256 keys" in done.stdout and "mismatches 0" in done.stdout
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r[1].strip() for r in rows] == ["interleaved", "rows"] and all(float(r[2]) > 0 for r in rows)
    assert subprocess.run([str(binary), "100"], capture_output=True, timeout=60).returncode == 2  # not 16k


def test_compute_scaling_microbenchmark_times_each_thread_count(tmp_path):
    """bench/compute_scaling.cpp times a memory-free loop on 1, 2, 4 ... N threads at once."""
    binary = build_microbenchmark(tmp_path, "compute_scaling", "-pthread", isa="avx512_vnni")
    done = subprocess.run([str(binary), "3", "200000"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [(r[0], int(r[2].rstrip(":"))) for r in rows] == [(k, t) for k in ("vnni", "scalar") for t in (1, 2, 3)]
    assert all(0 < float(r[5]) <= float(r[8]) for r in rows)  # the mean never exceeds the slowest thread
    for bad in (["0"], ["2", "0"]):
        assert subprocess.run([str(binary), *bad], capture_output=True, timeout=60).returncode == 2


def test_pool_overhead_microbenchmark_builds_runs_and_counts_every_item(tmp_path):
    """bench/pool_overhead.cpp times the library's pool against other wake and claim designs; it
    exits 1 if any item of any call ran other than once, 2 on arguments it cannot take."""
    root = BENCH.parent
    binary = tmp_path / "pool_overhead"
    subprocess.run(["g++", "-O2", "-std=c++17", "-pthread", f"-I{root / 'cpp' / 'include'}",
                    str(BENCH / "pool_overhead.cpp"), str(root / "cpp" / "src" / "thread_pool.cpp"),
                    "-o", str(binary)], check=True, capture_output=True, timeout=180)
    done = subprocess.run([str(binary), "3", "5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert {r[1].strip() for r in rows} == {"library", "shared", "own", "tree"}
    assert len(rows) == 4 * 6 and all(float(r[5]) >= float(r[4]) * 0.5 for r in rows)  # no call beats half its work
    assert subprocess.run([str(binary), "1"], capture_output=True, timeout=60).returncode == 2


def test_cli_bench_times_a_model_shape_and_refuses_bad_ones(capsys):
    """`python -m turbokv bench --heads Q KV --head-dim D --settings K,V ...` times that shape."""
    from turbokv.__main__ import main

    assert main(["bench", "--contexts", "64", "--repeats", "1", "--json", "--heads", "4", "2",
                 "--head-dim", "80", "--settings", "3,3", "8,4", "--layers", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["heads"] == [4, 2] and result["head_dim"] == 80 and result["layers"] == 2
    impls = {r["impl"] for r in result["rows"]}
    assert {"turbokv fused K3V3", "turbokv fused K8V4"} <= impls and "turbokv fused K4V4" not in impls
    # Shapes and widths the cache cannot take: exit status 2 and one line naming the problem.
    for bad, message in ((["--heads", "4", "3"], "multiple of KV"), (["--heads", "2", "4"], "multiple of KV"),
                         (["--heads", "0", "0"], "multiple of KV"), (["--head-dim", "7"], "head_dim"),
                         (["--settings", "9,4"], "key_bits"), (["--layers", "0"], "layers")):
        assert main(["bench", "--contexts", "64", "--repeats", "1", "--json", *bad]) == 2, bad
        assert message in capsys.readouterr().err, bad
    with pytest.raises(SystemExit) as exit_info:  # not a KEY,VALUE pair: argparse's usage error
        main(["bench", "--settings", "4"])
    assert exit_info.value.code == 2
    assert "KEY_BITS,VALUE_BITS" in capsys.readouterr().err


def test_codebook_spacing_script(tmp_path):
    result = run("codebook_spacing.py", "--bits", "4", "8", "--samples", "200000", tmp_path=tmp_path)
    rows = {r["bits"]: r for r in result["rows"]}
    assert set(rows) == {4, 8}
    for r in rows.values():
        # Lloyd-Max is the least-squares scalar quantizer of a Gaussian: an evenly spaced one is worse.
        assert r["even_mse"] > r["lloyd_max_mse"] > 0
    assert rows[8]["lloyd_max_mse"] < rows[4]["lloyd_max_mse"] / 100  # ~4^-b scaling


def test_simd_coverage_names_what_this_cpu_cannot_run():
    import turbokv

    script = BENCH.parent / "scripts" / "simd_coverage.py"
    text = subprocess.run([sys.executable, str(script)], check=True, capture_output=True, text=True,
                          timeout=60).stdout
    levels = turbokv.supported_simd()
    assert f"SIMD levels the tests run natively: {', '.join(levels)}" in text
    routes = turbokv.kernel_routes()
    # Each family this CPU lacks is named as not executed; none it has is.
    assert ("AVX-512 level" in text) == ("avx2" in levels and "avx512" not in levels)
    evex_vnni = "avx512" in levels and routes["avx512_vnni"]  # the same code EVEX-encoded
    assert ("AVX-VNNI variants of the AVX2 int8" in text) == ("avx2" in levels and not routes["avx_vnni"] and not evex_vnni)
    assert ("run in their EVEX form" in text) == ("avx2" in levels and not routes["avx_vnni"] and evex_vnni)
    assert ("NEON level: cross-compiled" in text) == ("neon" not in levels)


def test_item_schedule_replays_claims_and_orders_causal_ranges_latest_first():
    """bench/item_schedule.py: item costs in claim order, and the end of a replayed schedule."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("item_schedule", BENCH / "item_schedule.py")
    schedule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schedule)
    # 64 query heads per KV head: ranges of 4 positions; a 512-token prompt's first 64 ranges see 1
    # block of keys, the last 64 two: 64 x 4 rows x 1 or 2 blocks.
    assert schedule.item_costs(1, 1, 64, 512, 512, "earliest first") == [256] * 64 + [512] * 64
    assert schedule.item_costs(1, 1, 64, 512, 512, "latest first") == [512] * 64 + [256] * 64
    # Two streams of a 260-token prompt (ranges of 4 positions: 64 see one block, the 65th two):
    # stream by stream, each from its latest range, or the streams' ranges in turns.
    stream = [512] + [256] * 64
    assert schedule.item_costs(1, 2, 64, 260, 260, "latest first") == stream + stream
    assert schedule.item_costs(1, 2, 64, 260, 260, "in turns") == [512, 512] + [256] * 128
    assert schedule.used_order(3, 16) == "in turns" and schedule.used_order(8, 16) == "latest first"
    with pytest.raises(ValueError, match="order must be one of"):
        schedule.item_costs(1, 1, 64, 8, 8, "newest")
    # Replayed claims: [1, 1, 1, 3] on 2 threads ends at 4 (the 3 claimed last), ideal 3.
    assert schedule.end_over_ideal([1, 1, 1, 3], 2) == pytest.approx(4 / 3)
    assert schedule.end_over_ideal([3, 1, 1, 1], 2) == pytest.approx(1.0)
    done = subprocess.run([sys.executable, str(BENCH / "item_schedule.py"), "--threads", "16", "--batches", "1"],
                          capture_output=True, text=True, check=True, timeout=60)
    rows = [line.split("|") for line in done.stdout.splitlines()[2:]]
    # Columns: earliest first, latest first, in turns, used; in turns never ends later than earliest.
    assert len(rows) == 4 and all(float(r[7].strip(" x")) <= float(r[5].strip(" x")) for r in rows)
    assert subprocess.run([sys.executable, str(BENCH / "item_schedule.py"), "--threads", "0"],
                          capture_output=True, timeout=60).returncode == 2


@pytest.mark.hf
def test_attention_runs_on_the_thread_backend_it_names():
    """--threads openmp times turbokv on torch's OpenMP threads (as a transformers loop runs it),
    the table says so, and a process already on them refuses "pool" rather than time the wrong
    backend under its name. A fresh interpreter: the backend holds for the rest of a process."""
    code = """
import pytest, turbokv
from turbokv.eval import benchmarks
benchmarks.SETTLE_S = 0.0
pool = benchmarks.run_attention([300], repeats=1, show_progress=False, settings=[(4, 4)], threads="pool")
assert pool["thread_backend"] == "pool" and "turbokv's own thread pool" in benchmarks.attention_table(pool)
result = benchmarks.run_attention([300], repeats=1, show_progress=False, settings=[(4, 4)], threads="openmp")
assert result["thread_backend"] == "openmp" == turbokv.thread_backend(), result["thread_backend"]
assert "turbokv on torch's OpenMP threads" in benchmarks.attention_table(result)
with pytest.raises(RuntimeError, match="already runs on openmp"):
    benchmarks.run_attention([300], repeats=1, show_progress=False, threads="pool")
with pytest.raises(ValueError, match="threads must be"):
    benchmarks.run_attention([300], repeats=1, show_progress=False, threads="omp")
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "TURBOKV_OPENMP"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split()[-1] == "ok", done.stderr
