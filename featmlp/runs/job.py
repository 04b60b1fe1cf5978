"""What ``featmlp run`` (and ``featmlp lecture``) do, as one call: :func:`run_job`.

Load images, extract their features into a new run directory, decide the flips
(:func:`decide_flips`), then train, evaluate, plot and save there (:func:`featmlp.runs.results.train_run`).
The steps before training are told to the :class:`JobHook` callbacks (library code prints
nothing: the CLI's hook prints them); :class:`JobResult` says what was done.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featmlp.data import load_dataset
from featmlp.features import extract_features, get_feature_set, input_size, mirror_images, recommended_preset
from featmlp.progress import Callback, progress_callbacks, progress_hook
from featmlp.runs.directory import RunDirectory, check_out
from featmlp.runs.layout import FEATURES_FILE, FEATURES_PARTIAL
from featmlp.runs.results import RunResult, train_run
from featmlp.runs.reuse import job_key, load_reused, reuse_enabled, store_for_reuse
from featmlp.tables.extract import extract_dataset
from featmlp.tables.store import FeatureTable, load_features, save_features
from featmlp.training import PRESETS, TrainConfig, check_config

# Flips are left on when the mirror images are classified as their own class nearly as often as
# the images themselves (see mirror_agreement).
MIRROR_AGREEMENT = 0.9


def mirror_agreement(table: FeatureTable, *, max_rows: int = 5000, seed: int = 0) -> tuple[float, float] | None:
    """How well mirror images keep their class: nearest-class-mean accuracy on training rows, and on their mirrors.

    Returns ``(accuracy of the rows, accuracy of their mirror images)`` for up to ``max_rows``
    seeded training rows, standardised, against the class means of the rows themselves; None
    when the feature set has no mirror permutation. Photographs score about the same both
    ways (CIFAR-10's kmeans features: 0.467 and 0.457); characters do not (8x8 digits: 0.917
    and 0.348), and flip augmentation would teach them wrong labels.
    """
    perm = table.mirror()
    n = len(table.y_train)
    if perm is None or n == 0:
        return None
    idx = np.sort(np.random.default_rng(seed).choice(n, min(n, max_rows), replace=False))
    X = np.asarray(table.X_train[idx], np.float32)
    y = table.y_train[idx]
    sd = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1)
    classes = np.unique(y)
    means = np.stack([Z[y == c].mean(axis=0) for c in classes])

    def accuracy(A):
        nearest = (np.square(means).sum(1) - 2 * A @ means.T).argmin(axis=1)
        return float(np.mean(classes[nearest] == y))

    return accuracy(Z), accuracy(Z[:, perm])


# Test flips of features with no mirror permutation stay on when a probe classifies the mirror
# images at least this many times as well as the images (mirror_probe). A network's pooled features
# change little under mirroring even where the class does: lite0 on 8x8 digits, 0.984 against 0.932
# (test flips there: 0.978 test accuracy against 0.983 without); on CIFAR-10 0.720 against 0.718.
TEST_FLIP_AGREEMENT = 0.98
# Training images whose mirror images mirror_probe extracts (efficientnet-lite0 on CIFAR-10: ~8 s).
PROBE_ROWS = 1000


def mirror_probe(table: FeatureTable, images, *, rows: int = PROBE_ROWS,
                 seed: int = 0) -> tuple[float, float] | None:
    """How well mirror images keep their class, for features with no mirror permutation: ``(accuracy on
    images, accuracy on their mirror images)`` of a ridge classifier (scikit-learn's ``RidgeClassifier``,
    alpha the rows it fits) fitted on half of up to ``rows`` seeded training rows, standardised, and
    scored on the other half and on those images' mirror images, extracted from ``images`` (the
    training images, row for row), both ways round. None with fewer than 4 rows.
    """
    # start-up: scikit-learn loads where test flips are decided
    from sklearn.linear_model import RidgeClassifier

    n = len(table.y_train)
    if n < 4:
        return None
    idx = np.sort(np.random.default_rng(seed).choice(n, min(n, rows), replace=False))
    X = np.asarray(table.X_train[idx], np.float32)
    y = np.asarray(table.y_train[idx])
    M = extract_features(mirror_images(np.asarray(images[idx])), table.feature_set, state=table.fitted)
    mean, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 0, sd, 1)
    Z, ZM = (X - mean) / sd, (np.asarray(M, np.float32) - mean) / sd
    half = np.arange(len(y)) % 2 == 0
    right = np.zeros(2)
    for fit, scored in ((half, ~half), (~half, half)):
        if len(np.unique(y[fit])) < 2:  # one class in a half: nothing to tell apart
            return None
        probe = RidgeClassifier(alpha=float(fit.sum())).fit(Z[fit], y[fit])
        right += [np.sum(probe.predict(Z[scored]) == y[scored]), np.sum(probe.predict(ZM[scored]) == y[scored])]
    return float(right[0] / len(y)), float(right[1] / len(y))


def decide_flips(table: FeatureTable, config: TrainConfig, images=None) -> tuple[TrainConfig, str | None]:
    """``config`` with its flips (``flip``, ``test_flip``) turned off where mirror images change
    the class, and the line saying so (None when left as they are).

    Mirroring teaches wrong labels where the mirror image of a class is another thing (characters,
    digits): flips stay on when the mirror images keep their class, by nearest class mean, at
    least :data:`MIRROR_AGREEMENT` times as often as the images themselves. Features that have no
    mirror permutation (``mirror=false``) turn them off too, except the test flips of a table that
    holds the test images' mirror features (``X_test_mirror``), decided on the mirror images of
    ``images`` (the training images, row for row: :func:`mirror_probe`); without them, kept (a
    run's table holds those features only where its run decided on test flips).
    """
    if not (config.flip or config.test_flip):
        return config, None
    if table.mirror() is None and table.X_test_mirror is not None and config.test_flip:
        # test flips from the extracted mirror images; training flips need a permutation
        flip_off = " (no --flip: these features have no mirror permutation)" if config.flip else ""
        config = dataclasses.replace(config, flip=False)
        if images is None:  # a run's table keeps them only where its run decided on test flips (run_job)
            return config, ("flips off: these features have no mirror permutation (test flips kept: the table "
                            "holds the test images' mirror images)" if flip_off else None)
        probe = mirror_probe(table, images)
        if probe is None or probe[1] >= TEST_FLIP_AGREEMENT * probe[0]:
            return config, None
        return dataclasses.replace(config, test_flip=False), (
            f"test flips off: mirror images of held-out training images are classified right {probe[1]:.1%} of the "
            f"time against {probe[0]:.1%} for the images (a ridge probe), so mirroring changes what these images "
            f"show (as for characters); --test-flip forces them{flip_off}")
    agreement = mirror_agreement(table)
    if agreement is None:  # no mirror permutation: a preset's flips could not run
        # "extracted with mirror=false" only of a set that has the option (lecture or hog never mirror)
        optional = table.feature_set and any(
            "mirror" in dict(p.options) for p in get_feature_set(table.feature_set).components)
        if not config.flip:  # the test flips alone (the pretrained preset's)
            return dataclasses.replace(config, test_flip=False), (
                f"test flips off: the {table.feature_set or 'table'} features hold no mirror images of the test "
                f"images (featmlp run extracts them; --test-flip there)")
        return dataclasses.replace(config, flip=False, test_flip=False), (
            f"flips off: the {table.feature_set or 'table'} features hold no mirror images"
            + (" (e.g. extracted with --feature-option mirror=false)" if optional else ""))
    if agreement[1] >= MIRROR_AGREEMENT * agreement[0]:
        return config, None
    message = (f"flips off: mirror images of the training images keep their class for {agreement[1]:.0%} of them "
               f"against {agreement[0]:.0%} for the images (nearest class mean), so mirroring changes what these "
               f"images show (as for characters); --flip / --test-flip force them")
    return dataclasses.replace(config, flip=False, test_flip=False), message


class JobHook(Callback):
    """A callback that is also told what :func:`run_job` does before training; override what you need.

    Passed among ``run_job``'s ``callbacks``, it gets these calls in this order, then the
    training's (:class:`featmlp.training.Callback`). Library code prints nothing: the CLI's hook
    prints these lines.
    """

    def on_job_begin(self, staging: Path, out: Path) -> None:
        """The run is being built in ``staging``, renamed onto ``out`` when complete."""

    def on_warning(self, message: str) -> None:
        """A warning while loading the images (a missing CIFAR-10 batch ...)."""

    def on_images(self, dataset) -> None:
        """The images are loaded (``dataset.skipped``: the files ``skip_bad`` left out)."""

    def on_reused(self, entry: Path) -> None:
        """The images and features of the same job earlier are read back from ``entry`` (a folder
        of featmlp's cache, :mod:`featmlp.runs.reuse`) instead of being loaded and extracted."""

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
    reused: bool = False  # images and features read back from an earlier run of the same job


def run_job(source=None, features: str = "lecture", out: str | os.PathLike | None = None, *,
            config: TrainConfig | None = None, preset: str | None = None, auto_flips: bool | None = None,
            options: dict | None = None, fitted: dict | None = None, test_fraction: float = 0.2,
            split_seed: int = 0, image_size: tuple[int, int] | None = None, skip_bad: bool = False,
            storage_options: dict | None = None, workers: int = 1, chunk_size: int | None = None,
            overwrite: bool = False, progress=None, callbacks=(),
            log_scale: bool = False, tensorboard: bool = False, live_plot_seconds: float = 2.0,
            reuse: bool = True) -> JobResult:
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
        :func:`featmlp.tables.extract.extract_dataset` takes them.
    test_fraction, split_seed, image_size, skip_bad
        How the images are read and split (:func:`featmlp.data.load_dataset`).
    storage_options : dict, optional
        Settings of the filesystem of a URL source (credentials, ``endpoint_url``), as
        :func:`featmlp.data.load_dataset` takes them; never written to the run directory.
    workers, chunk_size
        Processes to extract with and images per chunk, as
        :func:`featmlp.tables.extract.extract_dataset` takes them.
    overwrite : bool
        Replace an existing ``out`` once the new run is complete, when it is a featmlp run
        directory (anything else is refused, as is an ``out`` inside ``source`` or holding it).
    progress : callable or Callback, optional
        ``progress(desc, done, total)`` of loading and extraction (training tells its callbacks).
    callbacks : iterable
        Training callbacks (:func:`featmlp.training.train`); the :class:`~featmlp.progress.Callback`
        instances among them are also told the progress of loading and extraction
        (``on_progress``), and :class:`JobHook` instances the steps before training.
    log_scale, tensorboard, live_plot_seconds
        As :func:`train_run` takes them.
    reuse : bool
        Read the images and features of a small job on one local file (the bundled sample, an
        archive) back from featmlp's cache when the same job ran before, and keep them the
        first time (:mod:`featmlp.runs.reuse`; ``$FEATMLP_REUSE=0`` turns it off too).

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

    features = get_feature_set(features).name
    if auto_flips is None:
        auto_flips = config is None
    if config is None:
        config = PRESETS[preset or recommended_preset(features) or "default"]
    check_config(config)  # settings and device, before the long extraction
    out = Path(out if out is not None else Path("runs") / f"run-{time.strftime('%Y%m%d-%H%M%S')}")
    callbacks = list(callbacks)
    hooks = [c for c in callbacks if isinstance(c, JobHook)]
    # One protocol: the callbacks hear loading's and extraction's progress as they hear training's.
    progress = progress_hook([*progress_callbacks(progress), *(c for c in callbacks if isinstance(c, Callback))])
    data = {"source": str(source or "sample"), "test_fraction": test_fraction, "split_seed": split_seed,
            "image_size": image_size}
    check_out(out, overwrite=overwrite, sources=[source])  # before the images are read
    mixed_size = input_size(features, options)
    key = None
    if reuse and fitted is None and reuse_enabled():
        key = job_key(source, {"features": features, "options": options, "mixed_size": mixed_size,
                               "skip_bad": bool(skip_bad), "mirror_test": bool(config.test_flip), **data})
    reused = load_reused(key)
    with RunDirectory(out, overwrite=overwrite, keep=(FEATURES_PARTIAL,)) as rd:
        for h in hooks:
            h.on_job_begin(rd.path, out)
        if reused is not None:
            ds, table_file, messages = reused
            for h in hooks:
                h.on_reused(table_file.parent)
            _tell_warnings(messages, hooks)
            for h in hooks:
                h.on_images(ds)
            shutil.copyfile(table_file, rd.path / FEATURES_FILE)
            table = load_features(rd.path / FEATURES_FILE)
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # images of mixed sizes go straight to the size a pretrained set resizes them to itself
                ds = load_dataset(source, test_fraction=test_fraction, seed=split_seed, image_size=image_size,
                                  progress=progress, skip_bad=skip_bad, storage_options=storage_options,
                                  mixed_size=mixed_size)
            # With hooks, loading's warnings (a missing CIFAR-10 batch) are theirs to tell; else they stay warnings.
            messages = [str(w.message) for w in caught]
            _tell_warnings(messages, hooks, [w.category for w in caught])
            for h in hooks:
                h.on_images(ds)
            table = extract_dataset(ds, features, rd.path / FEATURES_FILE, options=options, fitted=fitted,
                                    workers=workers, chunk_size=chunk_size, progress=progress,
                                    mirror_test=config.test_flip)
            if key is not None and not table.fitted:
                store_for_reuse(key, ds, rd.path / FEATURES_FILE, messages)
        for h in hooks:
            h.on_features(ds, table)
        notices = []
        if auto_flips:
            config, notice = decide_flips(table, config, ds.train_images)
            if notice:
                notices.append(notice)
                for h in hooks:
                    h.on_notice(notice)
            if table.X_test_mirror is not None and not config.test_flip:
                # The table keeps the test images' mirror features only where the run takes test flips, so
                # that `featmlp train` / `sweep` on it take them too (they cannot check without the images).
                table = dataclasses.replace(table, X_test_mirror=None)
                save_features(rd.path / FEATURES_FILE, table, overwrite=True)
        for h in hooks:
            h.on_config(table, config)
        run = train_run(table, config, rd, data={**data, "feature_file": str(rd.path / FEATURES_FILE)},
                        callbacks=callbacks, live_plot_seconds=live_plot_seconds, log_scale=log_scale,
                        tensorboard=tensorboard, test_images=ds.test_images)
    return JobResult(run.result, run.metrics, run.out, table=table, config=config, source=ds.source,
                     skipped=tuple(getattr(ds, "skipped", ()) or ()), notices=tuple(notices),
                     reused=reused is not None)


def _tell_warnings(messages: list[str], hooks: list, categories=None) -> None:
    """Loading's warnings: told to the hooks, or (without any) warned again as they were."""
    for i, message in enumerate(messages):
        if hooks:
            for h in hooks:
                h.on_warning(message)
        else:
            warnings.warn(message, categories[i] if categories else UserWarning, stacklevel=3)

