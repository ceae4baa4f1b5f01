"""The benchmark scripts that load real models run (tiny sizes; their timings are not checked:
speed is never a test). Apart from test_bench_scripts.py, so that pytest-xdist's whole-file workers
can share them: the two files' tests take ~2 and ~3.3 minutes on 2 Zen 3 cores."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import turbokv

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"


def test_quality_script(tmp_path):
    out = tmp_path / "quality"
    subprocess.run([sys.executable, str(BENCH / "quality.py"), "--models", "llama2c", "--quick",
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.with_suffix(".json").read_text())
    assert [r["setting"] for r in result["models"]["llama2c"]["rows"]] == result["settings"]
    assert "| K8V8 |" in out.with_suffix(".md").read_text()


@pytest.mark.hf
def test_key_outliers_script(tmp_path):
    out = tmp_path / "outliers"
    subprocess.run([sys.executable, str(BENCH / "key_outliers.py"), "--tokens", "96", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    rows = {r["keys"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert rows["K4 plain"]["error_mean"] < rows["K3 plain"]["error_mean"]
    assert rows["K4 plain"]["bits_per_coordinate"] == 4.5
    assert all(0 < r["error_mean"] < 1 for r in rows.values())


@pytest.mark.hf
def test_hf_speed_script(tmp_path):
    out = tmp_path / "hf_speed.json"
    subprocess.run([sys.executable, str(BENCH / "hf_speed.py"), "--contexts", "64", "--batches", "1", "--dtypes",
                    "float32", "--steps", "2", "--rounds", "2", "--thp", "off", "--json", str(out)],
                   check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    names = {r["cache"] for r in result["rows"]}
    # The decoded and fused rows assert inside the script which path served them.
    assert {"DynamicCache (sdpa)", "StaticCache (sdpa)", "TurboQuantCache K4V4, decoded K/V (sdpa)",
            "TurboQuantCache K4V4, fused (turbokv)"} <= names
    best = max(r["vs_best_dense"] for r in result["rows"] if r["cache"] in
               ("DynamicCache (sdpa)", "StaticCache (sdpa)"))
    assert best == 1.0


@pytest.mark.hf
def test_needle_script(tmp_path):
    out = tmp_path / "needle"
    subprocess.run([sys.executable, str(BENCH / "needle.py"), "--contexts", "300", "--presets", "4bit",
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.with_suffix(".json").read_text())
    settings = [row["setting"] for row in result["rows"]]
    assert settings == ["float32", "4bit"]
    assert result["rows"][1]["kl_tail"] > 0 and result["rows"][1]["bits_per_coordinate"] < 6
    table = out.with_suffix(".md").read_text()
    assert f"| 4bit | {result['rows'][1]['bits_per_coordinate']:.2f} |" in table


@pytest.mark.hf
def test_prefill_script(tmp_path):
    out = tmp_path / "prefill"
    levels = turbokv.supported_simd()
    # The kernel rows choose each level through TURBOKV_SIMD; the TTFT rows must still run at the
    # caller's own setting (here scalar, below every level the kernel rows named last).
    env = dict(os.environ, TURBOKV_SIMD="scalar")
    subprocess.run([sys.executable, str(BENCH / "prefill.py"), "--small", "--batches", "1", "--repeats", "1",
                    "--simd", *levels, "--ttft-batches", "1", "--ttft-rounds", "1", "--ttft-context", "95",
                    "--presets", "4bit", "--out", str(out)], check=True, capture_output=True, timeout=300, env=env)
    result = json.loads(out.with_suffix(".json").read_text())
    # Every kernel cell ran the path and level it names (asserted inside the script).
    assert {name.split()[-1] for row in result["kernel"] for name in row["turbokv"]} == {"tiles", "codes"}
    assert {name.split()[0] for row in result["kernel"] for name in row["turbokv"]} == set(levels)
    assert result["env"]["TURBOKV_SIMD"] == "scalar"
    assert result["ttft"][1]["simd"] == ["scalar"]
    assert [row["cache"] for row in result["ttft"]] == ["DynamicCache + SDPA", "TurboQuantCache 4bit"]
    # 95 positions of SmolLM2's 3 query heads per KV head: ranges of 85 and 10 positions, and the
    # last one's 30 rows are fewer than 4-bit keys' min_tile_rows (32; 48 at AVX-512): it takes the
    # codes path ("mixed"); layers that prefill protection raised above 4 bits tile from 9 rows
    # (24 at AVX-512: "tiles").
    assert "mixed" in result["ttft"][1]["attention_paths"]
    assert set(result["ttft"][1]["attention_paths"]) <= {"tiles", "mixed"}


@pytest.mark.hf
def test_prompt_cache_script(tmp_path):
    out = tmp_path / "prompt_cache"
    subprocess.run([sys.executable, str(BENCH / "prompt_cache.py"), "--context", "64", "--question", "4",
                    "--rounds", "1", "--presets", "4bit", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {row["setting"]: row for row in result["rows"]}
    dense = rows["DynamicCache + SDPA, reuse (float16 safetensors)"]["file_bytes"]
    assert rows["TurboQuantCache 4bit, reuse (.tkv)"]["file_bytes"] < dense / 2
