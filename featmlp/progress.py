"""How library code tells what it does: the :class:`Callback` protocol; the CLI decides how to show it.

One protocol for every hook. A :class:`Callback` is told a task's progress
(:meth:`~Callback.on_progress`) and, while a network trains, its epochs (:meth:`~Callback.on_epoch`,
named by configuration in a sweep: :meth:`~Callback.on_config_epoch`). ``train``, ``lr_find`` and
``run_sweep`` take ``callbacks=[...]`` of them; the same object works in all three.

A progress hook, the callable form, is any ``progress(desc, done, total)``: ``desc`` names the
task (``"extract"``, ``"download"``, ``"train"``, ``"lr_find"``, ``"sweep"``), ``done`` is how much
of it is finished and ``total`` the whole (``None`` when unknown). Functions that only have progress
to tell (the data layer: ``extract_dataset``, ``load_dataset``) take ``progress=None``;
:class:`TqdmProgress` is both a callable and a Callback. Library code never prints.

This module imports nothing of featmlp's, so the data layer and training both use it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from featmlp.training.config import TrainConfig

ProgressHook = Callable[[str, int, Optional[int]], None]


def null_progress(desc: str, done: int, total: int | None) -> None:
    """The default hook: report nothing."""


class Callback:
    """Base class of objects told about a task as it goes; override what you need.

    A plain callable ``f(record, history)`` passed in ``callbacks`` acts as :meth:`on_epoch`.
    Who calls what: ``train`` calls all four (:meth:`on_progress` as ``("train", epoch,
    epochs)``); ``lr_find`` only :meth:`on_progress` (``("lr_find", step, steps)``);
    ``run_sweep`` :meth:`on_progress` (``("sweep", configurations_done, configurations)``) and
    :meth:`on_config_epoch`.
    """

    def on_progress(self, desc: str, done: int, total: int | None) -> None:
        """``done`` of ``total`` (None: unknown) of the task ``desc`` is finished."""

    def on_train_begin(self, config: TrainConfig) -> None:
        """Called once before the first epoch."""

    def on_epoch(self, record: dict, history: list[dict]) -> bool | None:
        """Called after each epoch with its record (also ``history[-1]``); return True to stop."""

    def on_config_epoch(self, name: str, record: dict, history: list[dict]) -> bool | None:
        """An epoch of the sweep's configuration ``name``; return True to stop that one.

        Epochs of configurations trained together interleave, so each call names its
        configuration; ``history`` is that configuration's. By default :meth:`on_epoch`.
        """
        return self.on_epoch(record, history)

    def on_train_end(self, history: list[dict]) -> None:
        """Called once after the last epoch, also after a divergence or a requested stop."""


class ProgressCallback(Callback):
    """A progress hook ``progress(desc, done, total)`` as a :class:`Callback` (its :meth:`on_progress`)."""

    def __init__(self, progress: ProgressHook):
        self.progress = progress

    def on_progress(self, desc: str, done: int, total: int | None) -> None:
        self.progress(desc, done, total)


def progress_callbacks(progress: ProgressHook | Callback | None) -> list[Callback]:
    """The callbacks a ``progress=`` argument stands for: none, or one telling only its progress.

    A :class:`Callback` given as ``progress`` is told its progress, not the epochs, as before.
    """
    if progress is None:
        return []
    return [ProgressCallback(progress.on_progress if isinstance(progress, Callback) else progress)]


def progress_hook(callbacks) -> ProgressHook | None:
    """The callbacks' :meth:`~Callback.on_progress` as one ``progress(desc, done, total)`` hook, for
    functions that take only a hook (the data layer); None without callbacks."""
    callbacks = list(callbacks)
    if not callbacks:
        return None

    def progress(desc: str, done: int, total: int | None) -> None:
        for cb in callbacks:
            cb.on_progress(desc, done, total)

    return progress


# Each task's unit where it is not the command's: bytes downloaded, image files listed (their
# headers read: ``load_dataset``'s "read"), kmeans iterations.
_UNITS = {"download": ("B", True), "read": ("file", False), "kmeans": ("iter", False)}
_NO_RATE = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit}"


class TqdmProgress(Callback):
    """Render progress as tqdm bars on stderr, one bar per ``desc``.

    A :class:`Callback` (its :meth:`on_progress`) and a progress hook (called as
    ``progress(desc, done, total)``). A bar closes when ``done`` reaches ``total``.
    """

    def __init__(self, unit: str = "it", disable: bool | None = None):
        self.unit = unit
        self.disable = disable
        self._bars: dict[str, object] = {}

    def __call__(self, desc: str, done: int, total: int | None) -> None:
        self.on_progress(desc, done, total)

    def on_progress(self, desc: str, done: int, total: int | None) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(desc)
        if bar is None:
            unit, scale = _UNITS.get(desc, (self.unit, False))
            # Told whole at once (a listing known without reading each file): no rate was measured,
            # and tqdm's, done over the microseconds since the bar was made, would read 7029559.78img/s.
            at_once = total is not None and done >= total
            bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=scale,
                       file=sys.stderr, disable=self.disable, leave=True,
                       dynamic_ncols=True, bar_format=_NO_RATE if at_once else None)
            self._bars[desc] = bar
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()
            del self._bars[desc]

    def echo(self, line: str) -> None:
        """Print ``line`` on stderr above the bars, which stay whole (tqdm.write)."""
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


# The logger of the line said while numba compiles a kernel; the CLI shows its INFO lines on stderr.
COMPILE_LOGGER = "featmlp.compile"
_compile_listener = None


def announce_compiles() -> None:
    """Log one line (logger :data:`COMPILE_LOGGER`, INFO) each time numba starts compiling a
    featmlp kernel, which it does once per install: every kernel is ``cache=True``, and a later
    process loads it from the on-disk cache (``__pycache__`` beside the module, or numba's user-wide
    cache directory, or ``NUMBA_CACHE_DIR``, where the package's folder is read-only) without a word.

    Called by each module that defines kernels, after it imports numba; registers numba's
    ``numba:compile`` event listener once. That event fires only on a real compilation, never on a
    cache hit; the kernels a kernel inlines compile inside it and are not named again.
    """
    global _compile_listener
    if _compile_listener is not None:
        return
    import logging

    from numba.core import event

    class Listener(event.Listener):
        depth = 0

        def on_start(self, ev):
            self.depth += 1
            function = getattr(ev.data.get("dispatcher"), "py_func", None)
            module = getattr(function, "__module__", "") or ""
            if self.depth == 1 and module.startswith("featmlp."):
                name = function.__name__.strip("_").replace("_py", "")  # _lecture_batch_py_serial: lecture_batch_serial
                logging.getLogger(COMPILE_LOGGER).info(
                    f"compiling the numba kernel {module.rpartition('.')[2]}.{name} (once per install: "
                    f"cached on disk for the next runs)")

        def on_end(self, ev):
            self.depth -= 1

    _compile_listener = Listener()
    event.register("numba:compile", _compile_listener)
