"""Extraction: images to feature tables, an ``.npz`` or a sharded table, chunk by chunk.

:func:`extract_dataset` writes an ``.npz`` (the table held in memory, in the feature set's
dtype): each finished chunk is saved in ``<output>.partial/`` (after the fitted state, fitted
on the training images only), so an interrupted run picks up where it stopped, and memory
stays bounded by the chunk size while extracting.

:func:`extract_to_shards` plans the chunks of a dataset (a chunk is ``chunk_size``
consecutive images of one split), fits a fitted feature set (kmeans) once on the training
images, and runs :func:`extract_shard` for every chunk: in this process, in ``workers``
local processes, or on a Dask cluster (:mod:`featmlp.tables.cluster`). Each task reads its own
images from the source (a chunk of image files travels as names and byte locations, never as
pixels), computes the features with the serial kernels, and writes its shard atomically
(:func:`featmlp.tables.sharded.write_shard`). A task whose shard is already finished and intact
returns its record at once, so a rerun after an interruption, and a retry after a worker
died, redo only what is missing. The table is built beside its place (``.NAME.partial/``)
and renamed in once its manifest is written.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
from pathlib import Path

import numpy as np

from featmlp import __version__, _memory
from featmlp._io import atomic_write, exclusive, sibling
from featmlp._memory import format_bytes
from featmlp._outputs import check_output, check_work_dir, remove_work_dir, replace_dir
from featmlp._validation import Field, check
from featmlp._workers import spawn_pool, stopping
from featmlp.data import ImageArray, fingerprint
from featmlp.errors import ConfigError, DataError
from featmlp.features import (CHUNK_BYTES, chunk_for_memory, extract_features, feature_names, fit_features,
                              get_feature_set, mirror_images, mirror_permutation, parse_feature_options,
                              state_to_arrays, working_bytes)
from featmlp.tables.cluster import run_on_cluster
from featmlp.tables.format import FITTED_FILE, SPEC_FILE
from featmlp.tables.sharded import finished_shard, write_manifest, write_shard
from featmlp.tables.store import FeatureTable, load_features, read_fitted, save_features, write_fitted

_SPEC_FILE = SPEC_FILE


def _extract_chunk(images: np.ndarray, features: str, state: dict) -> np.ndarray:
    # Serial kernel in each worker: the processes are the parallelism (and see the fork note).
    return extract_features(images, features, state=state, parallel=False)


def extract_dataset(dataset, features: str = "lecture", output: str | os.PathLike | None = None, *,
                    options: dict | None = None, fitted: dict | None = None,
                    chunk_size: int | None = None, workers: int = 1, progress=None,
                    overwrite: bool = False, mirror_test: bool = False) -> FeatureTable:
    """Extract a feature set from a :class:`featmlp.data.Dataset`, optionally to a file.

    Parameters
    ----------
    dataset : featmlp.data.Dataset
        Train and test images with labels.
    features : str
        Name of a feature set (``featmlp.FEATURE_SETS``), or several joined by ``+``.
    output : path, optional
        Where to write the ``.npz``. Finished chunks are kept in
        ``<output>.partial/`` until the file is complete, so rerunning an
        interrupted extraction skips them; the directory is removed at the end.
    options : dict, optional
        Settings of the fitted sets (``{"k": 4000}``; see
        :func:`featmlp.features.parse_feature_options`).
    fitted : dict, optional
        An existing fitted state to apply instead of fitting (e.g. from
        :func:`load_fitted`); the sets it lacks are fitted here.
    chunk_size : int, optional
        Images per chunk (bounds memory and the work lost to an interruption); default
        :func:`default_chunk_size`: 5,000, fewer for images larger than 128x128.
    workers : int
        Processes to use; 1 computes in this process (with all its threads).
    progress : callable, optional
        Progress hook, called as ``progress("extract", done, total)`` (and
        ``progress("kmeans", iteration, n_iter)`` while a dictionary is fitted).
    overwrite : bool
        Replace an existing ``output`` that is a feature file featmlp wrote (anything else
        there is refused, see :func:`featmlp._outputs.check_output`).
    mirror_test : bool
        Also extract the features of each test image's mirror image (``X_test_mirror``: test-time
        flips) where the set's features of mirrored images are no permutation of its columns
        (the pretrained sets); those with one (kmeans) need none extracted.

    Returns
    -------
    FeatureTable

    Raises
    ------
    DataError
        When ``output`` exists (without ``overwrite``, or when it is not a featmlp feature
        file), or another extraction is writing it (an exclusive lock on ``<output>.lock``,
        released by the kernel however that process ends).
    """
    fset, options, fitted, chunk_size = check_extraction(dataset, features, options, fitted, chunk_size, workers)
    if output is None:
        return _extract_dataset(dataset, fset, output, options, fitted, chunk_size, workers, progress,
                                mirror_test=mirror_test)
    check_output(output, "features", force=overwrite, option="output")
    with extraction_lock(output):
        check_output(output, "features", force=overwrite, option="output")  # as it is now that it is ours
        return _extract_dataset(dataset, fset, output, options, fitted, chunk_size, workers, progress, overwrite,
                                mirror_test)


# What the settings of extract_dataset and extract_to_shards accept (the feature set is checked by
# its registry, its options by parse_feature_options, a cluster by tables.cluster.check_cluster).
FIELDS: dict[str, Field] = {
    "workers": Field("int", "processes to extract in; 1: this process, with all its threads", low=1),
    "chunk_size": Field("optional_int", "images per chunk (per shard); None: default_chunk_size", low=1),
}


def check_extraction(dataset, features, options, fitted, chunk_size, workers, *, local: bool = True):
    """``(feature set, options, fitted state, chunk size)`` of an extraction, checked (ConfigError).

    The settings are checked against :data:`FIELDS`. The default chunk size holds the feature set's working memory to :data:`_CHUNK_BYTES`
    (:func:`default_chunk_size`); with ``local`` (the chunks are computed on this machine,
    not on a cluster's), one image, and then a chunk, that need more memory than is
    available are refused (ConfigError) before anything is computed.
    """
    fset = get_feature_set(features)
    check(dict(workers=workers, chunk_size=chunk_size), FIELDS)
    options = parse_feature_options(fset, options or {})
    fitted = {k: v for k, v in (fitted or {}).items() if k in fset.needs_fit}
    if options and fitted and set(fset.needs_fit) <= set(fitted):
        raise ConfigError(f"feature options {', '.join(options)} were given with an already fitted state: "
                        f"drop them, or fit anew without --fitted-from")
    shape = dataset.train_images.shape[1:3]
    threads = 1 if workers > 1 else None  # worker processes run the serial kernels
    if chunk_size is None:
        chunk_size = default_chunk_size(shape, fset, options=options, state=fitted, threads=threads)
    if local:
        # a chunk holds at most the images of a split
        largest = max(len(dataset.train_labels), len(dataset.test_labels), 1)
        check_chunk_memory(fset, shape, min(chunk_size, largest), workers, options=options, state=fitted)
    return fset, options, fitted, chunk_size


def check_chunk_memory(fset, image_shape, chunk_size: int, workers: int = 1, *, options=None, state=None,
                       free: int | None = None) -> None:
    """Refuse (ConfigError, one line) an extraction whose images or chunks would not fit in memory.

    First one image of ``image_shape`` (H, W): decoded and its features computed on one thread
    (:func:`featmlp.features.working_bytes`); too large, it can only be made smaller, so the
    message says to downscale (``--image-size``). Then ``chunk_size`` images at a time, in
    each of ``workers`` processes (which also hold the decoded chunks sent to them). ``free``:
    the memory available (default :func:`featmlp._memory.available_memory`; nothing is refused
    when it cannot be told).
    """
    free = _memory.available_memory() if free is None else free
    if free is None:
        return
    height, width = (int(v) for v in image_shape)
    one = working_bytes(fset, (height, width), 1, threads=1, options=options, state=state)
    if one > free:
        scale = (free / 2 / one) ** 0.5
        w, h = max(1, int(width * scale)), max(1, int(height * scale))
        raise ConfigError(f"one {width}x{height} image needs about {format_bytes(one)} of memory for its "
                          f"{fset.name} features, and {format_bytes(free)} is available: downscale the images, e.g. "
                          f"image_size=({w}, {h})")
    need = extraction_bytes(fset, (height, width), chunk_size, workers, options=options, state=state)
    if need > free:
        per = f"; {workers} processes at once" if workers > 1 else ""
        raise ConfigError(f"extracting {fset.name} features of {width}x{height} images {chunk_size} at a time "
                          f"needs about {format_bytes(need)} of memory{per}, and {format_bytes(free)} is available: "
                          f"pass a smaller --chunk-size (chunk_size=){' or fewer --workers' if workers > 1 else ''}, "
                          f"or image_size=(W, H) to downscale the images")


def extraction_bytes(fset, image_shape, chunk_size: int, workers: int = 1, *, options=None, state=None) -> int:
    """Bytes that extracting ``chunk_size`` images at a time takes: one chunk on all threads, or
    ``workers`` processes each computing one on one thread while ``workers + 1`` decoded chunks
    are on their way to them (:func:`in_processes`)."""
    if workers <= 1:
        return working_bytes(fset, image_shape, chunk_size, options=options, state=state)
    pixels = 3 * int(image_shape[0]) * int(image_shape[1]) * int(chunk_size)
    return workers * working_bytes(fset, image_shape, chunk_size, threads=1, options=options, state=state) \
        + (workers + 1) * pixels


def extraction_lock(output):
    """The lock that keeps one extraction per output (``<output>.lock``; see :func:`featmlp._io.exclusive`)."""
    busy = f"another featmlp extract is writing {output} (pid {{pid}}): wait for it, or write to another file"
    return exclusive(sibling(output, "lock", hidden=False), busy)


def extraction_meta(dataset, fset, options) -> dict:
    """The provenance a feature table records: feature set, source, dataset fingerprint, image size, version."""
    height, width = dataset.train_images.shape[1:3]
    meta = {"features": fset.name, "source": dataset.source, "dataset_fingerprint": fingerprint(dataset),
            "image_size": [int(width), int(height)],
            "featmlp_version": __version__}
    if fset.needs_fit:
        meta["feature_options"] = options
    return meta


def weights_provenance(state: dict) -> dict:
    """``{"weights_sha256": {set: SHA-256}}`` of the pretrained sets of a fitted state (none: {}),
    recorded in the table's meta beside the state itself, so that config.json carries it too."""
    hashes = {name: fitted.weights_sha256_ for name, fitted in sorted(state.items())
              if getattr(fitted, "weights_sha256_", None)}
    return {"weights_sha256": hashes} if hashes else {}


# Memory of a chunk by default, its decoded pixels and the feature set's working memory
# (featmlp.features.working_bytes): CIFAR-10's 32x32 images come 5,000 to a chunk (15 MB of
# pixels), 256x256 photos ~1,000 for the lecture's features rather than 5,000 (983 MB of
# pixels, and as much again of work).
_CHUNK_BYTES = CHUNK_BYTES
_MAX_CHUNK = 5000


def default_chunk_size(image_shape, features="lecture", *, options=None, state=None,
                       threads: int | None = None) -> int:
    """Images per extraction chunk for images of ``(height, width)``: at most 5,000, and as many as
    keep the chunk's decoded pixels and the working memory of ``features`` on ``threads`` threads
    (default: the kernels', :func:`featmlp.features.feature_threads`) within 256 MB; at least one.
    A set that computes a block of images at a time in a fixed amount of memory (kmeans: one
    BLAS product of up to 256 MB) has that block on top of the 256 MB.

    Examples
    --------
    >>> default_chunk_size((32, 32)), default_chunk_size((256, 256), "color")
    (5000, 1365)
    >>> default_chunk_size((256, 256), "lecture", threads=1)
    1014
    """
    return chunk_for_memory(features, image_shape, budget=_CHUNK_BYTES, max_images=_MAX_CHUNK, threads=threads,
                            options=options, state=state)


def _extract_dataset(dataset, fset, output, options, fitted, chunk_size, workers, progress,
                     overwrite=False, mirror_test=False) -> FeatureTable:
    height, width = dataset.train_images.shape[1:3]
    meta = extraction_meta(dataset, fset, options)
    partial = None
    if output is not None:
        partial = resumable_dir(sibling(output, "partial", hidden=False), {**meta, "mirror_test": mirror_test},
                                chunk_size, fitted)

    state = fitted_state(fset, dataset.train_images, options, fitted, partial, progress)
    meta.update(weights_provenance(state))
    # Some sets (hog) have as many columns as the image size gives: name them for this size.
    names = feature_names(fset, image_shape=(height, width), state=state)
    splits = {"train": dataset.train_images, "test": dataset.test_images}
    if mirror_test and mirror_permutation(fset, state, image_shape=(height, width)) is None:
        splits["test_mirror"] = dataset.test_images  # mirrored by images_of
    chunks = [(split, start) for split, imgs in splits.items() for start in range(0, len(imgs), chunk_size)]
    total = sum(len(imgs) for imgs in splits.values())

    results: dict[tuple[str, int], np.ndarray] = {}
    todo = []
    for key in chunks:
        chunk_file = partial / f"{key[0]}-{key[1]:09d}.npy" if partial else None
        rows = min(chunk_size, len(splits[key[0]]) - key[1])
        X = _saved_chunk(chunk_file, (rows, len(names)), fset.dtype) if chunk_file is not None else None
        if X is not None:
            results[key] = X
        else:
            todo.append(key)
    done = sum(len(r) for r in results.values())
    if progress is not None:
        progress("extract", done, total)

    def finish(key, X):
        nonlocal done
        results[key] = X
        if partial is not None:
            with atomic_write(partial / f"{key[0]}-{key[1]:09d}.npy", "wb") as f:
                np.save(f, X)
        done += len(X)
        if progress is not None:
            progress("extract", done, total)

    def images_of(key):
        split, start = key
        images = splits[split][start:start + chunk_size]
        return mirror_images(np.asarray(images)) if split == "test_mirror" else images

    if workers == 1 or len(todo) <= 1:
        for key in todo:
            finish(key, extract_features(images_of(key), fset, state=state))
    else:
        # Chunks are decoded here as they are submitted (a generator), a few at a time.
        in_processes(_extract_chunk, ((key, (images_of(key), fset.name, state)) for key in todo), workers, finish)

    def stacked(split):
        keys = [k for k in chunks if k[0] == split]
        out = np.empty((sum(len(results[k]) for k in keys), len(names)), fset.dtype)
        row = 0
        for k in keys:  # one copy at a time, each chunk released once copied
            part = results.pop(k)
            out[row:row + len(part)] = part
            row += len(part)
        return out

    table = FeatureTable(stacked("train"), np.asarray(dataset.train_labels, dtype=np.int64),
                         stacked("test"), np.asarray(dataset.test_labels, dtype=np.int64),
                         names, tuple(dataset.class_names), meta, state,
                         dataset.image_names("train"), dataset.image_names("test"),
                         stacked("test_mirror") if "test_mirror" in splits else None)
    if output is not None:
        save_features(output, table, overwrite=overwrite)
        remove_work_dir(partial)
    return table


def resumable_dir(partial: Path, meta: dict, chunk_size: int, fitted: dict) -> Path:
    """``partial``, kept when an interrupted run of this very extraction left it, else made anew.

    Its ``spec.json`` says what the extraction was (the table's meta, the chunk size, a state
    given to apply); one left by another extraction, or damaged, is not ours to resume and is
    removed, but only when recognisably featmlp's (:func:`featmlp._outputs.remove_work_dir`):
    anything else there is refused.
    """
    spec = {**meta, "chunk_size": chunk_size, "given_state": state_to_arrays(fitted)[0] if fitted else None}
    check_work_dir(partial)
    if partial.is_dir() and _read_spec(partial / _SPEC_FILE) != spec:
        remove_work_dir(partial)
    partial.mkdir(parents=True, exist_ok=True)
    with atomic_write(partial / _SPEC_FILE, "w") as f:
        json.dump(spec, f)
    return partial


def _read_spec(spec_file: Path):
    try:
        return json.loads(spec_file.read_text())
    except (OSError, ValueError):
        return None


def _saved_chunk(chunk_file: Path, shape: tuple[int, int], dtype) -> np.ndarray | None:
    """A finished chunk of an interrupted run, or None when it is missing or damaged (redone then)."""
    if not chunk_file.is_file():
        return None
    try:
        X = np.load(chunk_file, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # truncated, not .npy, an object array ...
        return None
    if not isinstance(X, np.ndarray) or X.shape != shape or X.dtype != np.dtype(dtype):
        return None
    return X




def fitted_state(fset, train_images, options, fitted, partial, progress) -> dict:
    """The fitted state: given, saved in ``partial/fitted.npz`` by an interrupted run of this
    extraction, or fitted now on ``train_images`` (and saved there when ``partial`` is a directory)."""
    if not fset.needs_fit or set(fset.needs_fit) <= set(fitted):
        return fitted
    state_file = partial / FITTED_FILE if partial is not None else None
    if state_file is not None and state_file.is_file():
        try:
            return read_fitted(state_file)[1]
        except DataError:
            pass  # damaged: fit again
    state = fit_features(fset, train_images, options, state=fitted, progress=progress)
    if state_file is not None:
        write_fitted(state_file, state)
    return state


def work_dir(output: Path) -> Path:
    """Where a sharded table is built before it is renamed in: ``.NAME.partial`` beside it."""
    output = Path(os.path.abspath(output))
    return sibling(output, "partial")


def extract_shard(root: str, split: str, index: int, images, labels, files, features: str,
                  state: dict, n_features: int, parallel: bool = False) -> dict:
    """Extract and write one shard; its record. The task every executor runs.

    ``images`` is what the dataset holds for the chunk: an ``ImageArray`` (decoded here, by
    this process) or an ndarray. When the shard is already finished and intact (a rerun, or
    a retry after a worker died after writing it) nothing is computed again. ``parallel``:
    the multi-threaded kernels (one process extracting alone), else the serial ones (the
    processes are the parallelism).
    """
    root = Path(root)
    done = finished_shard(root, split, index, n_features)
    if done is not None:
        return done
    X = extract_features(np.asarray(images), features, state=state, parallel=parallel)
    return write_shard(root, split, index, X, labels, files)


def extract_to_shards(dataset, features: str = "lecture", output: str | os.PathLike = "features.features", *,
                      options: dict | None = None, fitted: dict | None = None, chunk_size: int | None = None,
                      workers: int = 1, cluster=None, progress=None, overwrite: bool = False) -> FeatureTable:
    """Extract a feature set from a dataset into a sharded feature table (a directory).

    Parameters
    ----------
    dataset : featmlp.data.Dataset
        Train and test images with labels (image folders and archives stay on disk or in
        object storage until their chunk is extracted).
    features : str
        A feature set (``featmlp.FEATURE_SETS``), or several joined by ``+``.
    output : path
        The directory to write (``feats.features/``): absent or empty, or (``overwrite``) a
        sharded table featmlp wrote, replaced only when the new one is complete. Anything
        else there (a folder of images, a run directory, a file) is refused.
    options, fitted : dict, optional
        Settings of a fitted set (``{"k": 4000}``), or a state to apply instead of fitting.
    chunk_size : int, optional
        Images per shard; default :func:`default_chunk_size`.
    workers : int
        Local processes; 1 extracts in this process.
    cluster : str or distributed.Client, optional
        A Dask cluster: ``"local:N"`` (a LocalCluster of N worker processes on 127.0.0.1),
        a scheduler address ``"tcp://HOST:8786"``, or a connected ``Client``. Every worker
        must reach the source and ``output`` under the same names (a shared file system or
        object storage). Needs ``pip install featmlp[dask]``.
    progress : callable, optional
        ``progress("extract", images_done, total)`` as shards finish.
    overwrite : bool
        Replace an existing sharded table at ``output`` (``--force``).

    Returns
    -------
    FeatureTable
        The table, opened from ``output`` (its features are
        :class:`~featmlp.tables.sharded.ShardedArray` columns).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from featmlp.data import load_dataset
    >>> ds = load_dataset("sample")
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "sample.features"
    >>> t = extract_to_shards(ds, "lecture", out, chunk_size=2000)  # doctest: +SKIP
    >>> t.X_train.shape, t.X_train.n_shards  # doctest: +SKIP
    ((5000, 9), 3)
    """
    fset, options, fitted, chunk_size = check_extraction(dataset, features, options, fitted, chunk_size, workers,
                                                         local=cluster is None)
    output = Path(output)
    check_output(output, "table", force=overwrite, option="output")
    with extraction_lock(output):
        check_output(output, "table", force=overwrite, option="output")  # as it is now that it is ours
        return _extract(dataset, fset, output, options, fitted, chunk_size, workers, cluster, progress)


def _extract(dataset, fset, output, options, fitted, chunk_size, workers, cluster, progress):
    meta = extraction_meta(dataset, fset, options)
    if dataset.skipped:
        meta["skipped"] = [list(s) for s in dataset.skipped]
    work = resumable_dir(work_dir(output), meta, chunk_size, fitted)

    state = fitted_state(fset, dataset.train_images, options, fitted, work, progress)
    meta.update(weights_provenance(state))
    height, width = dataset.train_images.shape[1:3]
    names = feature_names(fset, image_shape=(height, width), state=state)
    # A generator: each chunk's names and locations are gathered when its task is submitted, so
    # what the tasks carry is bounded by those in flight, not by the dataset.
    tasks = _tasks(dataset, chunk_size)
    total = len(dataset.train_labels) + len(dataset.test_labels)
    records = {"train": {}, "test": {}}
    done = 0

    def finished(record):
        nonlocal done
        # What the manifest needs of a shard, not its list of files (~80 bytes an image)
        records[record["split"]][record["index"]] = {
            **{k: record[k] for k in ("split", "index", "rows", "sha256")}, "nonfinite": record.get("nonfinite", []),
            "labels": np.asarray(record["labels"], np.int64), "files": record["files"][:1] + record["files"][-1:]}
        done += record["rows"]
        if progress is not None:
            progress("extract", done, total)

    if progress is not None:
        progress("extract", 0, total)
    args = (str(work), fset.name, state, len(names))
    if cluster is not None:
        # closed at once on an interrupt here too: the cluster's workers stop now, not at exit
        with contextlib.closing(run_on_cluster(cluster, extract_shard, tasks, *args)) as ended:
            for record in ended:
                finished(record)
    elif workers > 1 and total > chunk_size:  # more than one chunk
        in_processes(extract_shard, ((None, (args[0], *task, *args[1:])) for task in tasks), workers,
                     lambda _, record: finished(record))
    else:
        for task in tasks:
            finished(extract_shard(args[0], *task, *args[1:], parallel=True))

    ordered = {split: [by_index[i] for i in sorted(by_index)] for split, by_index in records.items()}
    # a fitted state is in the work directory already when fitted_state fitted it (saved there for a
    # resumed run); one given (--fitted-from) is written now, so that the table holds the file it names
    if state and not (work / FITTED_FILE).is_file():
        write_fitted(work / FITTED_FILE, state)
    write_manifest(work, ordered, names, dataset.class_names, meta, bool(state))
    (work / _SPEC_FILE).unlink()
    replace_dir(work, output)
    return load_features(output)


def _tasks(dataset, chunk_size):
    """``(split, index, images, labels, files)`` for every chunk, in order."""
    for split in ("train", "test"):
        images = getattr(dataset, f"{split}_images")
        labels = np.asarray(getattr(dataset, f"{split}_labels"))
        for index, start in enumerate(range(0, len(labels), chunk_size)):
            stop = min(start + chunk_size, len(labels))
            if isinstance(images, ImageArray):  # image files: the chunk travels as names and locations
                chunk = images.take(np.arange(start, stop)).portable()
                files = list(chunk.names)
            else:  # pixels in memory (CIFAR-10 batches: the names their batches give)
                names = dataset.image_names(split)
                chunk, files = images[start:stop], list(names[start:stop]) if names is not None else []
            yield split, index, chunk, labels[start:stop].tolist(), files


def in_processes(fn, jobs, workers: int, done) -> None:
    """``done(tag, fn(*args))`` for every ``(tag, args)`` of ``jobs``, in ``workers`` processes, in order.

    At most ``workers + 1`` jobs are submitted and not yet collected, so what they carry (a
    decoded chunk) stays bounded. spawn, not fork: a process forked from one that ran numba's
    GNU OpenMP threads is killed by numba; a spawned worker imports only featmlp's extraction
    path (no torch: the CLI loads its commands lazily), about 0.4 s.
    """
    # Workers stop with this process (Ctrl-C, SIGTERM, even SIGKILL) and never print their own traceback.
    with stopping(spawn_pool(workers)) as pool:
        pending = collections.deque()
        for tag, args in jobs:
            pending.append((tag, pool.submit(fn, *args)))
            if len(pending) > workers:
                tag, fut = pending.popleft()
                done(tag, fut.result())
        while pending:
            tag, fut = pending.popleft()
            done(tag, fut.result())
