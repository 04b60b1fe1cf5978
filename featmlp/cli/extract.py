"""``featmlp extract``: images to a feature file."""

from __future__ import annotations

import time

import click

from ..runs.layout import FEATURES_FILE
from ..progress import TqdmProgress
from ._common import (SOURCE_HELP, data_options, features_option, fitted_options, load_source,
                      report_skipped, resolve_fitted)


@click.command(epilog=SOURCE_HELP)
@click.argument("source", required=False)
@features_option
@click.option("-o", "--output", default=FEATURES_FILE, show_default=True, type=click.Path(dir_okay=False),
              help="Feature file to write (.npz: X_train, y_train, X_test, y_test, feature_names, class_names).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Processes to extract with (1 = this process, using all its threads).")
@click.option("--chunk-size", default=None, type=click.IntRange(1),
              help="Images per chunk: bounds memory; finished chunks survive an interruption. "
                   "Default: 5000, or fewer so that a chunk holds at most 256 MB of pixels (1365 of 256x256).")
@fitted_options
@data_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def extract(source, features, output, workers, chunk_size, feature_option, fitted_from, test_fraction,
            split_seed, image_size, skip_bad, quiet):
    """Extract a feature set from SOURCE's images into a feature file.

    Fitted sets (kmeans) are fitted on the training images only, and their state is kept in
    the file. An interrupted extraction resumes from its finished chunks when run again.
    """
    from ..store import extract_dataset

    options, fitted = resolve_fitted(features, feature_option, fitted_from)
    progress = TqdmProgress(unit="img", disable=quiet or None)
    t0 = time.perf_counter()
    ds = load_source(source, test_fraction, split_seed, image_size, progress, skip_bad=skip_bad)
    report_skipped(ds)
    t1 = time.perf_counter()
    table = extract_dataset(ds, features, output, options=options, fitted=fitted, chunk_size=chunk_size,
                            workers=workers, progress=progress)
    t2 = time.perf_counter()
    progress.close()
    n_train, n_test = len(table.X_train), len(table.X_test)
    click.echo(f"wrote {output}: {n_train} train + {n_test} test images x {len(table.feature_names)} "
               f"{features} features, {len(table.class_names)} classes "
               f"(load {t1 - t0:.1f} s, extract {t2 - t1:.1f} s = {(n_train + n_test) / max(t2 - t1, 1e-9):.0f} img/s)")
