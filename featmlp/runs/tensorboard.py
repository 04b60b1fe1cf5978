"""Optional TensorBoard logging of a run, for those who already use TensorBoard.

:class:`TensorBoardLogger` is a :class:`featmlp.training.Callback`: it reads each epoch's history
record (the one record every other consumer reads) and writes its numbers as TensorBoard scalars,
then the run's settings and final results to TensorBoard's HParams tab. It needs the
``tensorboard`` package (``pip install tensorboard`` or ``pip install 'featmlp[tensorboard]'``);
featmlp itself does not.

Examples
--------
>>> from featmlp.training import TrainConfig, train
>>> logger = TensorBoardLogger("runs/tb/lecture")                     # doctest: +SKIP
>>> result = train(X, y, TrainConfig(epochs=5), callbacks=[logger])   # doctest: +SKIP

then ``tensorboard --logdir runs/tb``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from featmlp.errors import FeatmlpError
from featmlp.training import Callback, TrainConfig
from featmlp.training.history import EPOCH, TRAIN_ACCURACY, TRAIN_LOSS, VAL_ACCURACY, VAL_LOSS

# Tag of the final test accuracy, declared in the HParams tab at the end of training and filled
# by log_metrics() once the run has been evaluated.
TEST_ACCURACY_TAG = "final/test_accuracy"


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FeatmlpError(
            "TensorBoard logging needs the tensorboard package: pip install tensorboard "
            "(or pip install 'featmlp[tensorboard]'), or leave TensorBoard logging off"
        ) from None
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Write a run's per-epoch history and its settings to a TensorBoard log directory.

    Each epoch, every numeric field of the history record except ``epoch`` (``train_loss``,
    ``train_accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``seconds``) becomes a scalar
    under its own name, at step ``epoch``. When training ends, the settings go to the HParams
    tab with the final metrics ``final/train_loss``, ``final/train_accuracy``,
    ``final/val_loss``, ``final/val_accuracy``, ``final/best_val_loss`` and ``final/epochs``
    (those recorded), and :data:`TEST_ACCURACY_TAG`, which :meth:`log_metrics` fills after
    evaluation.

    Parameters
    ----------
    log_dir : path
        Directory of this run's event files (created at the start of training). Give each run
        its own directory under one parent and point ``tensorboard --logdir`` at the parent.

    Raises
    ------
    FeatmlpError
        The ``tensorboard`` package is not installed (raised here, before any training).

    Examples
    --------
    >>> from featmlp.runs.results import train_run
    >>> logger = TensorBoardLogger("runs/tb/adam")                    # doctest: +SKIP
    >>> run = train_run(table, config, "runs/adam", callbacks=[logger])  # doctest: +SKIP
    >>> logger.log_metrics(run.metrics)                               # doctest: +SKIP
    """

    def __init__(self, log_dir: str | os.PathLike):
        self._writer_class = _summary_writer()
        self.log_dir = Path(log_dir)
        self._writer = None
        self._config: TrainConfig | None = None
        self._last_epoch = 0

    def on_train_begin(self, config: TrainConfig) -> None:
        self._config = config
        self._last_epoch = 0
        self._writer = self._writer_class(log_dir=str(self.log_dir))

    def on_epoch(self, record: dict, history: list[dict]) -> None:
        step = int(record.get(EPOCH, len(history)))
        for key, value in record.items():
            if key != EPOCH and _is_number(value):
                self._writer.add_scalar(key, float(value), step)
        self._last_epoch = step

    def on_train_end(self, history: list[dict]) -> None:
        from torch.utils.tensorboard.summary import hparams

        last = history[-1] if history else {}
        metrics = {f"final/{k}": last[k] for k in
                   (TRAIN_LOSS, TRAIN_ACCURACY, VAL_LOSS, VAL_ACCURACY)
                   if _is_number(last.get(k))}
        val_losses = [r[VAL_LOSS] for r in history if _is_number(r.get(VAL_LOSS))]
        if val_losses:
            metrics["final/best_val_loss"] = min(val_losses)
        metrics["final/epochs"] = len(history)
        for tag, value in metrics.items():
            self._writer.add_scalar(tag, float(value), self._last_epoch)
        if self._config is not None:
            # The HParams summaries go into this run's own directory (SummaryWriter.add_hparams
            # would start a sub-run beside it), so the table links to these scalars.
            declared = {**metrics, TEST_ACCURACY_TAG: math.nan}
            for summary in hparams(_hparam_values(self._config), declared):
                self._writer.file_writer.add_summary(summary)
        self._writer.close()
        self._writer = None

    def log_metrics(self, metrics: dict, prefix: str = "final/") -> None:
        """Add a run's test metrics (e.g. :attr:`featmlp.runs.results.RunResult.metrics`) after training.

        Every top-level number becomes a scalar ``prefix + name`` at the last epoch's step;
        ``test_accuracy`` lands in the HParams tab as :data:`TEST_ACCURACY_TAG`.
        """
        with self._writer_class(log_dir=str(self.log_dir)) as writer:
            for key, value in metrics.items():
                if _is_number(value):
                    writer.add_scalar(prefix + key, float(value), self._last_epoch)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _hparam_values(config: TrainConfig) -> dict:
    """The settings as TensorBoard accepts them: numbers, bools and strings."""
    out = {}
    for key, value in config.to_dict().items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif value is None:
            value = "none"
        out[key] = value
    return out
