"""A run directory: train on a feature table, evaluate, plot, save, all in one folder.

``DIR/`` holds:

- ``config.json``: everything needed to repeat the run (data, feature set, every training
  setting); ``featmlp train --config DIR/config.json`` or :func:`repeat_config` reads it back;
- ``metrics.json``: ``test_accuracy``, ``diverged``, ``stop_reason``, per-class scores, the
  confusion matrix and ``history`` (one record per epoch: ``epoch``, ``train_loss``,
  ``train_accuracy``, ``seconds``, ``lr``, and ``val_loss``/``val_accuracy`` with validation);
- ``loss.png`` (kept current while training runs), ``confusion.png``;
- ``model.safetensors`` + ``model.json``: the model bundle (:mod:`featmlp.bundle`);
- ``features.npz`` when the run extracted its own features (so ``evaluate DIR`` needs no data).

Paths a run records are relative to the run when they lie inside it (``cp -r A B`` gives a
``B`` that reads its own files), and ``config.json`` records the feature table's fingerprint
(:func:`featmlp.store.table_fingerprint`), so ``evaluate`` notices a feature file that is not
the data the model was trained on.

A run is built in a staging directory beside ``DIR`` (``.DIR.incomplete``, see
:class:`RunDirectory`) and renamed onto ``DIR`` only when every file is written: a failed or
killed run leaves ``DIR`` as it was (absent, or the previous run, whole). An existing ``DIR`` is
replaced only when asked (``overwrite=True``, ``--force``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from ._io import exclusive
from .runs.bundle import save_bundle
from .errors import DataError
from .runs.evaluate import run_metrics
# The run directory's file names and JSON helpers live in the torch-free featmlp.layout (so
# compare and report import no torch); re-exported here, where they have always been imported from.
from .runs.layout import (CONFIG_FILE, CONFUSION_PLOT, FEATURES_FILE, FEATURES_PARTIAL, LOSS_PLOT,  # noqa: F401
                     METRICS_FILE, TENSORBOARD_DIR, read_json, resolve_feature_file, write_json)
from .model import Scaler, nonfinite_rows
from .runs.plots import plot_confusion, plot_history
from .store import FeatureTable, table_fingerprint
from .train import Callback, LivePlot, TrainConfig, TrainResult, check_training, train


@dataclass
class RunResult:
    """What :func:`train_run` returns: the training result, the test metrics, where it is."""

    result: TrainResult
    metrics: dict
    out: Path


def score_test(result: TrainResult, table: FeatureTable) -> dict:
    """Accuracy, per-class scores and confusion matrix on the table's test split, in order."""
    if len(table.y_test) == 0:
        return run_metrics(table.y_test, [], table.class_names)
    pred = result.predict(table.X_test)  # never shuffled: rows stay aligned with y_test
    return run_metrics(table.y_test, pred, table.class_names)


def staging_dir(out: str | os.PathLike) -> Path:
    """Where a run into ``out`` is built: ``.<name>.incomplete`` beside it, the same each time
    (so a rerun finds the extraction an interrupted ``featmlp run`` left there)."""
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}.incomplete"


def lock_file(out: str | os.PathLike) -> Path:
    """The lock a writer of run or sweep directory ``out`` holds: ``.<name>.lock`` beside it."""
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}.lock"


def _aside_dir(out: Path) -> Path:
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}.replaced"


def check_out(out: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Raise :class:`DataError` unless a run may be written to ``out``: absent, an empty
    directory, or (``overwrite``) a directory to replace."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a directory: choose another --out")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise DataError(f"{out} already exists: pass --force (overwrite=True) to replace it once the new run "
                        f"is complete, or choose another --out")


