"""The library stays the library: `import turbokv` pulls in neither the evaluation subpackage nor
its dependencies (tqdm, torch, transformers), and the evaluation runs without tqdm."""

import subprocess
import sys

HEAVY = ("turbokv.eval", "turbokv.models", "tqdm", "torch", "transformers", "matplotlib")


def imported_after(statement: str) -> list:
    code = (f"import sys; {statement}; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m.startswith({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return eval(out)


def test_import_turbokv_is_only_the_library():
    assert imported_after("import turbokv") == []


def test_the_evaluation_is_a_separate_package():
    assert "turbokv.eval" in imported_after("import turbokv.eval.settings")


def test_evaluation_progress_bars_work_without_tqdm():
    code = ("import sys; sys.modules['tqdm'] = None; "  # tqdm 'not installed'
            "from turbokv.eval._progress import tqdm; bar = tqdm(total=3, desc='x'); bar.update(); "
            "bar.set_postfix_str('y'); bar.close(); assert list(tqdm([1, 2])) == [1, 2]; "
            "from turbokv.eval.distortion import codec_table; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
