"""Extraction into a sharded feature table: one task per chunk, here, in processes or on Dask.

:func:`extract_to_shards` plans the chunks of a dataset (a chunk is ``chunk_size``
consecutive images of one split), fits a fitted feature set (kmeans) once on the training
images, and runs :func:`extract_shard` for every chunk: in this process, in ``workers``
local processes, or on a Dask cluster (:mod:`featmlp.cluster`). Each task reads its own
images from the source (a chunk of image files travels as names and byte locations, never as
pixels), computes the features with the serial kernels, and writes its shard atomically
(:func:`featmlp.shards.write_shard`). A task whose shard is already finished and intact
returns its record at once, so a rerun after an interruption, and a retry after a worker
died, redo only what is missing. The table is built beside its place (``.NAME.partial/``)
and renamed in once its manifest is written.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from ._io import atomic_write, replace_dir
from .data import ImageArray
from .errors import DataError
from .features import extract_features, feature_names, state_to_arrays
from .shards import FITTED_FILE, finished_shard, write_manifest, write_shard
from .store import (FeatureTable, check_extraction, extraction_lock, extraction_meta, fitted_state,
                    load_features)

_SPEC_FILE = "spec.json"


def work_dir(output: Path) -> Path:
    """Where a sharded table is built before it is renamed in: ``.NAME.partial`` beside it."""
    return output.with_name(f".{output.name}.partial")


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
                      workers: int = 1, cluster=None, progress=None) -> FeatureTable:
    """Extract a feature set from a dataset into a sharded feature table (a directory).

    Parameters
    ----------
    dataset : featmlp.data.Dataset
        Train and test images with labels (image folders and archives stay on disk or in
        object storage until their chunk is extracted).
    features : str
        A feature set (``featmlp.FEATURE_SETS``), or several joined by ``+``.
    output : path
        The directory to write (``feats.features/``). An existing table there is replaced
        only when the new one is complete.
    options, fitted : dict, optional
        Settings of a fitted set (``{"k": 4000}``), or a state to apply instead of fitting.
    chunk_size : int, optional
        Images per shard; default :func:`featmlp.store.default_chunk_size`.
    workers : int
        Local processes; 1 extracts in this process.
    cluster : str or distributed.Client, optional
        A Dask cluster: ``"local:N"`` (a LocalCluster of N worker processes on 127.0.0.1),
        a scheduler address ``"tcp://HOST:8786"``, or a connected ``Client``. Every worker
        must reach the source and ``output`` under the same names (a shared file system or
        object storage). Needs ``pip install featmlp[dask]``.
    progress : callable, optional
        ``progress("extract", images_done, total)`` as shards finish.

    Returns
    -------
    FeatureTable
        The table, opened from ``output`` (its features are
        :class:`~featmlp.shards.ShardedArray` columns).

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
    fset, options, fitted, chunk_size = check_extraction(dataset, features, options, fitted, chunk_size, workers)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise DataError(f"{output} is a file; a sharded table is a directory: choose another name "
                        f"(such as {output.with_suffix('.features')})")
    with extraction_lock(output):
        return _extract(dataset, fset, output, options, fitted, chunk_size, workers, cluster, progress)


def _extract(dataset, fset, output, options, fitted, chunk_size, workers, cluster, progress):
    meta = extraction_meta(dataset, fset, options)
    if dataset.skipped:
        meta["skipped"] = [list(s) for s in dataset.skipped]
    work = work_dir(output)
    spec = {**meta, "chunk_size": chunk_size,
            "given_state": state_to_arrays(fitted)[0] if fitted else None}
    spec.pop("featmlp_version")
    if work.is_dir() and _read_json(work / _SPEC_FILE) != spec:
        shutil.rmtree(work)  # left by another extraction (or damaged): not ours to resume
    work.mkdir(parents=True, exist_ok=True)
    with atomic_write(work / _SPEC_FILE, "w") as f:
        json.dump(spec, f)

    state = fitted_state(fset, dataset.train_images, options, fitted, work, progress)
    height, width = dataset.train_images.shape[1:3]
    names = feature_names(fset, image_shape=(height, width), state=state)
    tasks = list(_tasks(dataset, chunk_size))
    total = sum(len(t[3]) for t in tasks)
    records = {"train": {}, "test": {}}
    done = 0

    def finished(record):
        nonlocal done
        records[record["split"]][record["index"]] = record
        done += record["rows"]
        if progress is not None:
            progress("extract", done, total)

    if progress is not None:
        progress("extract", 0, total)
    args = (str(work), fset.name, state, len(names))
    if cluster is not None:
        from .cluster import run_on_cluster

        for record in run_on_cluster(cluster, extract_shard, tasks, *args):
            finished(record)
    elif workers > 1 and len(tasks) > 1:
        _run_in_processes(tasks, args, workers, finished)
    else:
        for task in tasks:
            finished(extract_shard(args[0], *task, *args[1:], parallel=True))

    ordered = {split: [by_index[i] for i in sorted(by_index)] for split, by_index in records.items()}
    if state:
        # fitted_state saved it in the work directory already (for a resumed run)
        if not (work / FITTED_FILE).is_file():
            raise DataError(f"{work / FITTED_FILE} disappeared during the extraction; run it again")
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
            else:  # pixels in memory (CIFAR-10 batches)
                chunk, files = images[start:stop], []
            yield split, index, chunk, labels[start:stop].tolist(), files


def _run_in_processes(tasks, args, workers, finished):
    # spawn, not fork: a process forked from one that ran numba's GNU OpenMP threads is killed
    # by numba. Chunks are submitted a few ahead of the workers, so memory stays bounded.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending = set()
        for task in tasks:
            pending.add(pool.submit(extract_shard, args[0], *task, *args[1:]))
            if len(pending) > 2 * workers:
                first = next(as_completed(pending))
                pending.remove(first)
                finished(first.result())
        for fut in as_completed(pending):
            finished(fut.result())


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