def _fsync_dir(path: Path) -> None:
    # A rename is durable once the directory holding it is synced.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RunDirectory:
    """A run directory being written: files go to :attr:`path` (the staging directory beside
    ``out``), which :meth:`commit` renames onto ``out`` once everything is there.

    Used as a context manager, it commits when the block ends normally and, on an error or
    an interrupt, removes the staging directory except the entries named in ``keep`` (the
    resumable state of an extraction). With ``overwrite`` an existing ``out`` is renamed
    aside, the new run renamed in, then the old one deleted: a kill in between leaves the
    old run (``.<name>.replaced``, put back by the next run) or the new one whole.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with RunDirectory(out) as rd:
    ...     _ = (rd.path / "a.txt").write_text("a")
    ...     out.exists()
    False
    >>> sorted(p.name for p in out.iterdir())
    ['a.txt']
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, keep=()):
        self.out = Path(out)
        self.path = staging_dir(out)
        self.keep = tuple(keep)
        # One writer per run directory: a second run into it would clear this one's staging.
        self._lock = contextlib.ExitStack()
        busy = f"another featmlp run is writing {self.out} (pid {{pid}}): wait for it, or choose another --out"
        self._lock.enter_context(exclusive(lock_file(self.out), busy))
        try:
            self._start(overwrite)
        except BaseException:
            self._lock.close()
            raise

    def _start(self, overwrite: bool) -> None:
        aside = _aside_dir(self.out)
        if aside.exists():  # left by a replacement that was killed
            if self.out.exists():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(aside, self.out)  # the old run is put back
        check_out(self.out, overwrite=overwrite)
        self._clear()
        self.path.mkdir(parents=True, exist_ok=True)
        self.committed = False

    def _clear(self) -> None:
        """Empty the staging directory, but for the entries in ``keep``; removed when nothing is kept."""
        if not self.path.is_dir():
            return
        kept = False
        for entry in self.path.iterdir():
            if entry.name in self.keep:
                kept = True
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if not kept:
            self.path.rmdir()

    def commit(self) -> Path:
        """Move the finished run onto ``out`` (replacing the old one); returns ``out``."""
        _fsync_dir(self.path)
        aside = _aside_dir(self.out)
        if self.out.exists():
            os.replace(self.out, aside)
            os.replace(self.path, self.out)
            _fsync_dir(self.out.parent)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, self.out)
        _fsync_dir(self.out.parent)
        self.committed = True
        self._lock.close()
        return self.out

    def discard(self) -> None:
        """Remove what this run wrote, but for the entries in ``keep``."""
        try:
            with contextlib.suppress(OSError):
                self._clear()
        finally:
            self._lock.close()

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self.committed:
                self.commit()
        else:
            self.discard()


def check_run(table: FeatureTable, config: TrainConfig) -> None:
    """Raise the error a run on ``table`` with ``config`` would meet, before anything is written.

    The settings, the device, what :func:`featmlp.train.check_training` checks on the training
    rows (NaN, validation split, early stopping, memory), at least two classes in training,
    test rows without NaN or infinities (they would be scored as if they were images), and
    columns too large to scale.
    """
    n_classes = len(table.class_names)
    mirror = table.mirror() if config.flip or config.test_flip else None
    check_training(table.X_train, table.y_train, config, n_classes=n_classes, mirror=mirror)
    present = np.unique(np.asarray(table.y_train))
    if len(present) < 2:
        only = table.class_names[int(present[0])] if len(present) else "none"
        raise DataError(f"the training set holds one class ({only!r}, {len(table.y_train)} rows): a classifier "
                        f"needs at least 2 classes in train")
    if len(table.y_test):
        bad = nonfinite_rows(table.X_test)
        if len(bad):
            # Refused, not left out: leaving rows out would change what the test accuracy
            # is measured on, and such rows mean the extraction went wrong for those images.
            raise DataError(f"the test features hold NaN or infinite values in {len(bad)} of "
                            f"{len(table.y_test)} rows (first: row {bad[0]}): clean or re-extract them")
    Scaler.fit(table.X_train, config.scaler, names=table.feature_names)


def train_run(table: FeatureTable, config: TrainConfig, out: str | os.PathLike | RunDirectory, *,
              data: dict | None = None, callbacks=(), progress=None, live_plot_seconds: float = 2.0,
              log_scale: bool = False, overwrite: bool = False, tensorboard: bool = False) -> RunResult:
    """Train on ``table``'s train split, evaluate on its test split, write everything to ``out``.

    Parameters
    ----------
    table : FeatureTable
        Features and labels (see :func:`featmlp.store.load_features`).
    config : TrainConfig
        Every training setting (a preset, overridden field by field).
    out : path or RunDirectory
        Run directory. It is built beside (:func:`staging_dir`, where ``loss.png`` shows
        the loss while training runs) and renamed onto ``out`` when complete; an error or a
        kill leaves ``out`` as it was. An open :class:`RunDirectory` is written into and
        left for its owner to commit (``featmlp run`` extracts into it first).
    data : dict, optional
        How the features were made (source, ``feature_file`` ...), recorded in ``config.json``;
        a ``feature_file`` inside the run is recorded relative to it.
    callbacks : iterable
        Passed to :func:`featmlp.train.train` (e.g. a per-epoch printer).
    live_plot_seconds : float
        ``loss.png`` is rewritten at most this often while training runs.
    overwrite : bool
        Replace an existing ``out`` (once the new run is complete); without it an existing,
        non-empty ``out`` is refused before anything is done.
    tensorboard : bool
        Also log every epoch and the test metrics for TensorBoard, in ``out/tensorboard``.

    Returns
    -------
    RunResult
        With ``out`` the final run directory.

    Raises
    ------
    FeatmlpError
        Bad settings or data (checked before anything is written, see :func:`check_run`).
    """
    check_run(table, config)
    if not isinstance(out, RunDirectory):
        check_out(out, overwrite=overwrite)
    logger = None
    if tensorboard:  # a missing package is refused here, before any file is written
        from .runs.tensorboard import TensorBoardLogger

        staging = out.path if isinstance(out, RunDirectory) else staging_dir(out)
        logger = TensorBoardLogger(staging / TENSORBOARD_DIR)
    if isinstance(out, RunDirectory):
        return _train_into(out, table, config, data, callbacks, progress, live_plot_seconds, log_scale, logger)
    with RunDirectory(out, overwrite=overwrite) as rd:
        return _train_into(rd, table, config, data, callbacks, progress, live_plot_seconds, log_scale, logger)


# Flips are left on when the mirror images are classified as their own class nearly as often as
# the images themselves (see featmlp.store.mirror_agreement).
MIRROR_AGREEMENT = 0.9


def decide_flips(table: FeatureTable, config: TrainConfig) -> tuple[TrainConfig, str | None]:
    """``config`` with its flips (``flip``, ``test_flip``) turned off where mirror images change
    the class, and the line saying so (None when left as they are).

    Mirroring teaches wrong labels where the mirror image of a class is another thing (characters,
    digits): flips stay on when the mirror images keep their class, by nearest class mean, at
    least :data:`MIRROR_AGREEMENT` times as often as the images themselves.
    """
    import dataclasses

    from .store import mirror_agreement

    if not (config.flip or config.test_flip):
        return config, None
    agreement = mirror_agreement(table)
    if agreement is None or agreement[1] >= MIRROR_AGREEMENT * agreement[0]:
        return config, None
    message = (f"flips off: mirror images of the training images keep their class for {agreement[1]:.0%} of them "
               f"against {agreement[0]:.0%} for the images (nearest class mean), so mirroring changes what these "
               f"images show (as for characters); --flip / --test-flip force them")
    return dataclasses.replace(config, flip=False, test_flip=False), message


class JobHook(Callback):
    """A callback that is also told what :func:`run_job` does before training; override what you need.

    Passed among ``run_job``'s ``callbacks``, it gets these calls in this order, then the
    training's (:class:`featmlp.train.Callback`). Library code prints nothing: the CLI's hook
    prints these lines.
    """

    def on_job_begin(self, staging: Path, out: Path) -> None:
        """The run is being built in ``staging``, renamed onto ``out`` when complete."""

    def on_warning(self, message: str) -> None:
        """A warning while loading the images (a missing CIFAR-10 batch ...)."""

    def on_images(self, dataset) -> None:
        """The images are loaded (``dataset.skipped``: the files ``skip_bad`` left out)."""

    def on_features(self, dataset, table: FeatureTable) -> None:
        """Their features are extracted, into the run's ``features.npz``."""

    def on_notice(self, message: str) -> None:
        """A setting run_job changed, and why (flips turned off)."""

    def on_config(self, table: FeatureTable, config: TrainConfig) -> None:
        """Training with ``config`` starts next."""


