"""What a sweep gives: :class:`SweepRun` (one configuration and its training) and
:class:`SweepResult` (all of them, with the rows of ``results.csv``).

Its own module so that training a sweep (``_run``) and writing its files (``_output``) both read
it, and the flow stays one-way: ``_run`` -> ``_output`` -> ``_result``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from featmlp.training import TrainConfig, TrainResult
from featmlp.training.history import SECONDS, TRAIN_ACCURACY, TRAIN_LOSS, VAL_ACCURACY, VAL_LOSS

from ._grid import setting_label


@dataclass
class SweepRun:
    """One configuration of a sweep and what training it gave.

    Attributes
    ----------
    name : str
        Unique, filesystem-safe (``lr10_h6-6``); its run directory's name.
    config : TrainConfig
    result : TrainResult
        Model, scaler, history, ``diverged`` and ``stop_reason``, as :func:`featmlp.training.train`
        returns them.
    test_accuracy : float or None
        On the table's test split (None without one).
    engine : str
        ``"stacked"`` (trained together with its group) or ``"train"`` (alone).
    group : int or None
        Index of its stacked group.
    """

    name: str
    config: TrainConfig
    result: TrainResult
    test_accuracy: float | None
    engine: str
    group: int | None

    @property
    def history(self) -> list[dict]:
        return self.result.history

    @property
    def diverged(self) -> bool:
        return self.result.diverged

    @property
    def diverged_epoch(self) -> int | None:
        """The epoch whose loss or weights were not finite (its record is not in the history)."""
        return len(self.result.history) + 1 if self.result.diverged else None

    @property
    def val_accuracy(self) -> float | None:
        """Validation accuracy of the weights kept (the best epoch's under early stopping, else the
        last epoch's); None without validation. What a sweep ranks by when it has it."""
        history = self.result.history
        # best_epoch is recorded with any validation; its weights are the ones kept only under patience
        best = self.result.best_epoch if self.config.patience else None
        kept = [r for r in history if r.get("epoch") == best] or history[-1:]
        return kept[0].get(VAL_ACCURACY) if kept else None

    @property
    def seconds(self) -> float:
        """Training time: the sum of the history's epoch times. A stacked group's epoch time
        is shared equally among the configurations it trained, so a sweep's rows add up to
        the time it trained for."""
        return float(sum(r[SECONDS] for r in self.result.history))


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: one :class:`SweepRun` per configuration, in order.

    Index it by position or by name; :meth:`table` gives the rows of ``results.csv``.
    """

    runs: list[SweepRun]
    varying: list[str]
    seconds: float
    out: Path | None = None
    resumed: tuple[str, ...] = ()
    """Names of the configurations read back from an interrupted run of the same sweep."""

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[SweepRun]:
        return iter(self.runs)

    def __getitem__(self, key: int | str) -> SweepRun:
        if isinstance(key, str):
            for run in self.runs:
                if run.name == key:
                    return run
            raise KeyError(f"no configuration named {key!r}; names: "
                           f"{', '.join(r.name for r in self.runs)}")
        return self.runs[key]

    @property
    def names(self) -> list[str]:
        return [run.name for run in self.runs]

    def table(self) -> list[dict]:
        """One dict per configuration: its name, ``lr``, ``hidden`` (``"6-6"``), the other
        fields that vary, final losses and accuracies, ``val_accuracy`` (with validation: that of
        the weights kept, :attr:`SweepRun.val_accuracy`), ``test_accuracy``, ``diverged``,
        ``diverged_epoch``, ``epochs_run``, ``stop_reason``, ``seconds`` and ``engine``; in
        configuration order (:func:`featmlp.runs.compare.ranked` ranks them)."""
        shown = ["lr", "hidden"] + [f for f in self.varying if f not in ("lr", "hidden")]
        has_val = any(VAL_LOSS in r for run in self.runs for r in run.history)
        rows = []
        for run in self.runs:
            last = run.history[-1] if run.history else {}
            row: dict = {"name": run.name}
            for f in shown:
                value = getattr(run.config, f)
                row[f] = value if isinstance(value, (int, float, str, bool)) or value is None \
                    else setting_label(f, value)
            row["final_train_loss"] = last.get(TRAIN_LOSS)
            row["final_train_accuracy"] = last.get(TRAIN_ACCURACY)
            if has_val:
                row["final_val_loss"] = last.get(VAL_LOSS)
                row["final_val_accuracy"] = last.get(VAL_ACCURACY)
                row["val_accuracy"] = run.val_accuracy
            row.update(test_accuracy=run.test_accuracy, diverged=run.diverged,
                       diverged_epoch=run.diverged_epoch, epochs_run=len(run.history),
                       stop_reason=run.result.stop_reason, seconds=round(run.seconds, 6),
                       engine=run.engine)
            rows.append(row)
        return rows
