"""The ``featmlp`` command: a thin layer over the Python API.

Every choice list and its help text comes from a registry (feature sets,
optimisers, presets ...), so adding an entry there adds it here. Errors a user
can act on (:class:`featmlp.errors.FeatmlpError`) print one line and exit 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import FeatmlpError
from .features import DEFAULT_FEATURES, FEATURE_SETS
from .progress import TqdmProgress


def _parse_size(ctx, param, value):
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        if w < 1 or h < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT with positive integers, e.g. 32x32") from None
    return (w, h)


def data_options(f):
    """Options every command that reads images shares."""
    f = click.option("--image-size", callback=_parse_size, metavar="WxH",
                     help="Resize every image to WxH (needed when a folder mixes sizes).")(f)
    f = click.option("--seed", default=0, show_default=True, type=int,
                     help="Seed of the train/test split of a folder without one.")(f)
    f = click.option("--test-fraction", default=0.2, show_default=True, type=float,
                     help="Share of each class held out for testing when the folder has no train/test split.")(f)
    return f


def features_option(f):
    help_text = "Feature set: " + "; ".join(f"{k}: {v.description}" for k, v in FEATURE_SETS.items())
    return click.option("--features", "features", default=DEFAULT_FEATURES, show_default=True,
                        type=click.Choice(sorted(FEATURE_SETS)), help=help_text)(f)


SOURCE_HELP = """SOURCE is one of: nothing or 'sample' (the CIFAR-10 sample bundled with featmlp),
'cifar10' (downloads the official archive once into the cache), a cifar-10-python.tar.gz
archive or cifar-10-batches-py folder, or an image folder ROOT/<class>/* or
ROOT/train/<class>/* + ROOT/test/<class>/*, as a folder or a .zip/.tar/.tar.gz archive."""


def _load(source, test_fraction, seed, image_size, progress):
    from .data import load_dataset

    return load_dataset(source, test_fraction=test_fraction, seed=seed, image_size=image_size,
                        progress=progress)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="featmlp")
def cli():
    """Classify images with multilayer perceptrons trained on extracted image features."""


@cli.command(epilog=SOURCE_HELP)
@click.argument("source", required=False)
@features_option
@click.option("-o", "--output", default="features.npz", show_default=True, type=click.Path(dir_okay=False),
              help="Feature file to write (.npz: X_train, y_train, X_test, y_test, feature_names, class_names).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Processes to extract with (1 = this process, using all its threads).")
@click.option("--chunk-size", default=5000, show_default=True, type=click.IntRange(1),
              help="Images per chunk: bounds memory; finished chunks survive an interruption.")
@data_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def extract(source, features, output, workers, chunk_size, test_fraction, seed, image_size, quiet):
    """Extract a feature set from SOURCE's images into a feature file.

    An interrupted extraction resumes from its finished chunks when run again.
    """
    from .store import extract_dataset

    progress = TqdmProgress(unit="img", disable=quiet or None)
    t0 = time.perf_counter()
    ds = _load(source, test_fraction, seed, image_size, progress)
    t1 = time.perf_counter()
    table = extract_dataset(ds, features, output, chunk_size=chunk_size, workers=workers, progress=progress)
    t2 = time.perf_counter()
    progress.close()
    n_train, n_test = len(table.X_train), len(table.X_test)
    click.echo(f"wrote {output}: {n_train} train + {n_test} test images x {len(table.feature_names)} "
               f"{features} features, {len(table.class_names)} classes "
               f"(load {t1 - t0:.1f} s, extract {t2 - t1:.1f} s = {(n_train + n_test) / max(t2 - t1, 1e-9):.0f} img/s)")


def main(argv=None) -> None:
    """Entry point: run the CLI, turning user errors into one line and an exit code."""
    try:
        rv = cli.main(args=argv, prog_name="featmlp", standalone_mode=False)
    except FeatmlpError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted: nothing half-written was kept; run the same command again to resume",
                   err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