@dataclass
class JobResult(RunResult):
    """What :func:`run_job` returns: the :class:`RunResult`, and how it came about."""

    table: FeatureTable = None
    config: TrainConfig = None  # what was trained (the flips decided)
    source: str = ""  # the dataset's description
    skipped: tuple = ()  # (file, reason) of the files skip_bad left out
    notices: tuple[str, ...] = ()  # the settings run_job changed, and why


def run_job(source=None, features: str = "lecture", out: str | os.PathLike | None = None, *,
            config: TrainConfig | None = None, preset: str | None = None, auto_flips: bool | None = None,
            options: dict | None = None, fitted: dict | None = None, test_fraction: float = 0.2,
            split_seed: int = 0, image_size: tuple[int, int] | None = None, skip_bad: bool = False,
            overwrite: bool = False, progress=None, callbacks=(), log_scale: bool = False,
            tensorboard: bool = False, live_plot_seconds: float = 2.0) -> JobResult:
    """Load images, extract their features into a run directory, train, evaluate, plot and save:
    what ``featmlp run`` (and ``featmlp lecture``) do.

    Parameters
    ----------
    source : str or path, optional
        Images (:func:`featmlp.data.load_dataset`): None or ``"sample"`` for the bundled sample,
        ``"cifar10"``, an archive or an image folder.
    features : str
        Feature set, or several joined by ``+``.
    out : path, optional
        Run directory (default ``runs/run-<time>``). Built beside and renamed onto ``out`` when
        complete; a failed or killed run keeps only its extraction's finished chunks beside,
        which the same call resumes from.
    config : TrainConfig, optional
        Training settings; default the preset ``preset``, else the one recommended for
        ``features`` (:func:`featmlp.features.recommended_preset`), else ``"default"``.
    auto_flips : bool, optional
        Turn the flips off where mirror images change the class (:func:`decide_flips`); default:
        when ``config`` is not given (the preset's flips).
    options, fitted : dict, optional
        Settings or an existing fitted state of a fitted feature set (kmeans), as
        :func:`featmlp.store.extract_dataset` takes them.
    test_fraction, split_seed, image_size, skip_bad
        How the images are read and split (:func:`featmlp.data.load_dataset`).
    overwrite : bool
        Replace an existing ``out`` once the new run is complete.
    progress : callable, optional
        ``progress(desc, done, total)`` of loading and extraction (training tells its callbacks).
    callbacks : iterable
        Training callbacks (:func:`featmlp.train.train`); :class:`JobHook` instances among them
        are also told about the steps before training.
    log_scale, tensorboard, live_plot_seconds
        As :func:`train_run` takes them.

    Returns
    -------
    JobResult
        The :class:`RunResult` (``out`` the final run directory), with the feature table, the
        configuration trained, the dataset's description and skipped files, and the notices.

    Raises
    ------
    FeatmlpError
        Bad settings (checked before the images are read), data or an existing ``out``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> job = run_job(out=out, config=TrainConfig(hidden=(6,), epochs=2))  # doctest: +SKIP
    >>> sorted(p.name for p in job.out.iterdir())[:3]  # doctest: +SKIP
    ['config.json', 'confusion.png', 'features.npz']
    """
    import time
    import warnings

    from .data import load_dataset
    from .features import get_feature_set, recommended_preset
    from .store import extract_dataset
    from .train import PRESETS, check_config

    features = get_feature_set(features).name
    if auto_flips is None:
        auto_flips = config is None
    if config is None:
        config = PRESETS[preset or recommended_preset(features) or "default"]
    check_config(config)  # settings and device, before the long extraction
    out = Path(out if out is not None else Path("runs") / f"run-{time.strftime('%Y%m%d-%H%M%S')}")
    callbacks = list(callbacks)
    hooks = [c for c in callbacks if isinstance(c, JobHook)]
    data = {"source": str(source or "sample"), "test_fraction": test_fraction, "split_seed": split_seed,
            "image_size": image_size}
    with RunDirectory(out, overwrite=overwrite, keep=(FEATURES_PARTIAL,)) as rd:
        for h in hooks:
            h.on_job_begin(rd.path, out)
        # With hooks, loading's warnings (a missing CIFAR-10 batch) are theirs to tell; else they stay warnings.
        with warnings.catch_warnings(record=True) if hooks else contextlib.nullcontext() as caught:
            if hooks:
                warnings.simplefilter("always")
            ds = load_dataset(source, test_fraction=test_fraction, seed=split_seed, image_size=image_size,
                              progress=progress, skip_bad=skip_bad)
        for w in caught or ():
            for h in hooks:
                h.on_warning(str(w.message))
        for h in hooks:
            h.on_images(ds)
        table = extract_dataset(ds, features, rd.path / FEATURES_FILE, options=options, fitted=fitted,
                                progress=progress)
        for h in hooks:
            h.on_features(ds, table)
        notices = []
        if auto_flips:
            config, notice = decide_flips(table, config)
            if notice:
                notices.append(notice)
                for h in hooks:
                    h.on_notice(notice)
        for h in hooks:
            h.on_config(table, config)
        run = train_run(table, config, rd, data={**data, "feature_file": str(rd.path / FEATURES_FILE)},
                        callbacks=callbacks, live_plot_seconds=live_plot_seconds, log_scale=log_scale,
                        tensorboard=tensorboard)
    return JobResult(run.result, run.metrics, run.out, table=table, config=config, source=ds.source,
                     skipped=tuple(getattr(ds, "skipped", ()) or ()), notices=tuple(notices))


