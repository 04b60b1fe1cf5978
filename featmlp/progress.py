"""Progress reporting: library code calls a hook, the CLI decides how to show it.

A progress hook is any callable ``progress(desc, done, total)``: ``desc`` names the
task (``"extract"``, ``"download"``), ``done`` is how much of it is finished and
``total`` the whole (``None`` when unknown). Library functions take
``progress=None`` and never print.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

ProgressHook = Callable[[str, int, Optional[int]], None]


def null_progress(desc: str, done: int, total: int | None) -> None:
    """The default hook: report nothing."""


class TqdmProgress:
    """Render progress hooks as tqdm bars on stderr, one bar per ``desc``.

    A bar closes when ``done`` reaches ``total``.
    """

    def __init__(self, unit: str = "it", disable: bool | None = None):
        self.unit = unit
        self.disable = disable
        self._bars: dict[str, object] = {}

    def __call__(self, desc: str, done: int, total: int | None) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(desc)
        if bar is None:
            unit, scale = {"download": ("B", True), "kmeans": ("iter", False)}.get(desc, (self.unit, False))
            bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=scale,
                       file=sys.stderr, disable=self.disable, leave=True,
                       dynamic_ncols=True)
            self._bars[desc] = bar
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()
            del self._bars[desc]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
