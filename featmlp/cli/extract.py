"""``featmlp extract``: images to a feature file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from .._text import printable
from ..features import input_size
from ..progress import TqdmProgress
from ..runs.layout import FEATURES_FILE
from ._common import (SOURCE_HELP, data_options, extraction_options, features_option, fitted_options, load_source,
                      report_skipped, resolve_fitted)


@click.command(epilog=SOURCE_HELP)
@click.argument("source", required=False)
@features_option
@click.option("-o", "--output", default=FEATURES_FILE, show_default=True, type=click.Path(),
              help="Where to write: a .npz feature file (X_train, y_train, X_test, y_test, feature_names, "
                   "class_names; for tables that fit in memory), or a directory (a name ending in / or "
                   ".features) for a sharded table: float32 .npy shards, one per chunk, and a manifest.json; "
                   "train, sweep, evaluate and lr-find read either. Never inside SOURCE; an existing one "
                   "is replaced only with --force.")
@click.option("--force", is_flag=True,
              help="Replace an existing feature file or sharded table that featmlp wrote (once the new one is "
                   "complete). Anything else at -o (a folder of images, a run directory, other files) is "
                   "refused, even with --force.")
@click.option("--cluster", default=None, metavar="local:N|tcp://HOST:PORT",
              help="Extract on a Dask cluster into a sharded table (needs pip install 'featmlp[dask]'): "
                   "'local:N' starts N worker processes on this machine, an address joins a running "
                   "scheduler whose workers reach SOURCE and the output under the same paths. One task per "
                   "chunk, each writing its shard; the tasks of a worker that dies are retried.")
@extraction_options
@fitted_options
@data_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def extract(source, features, output, force, workers, cluster, chunk_size, feature_option, fitted_from,
            test_fraction, split_seed, image_size, skip_bad, quiet, **data):
    """Extract a feature set from SOURCE's images into a feature file or a sharded table.

    Fitted sets (kmeans) are fitted on the training images only, and their state is kept in
    the file. An interrupted extraction resumes from its finished chunks when run again.
    """
    # start-up: loaded when the command runs, not by `featmlp --help`
    from .._outputs import check_output
    from ..tables.cluster import check_cluster
    from ..tables.extract import extract_dataset

    sharded = is_table_dir(output)
    if cluster is not None and not sharded:
        raise click.BadParameter(f"--cluster writes a sharded table: give a directory, such as "
                                 f"-o {Path(output).stem}.features/", param_hint="'--output'")
    if sharded:
        output = output.rstrip("/" + os.sep) or output
    # Before anything is read: what -o names may be written (featmlp._outputs, the rule of every command).
    check_output(output, "table" if sharded else "features", force=force, sources=[source], option="-o")
    check_cluster(cluster)
    options, fitted = resolve_fitted(features, feature_option, fitted_from)
    progress = TqdmProgress(unit="img", disable=quiet or None)
    t0 = time.perf_counter()
    # images of mixed sizes go straight to the size a pretrained set resizes them to itself
    ds = load_source(source, test_fraction, split_seed, image_size, progress, skip_bad=skip_bad,
                     mixed_size=input_size(features, options), **data)
    report_skipped(ds)
    t1 = time.perf_counter()
    if sharded:
        # start-up: loaded when the command runs, not by `featmlp --help`
        from ..tables.extract import extract_to_shards

        table = extract_to_shards(ds, features, output, options=options, fitted=fitted, chunk_size=chunk_size,
                                  workers=workers, cluster=cluster, progress=progress, overwrite=force)
    else:
        table = extract_dataset(ds, features, output, options=options, fitted=fitted, chunk_size=chunk_size,
                                workers=workers, progress=progress, overwrite=force)
    t2 = time.perf_counter()
    progress.close()
    n_train, n_test = len(table.X_train), len(table.X_test)
    shards = f" in {table.X_train.n_shards} + {table.X_test.n_shards} shards" if sharded else ""
    click.echo(f"wrote {printable(output)}{shards}: {n_train} train + {n_test} test images x "
               f"{len(table.feature_names)} {features} features, {len(table.class_names)} classes "
               f"(load {t1 - t0:.1f} s, extract {t2 - t1:.1f} s = {(n_train + n_test) / max(t2 - t1, 1e-9):.0f} img/s)")


def is_table_dir(output: str) -> bool:
    """Whether ``-o`` names a sharded table (a directory) rather than an ``.npz`` file: a name ending
    in ``/`` or ``.features``, or an existing directory (which must then be empty or a table: see
    :func:`featmlp._outputs.check_output`)."""
    p = Path(output)
    return output.endswith(("/", os.sep)) or p.suffix == ".features" or p.is_dir()