def _train_into(rd: RunDirectory, table, config, data, callbacks, progress, live_plot_seconds, log_scale,
                logger) -> RunResult:
    data = _recorded_data(dict(data or {}), rd)
    write_config(rd.path, table, config, data)
    live = LivePlot(rd.path / LOSS_PLOT, every_seconds=live_plot_seconds, log_scale=log_scale)
    mirror = table.mirror() if config.flip or config.test_flip else None
    result = train(table.X_train, table.y_train, config, n_classes=len(table.class_names),
                   callbacks=[live, *callbacks, *([logger] if logger else [])], progress=progress, mirror=mirror)
    run = write_results(rd.path, table, result, log_scale=log_scale, loss_plotted=True)  # by `live`
    if logger is not None:
        logger.log_metrics(run.metrics)
    return RunResult(run.result, run.metrics, rd.out)


def _recorded_data(data: dict, rd: RunDirectory) -> dict:
    """``data`` with its ``feature_file`` relative to the run when it lies inside it, else as given.

    A feature file inside the run being replaced (``train DIR/features.npz --out DIR
    --force``) is linked into the new run first, so the replacement does not delete it.
    """
    given = data.get("feature_file")
    if not given:
        return data
    path = Path(os.path.abspath(given))
    for root in (rd.path, Path(os.path.abspath(rd.out))):
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if root != rd.path:
            target = rd.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
        data["feature_file"] = rel.as_posix()
        return data
    return data  # outside the run: as given (the CLI gives absolute paths)


