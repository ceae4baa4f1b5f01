"""Progress bars for the long runs of the evaluation: tqdm when installed (the ``eval`` extra),
otherwise a silent stand-in with the same calls, so no run ever needs tqdm to finish."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

try:
    from ._progress import tqdm
except ImportError:  # pip install "turbokv-cache[eval]" for bars

    class tqdm:  # type: ignore[no-redef]
        """What the evaluation uses of tqdm's API, drawing nothing."""

        def __init__(self, iterable: Optional[Iterable[Any]] = None, **_: Any) -> None:
            self._iterable = iterable if iterable is not None else ()

        def __iter__(self) -> Iterator[Any]:
            return iter(self._iterable)

        def update(self, n: int = 1) -> None:
            pass

        def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
            pass

        def close(self) -> None:
            pass

__all__ = ["tqdm"]
