"""Which threads run turbokv's parallel work: its own pool, or the threads of the OpenMP runtime a
host library (torch) already loaded.

In a torch generation loop turbokv's encode, prefill probe and attention run between two of
torch's ops. After each op torch's OpenMP threads spin before they sleep (GNU OpenMP: 300,000
``pause`` instructions, milliseconds on recent Intel cores), so turbokv's own pool shared the cores
with them: a 2K-token prompt's first token took 1.6x the dense time on 16 cores (session 48).
Run on those same threads, turbokv's items start at once and nothing competes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

from . import _core

__all__ = ["share_openmp_threads", "thread_backend"]

_OPENMP_NAMES = ("libgomp", "libomp", "libiomp5")


def _loaded_libraries() -> List[str]:
    """Paths of the shared libraries mapped into this process (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            return sorted({line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line})
    except OSError:
        return []


def _openmp_library(host: str) -> Optional[str]:
    """The OpenMP runtime loaded from ``host``'s package folder, or from the ``<host>.libs``
    folder beside it (where auditwheel puts a wheel's bundled libraries), if any."""
    module = sys.modules.get(host)
    if module is None or not getattr(module, "__file__", None):
        return None
    folder = Path(module.__file__).resolve().parent
    homes = (folder, folder.parent / f"{folder.name}.libs")
    for path in _loaded_libraries():
        resolved = Path(path).resolve()
        if resolved.name.startswith(_OPENMP_NAMES) and any(_inside(resolved, home) for home in homes):
            return path
    return None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def share_openmp_threads(host: str = "torch") -> Optional[str]:
    """Runs turbokv's parallel work (threaded attention, prefill protection's probe, a prefill's
    encode) on the threads of the OpenMP runtime that ``host`` (an imported package, default
    torch) loaded, from now on; returns that runtime's path, or None (turbokv's own pool stays)
    where ``host`` is not imported, loaded no OpenMP runtime (Linux only: found in
    /proc/self/maps), or ``TURBOKV_OPENMP=0`` is set. ``import turbokv.hf`` calls it.

    Results do not change (every item's sums are the same on any thread). The thread count
    becomes ``TURBOKV_NUM_THREADS`` if set, else the runtime's own (``torch.get_num_threads()``,
    read at each call); :func:`turbokv.attention_threads` reports it, :func:`thread_backend` the
    choice."""
    if os.environ.get("TURBOKV_OPENMP", "1") == "0":
        return None
    library = _openmp_library(host)
    if library is None:
        return None
    try:
        threads = _core.attention_threads() if "TURBOKV_NUM_THREADS" in os.environ else 0
    except ValueError:
        return None  # a bad TURBOKV_NUM_THREADS: the first threaded call raises, as without this
    return library if _core.adopt_openmp_runtime(library, threads) else None


def thread_backend() -> str:
    """``"openmp"`` where :func:`share_openmp_threads` took a host's OpenMP threads, else
    ``"pool"`` (turbokv's own threads)."""
    return _core.thread_backend()