def write_config(out: str | os.PathLike, table: FeatureTable, config: TrainConfig, data: dict | None = None, *,
                 fingerprint: str | None = None) -> None:
    """Write ``config.json``: the data it ran on (with the table's fingerprint) and every training setting."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG_FILE, {
        "featmlp_version": __version__,
        "data": {**(data or {}), "features": table.feature_set, "feature_names": list(table.feature_names),
                 "class_names": list(table.class_names), "n_train": len(table.y_train),
                 "n_test": len(table.y_test), **{k: v for k, v in table.meta.items() if k != "features"},
                 "table_fingerprint": fingerprint or table_fingerprint(table)},
        "train": config.to_dict(),
    })


def write_results(out: str | os.PathLike, table: FeatureTable, result: TrainResult, *,
                  log_scale: bool = False, plots: bool = True, loss_plotted: bool = False) -> RunResult:
    """Evaluate a trained result on the test split; write metrics, plots and the model bundle.

    ``loss_plotted``: ``out/loss.png`` already shows this history (train_run's live plot draws
    it when training ends), so it is not drawn a second time (~0.3 s, a tenth of a lecture run).
    """
    out = Path(out)
    metrics = {
        **score_test(result, table),
        "diverged": result.diverged,
        "stop_reason": result.stop_reason,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": float(sum(r["seconds"] for r in result.history)),
        "device": result.device,
        "history": result.history,
    }
    if plots and metrics.get("confusion_matrix") is not None:
        plot_confusion(metrics["confusion_matrix"], table.class_names, out / CONFUSION_PLOT)
    if plots and result.history and not loss_plotted:
        plot_history(result.history, out / LOSS_PLOT, log_scale=log_scale)
    save_bundle(out, result.model, result.spec, result.scaler, table.feature_set or "unknown",
                table.class_names, extra={"train": result.config.to_dict(),
                                          "test_accuracy": metrics["test_accuracy"],
                                          # new images are resized to this before their features
                                          "image_size": table.meta.get("image_size")},
                feature_state=table.fitted, mirror=result.mirror if result.config.test_flip else None)
    write_json(out / METRICS_FILE, metrics)
    return RunResult(result, metrics, out)


def repeat_config(run_dir: str | os.PathLike) -> tuple[dict, TrainConfig]:
    """The data settings and the :class:`TrainConfig` recorded in a run's ``config.json``."""
    cfg = read_json(Path(run_dir) / CONFIG_FILE)
    return cfg.get("data", {}), TrainConfig.from_dict(cfg["train"])


