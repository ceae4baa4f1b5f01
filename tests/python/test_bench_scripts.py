"""The benchmark scripts run (tiny sizes; their timings are not checked: speed is never a test)."""

import json
import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"


def run(script, *args, tmp_path):
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, str(BENCH / script), *args, "--json", str(out)], check=True,
                   capture_output=True, timeout=300)
    return json.loads(out.read_text())


def test_codec_throughput_script(tmp_path):
    result = run("codec_throughput.py", "--vectors", "4096", "--keys", "2048", "--repeats", "1",
                 tmp_path=tmp_path)
    assert result["encode"] and result["scores"]


def test_attention_script(tmp_path):
    result = run("attention.py", "--contexts", "300", "--repeats", "1", tmp_path=tmp_path)
    names = {r["impl"] for r in result["rows"]}
    assert "turbokv fused K4V4" in names and "numpy float32 dense" in names