def run_feature_file(run_dir: str | os.PathLike) -> tuple[Path, str | None]:
    """The feature file a run recorded (found relative to the run, so a copied run reads its own)
    and the fingerprint of the table it was trained on (None for runs from before featmlp recorded it).

    Raises
    ------
    DataError
        The run records no feature file (it was trained from the API on a table in memory).
    """
    data = read_json(Path(run_dir) / CONFIG_FILE).get("data", {})
    if not data.get("feature_file"):
        raise DataError(f"{run_dir} does not record its feature file: pass FEATURES.npz")
    return resolve_feature_file(run_dir, data["feature_file"]), data.get("table_fingerprint")


def evaluate_run(run_dir: str | os.PathLike, features_file: str | os.PathLike | None = None) -> dict:
    """Evaluate a saved run's model on the test split of a feature file (default: the run's own).

    Returns the metrics with the keys and numbers of the run's ``metrics.json`` (``test_accuracy``,
    ``n_test``, ``per_class``, ``macro``, ``weighted``, ``confusion_matrix``), so the two compare
    directly; what ``featmlp evaluate --json`` prints.

    Raises
    ------
    DataError
        The feature file does not fit the model: not the data the run recorded (its
        fingerprint differs; only checked for the run's own file), NaN or infinite test
        features, another number of features or other class names.

    Examples
    --------
    >>> evaluate_run("runs/lecture-1")["test_accuracy"]  # doctest: +SKIP
    0.294
    """
    from .runs.bundle import load_bundle
    from .store import load_features

    bundle = load_bundle(run_dir)
    recorded = None
    if features_file is None:
        features_file, recorded = run_feature_file(run_dir)
    table = load_features(features_file)
    if recorded is not None and table_fingerprint(table) != recorded:
        raise DataError(f"{features_file} is not the data this model was trained on (its contents differ from "
                        f"the run's record): pass the feature file to evaluate on explicitly")
    bad = nonfinite_rows(table.X_test)
    if len(bad):
        raise DataError(f"{features_file}: the test features hold NaN or infinite values in {len(bad)} of "
                        f"{len(table.y_test)} rows (first: row {bad[0]}): clean or re-extract them")
    if table.feature_names and len(table.feature_names) != bundle.spec.n_features:
        raise DataError(f"{features_file} has {len(table.feature_names)} features, the model takes "
                        f"{bundle.spec.n_features}: extract with --features {bundle.feature_set}")
    if tuple(table.class_names) != tuple(bundle.class_names):
        raise DataError(f"{features_file}'s classes {list(table.class_names)} differ from the model's "
                        f"{list(bundle.class_names)}")
    return run_metrics(table.y_test, bundle.predict(table.X_test), bundle.class_names)
