"""Options and helpers shared by the featmlp commands."""

from __future__ import annotations

import warnings

import click

from .._text import cli_spelling, printable
from ..errors import ConfigError
from ..features import DEFAULT_FEATURES, FEATURE_SETS, feature_options, get_feature_set
from .options import DescribedDefault



def _parse_size(ctx, param, value):
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        if w < 1 or h < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT with positive integers, e.g. 32x32") from None
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..data.load import check_resize

    try:  # the pixel limit of one image, and the memory one image of that size takes
        check_resize((w, h))
    except ConfigError as e:
        raise click.BadParameter(str(e).replace("image_size ", "", 1)) from None
    return (w, h)


_STORAGE_OPTIONS = "featmlp.storage_options"  # key of the parsed --storage-option in click's ctx.meta


def _parse_storage_options(ctx, param, value):
    """--storage-option KEY=VALUE pairs as a dict: values that are JSON (true, 3, {...}) parsed, others text.

    Kept in the context's meta rather than passed as a parameter, so that every command with
    data_options takes it without a parameter of its own: load_source and cli_storage_options() read it.
    """
    import json

    options = {}
    for pair in value:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE, e.g. endpoint_url=http://localhost:9000")
        try:
            options[key.strip()] = json.loads(text)
        except ValueError:
            options[key.strip()] = text
    ctx.meta[_STORAGE_OPTIONS] = options
    return options


def cli_storage_options() -> dict | None:
    """The --storage-option settings of the running command (None when none were given)."""
    ctx = click.get_current_context(silent=True)
    return (ctx.meta.get(_STORAGE_OPTIONS) or None) if ctx is not None else None


def storage_option(f):
    """--storage-option KEY=VALUE: the settings of a URL's filesystem (read by :func:`cli_storage_options`)."""
    return click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
                        callback=_parse_storage_options, expose_value=False,
                        help="A setting of the filesystem of a URL SOURCE (s3://, gs://, ...), repeatable: "
                             "--storage-option endpoint_url=http://localhost:9000 --storage-option anon=true. "
                             "Values that are JSON (true, 5, {...}) are parsed; quote a text that looks like "
                             "one: secret='\"12345\"'. Never written to the run directory.")(f)


def data_options(f):
    """Options every command that reads images shares."""
    f = storage_option(f)
    f = click.option("--image-size", callback=_parse_size, metavar="WxH",
                     cls=DescribedDefault, show_default="the images' size; the most common one where they differ",
                     help="Resize every image to WxH. Where sizes differ, the default resizes each to the most common "
                          "size (on a tie the larger area, then the wider) and one line says how many were; URLs and "
                          "tar shards, whose images are not all read while listing, take the first image's size.")(f)
    # 0 .. 2**32 - 1, as --seed (featmlp.training.config.SEED_MAX, not imported here: extract stays light)
    f = click.option("--split-seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
                     help="Seed of the train/test split of a folder without one.")(f)
    f = click.option("--test-fraction", default=0.2, show_default=True, type=float,
                     help="Share of each class held out for testing when the folder has no train/test split; 1: every "
                          "image is a test image (to score a saved model: featmlp evaluate RUN --data).")(f)
    f = click.option("--skip-bad", "skip_bad", is_flag=True,
                     help="Leave out files that are not readable images (a README.txt in a class folder, a "
                          "truncated JPEG) and list them, instead of stopping; decodes every image once more "
                          "while listing.")(f)
    return f


def _parse_features(ctx, param, value):
    try:
        return get_feature_set(value).name  # canonical: "lecture + hog" -> "lecture+hog"
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None


def _parse_pairs(ctx, param, value):
    for pair in value:
        key, sep, _ = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE, e.g. k=4000")
    return tuple(value)


def fitted_options(f):
    """--feature-option and --fitted-from: settings or an existing state of fitted sets (kmeans)."""
    f = click.option("--fitted-from", "fitted_from", metavar="RUN_OR_FEATURES", type=click.Path(exists=True),
                     help="Apply the fitted state (kmeans dictionary, whitening) of a run directory or a feature "
                          "file instead of fitting it on these training images.")(f)
    f = click.option("--feature-option", "feature_option", multiple=True, metavar="KEY=VALUE",
                     callback=_parse_pairs,
                     help="A setting of a fitted feature set, repeatable: --feature-option k=4000 "
                          "--feature-option pool=4. " + _fitted_settings_help())(f)
    return f


def _fitted_settings_help() -> str:
    # From the registry: the fitted sets' own modules (scikit-learn, numba) are not imported for help.
    return "; ".join(f"{name}: " + ", ".join(f"{k} (default {v})" for k, v in feature_options(name).items())
                     for name, fset in FEATURE_SETS.items() if fset.fitted is not None) + "."


def resolve_fitted(features: str, feature_option, fitted_from):
    """(options, fitted state) for extract_dataset, checked against the feature set."""
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..features import parse_feature_options

    try:
        options = parse_feature_options(features, list(feature_option))
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="'--feature-option'") from None
    fitted = None
    if fitted_from:
        # start-up: loaded when the command runs, not by `featmlp --help`
        from ..runs.bundle import load_fitted

        fitted_set, fitted = load_fitted(fitted_from)
        missing = [p for p in get_feature_set(features).needs_fit if p not in fitted]
        if missing:
            raise ConfigError(f"{fitted_from} holds a fitted state for {', '.join(fitted)} "
                              f"(features {fitted_set}), not for {', '.join(missing)}: use --features {fitted_set}")
    return options, fitted


def extraction_options(f):
    """--workers and --chunk-size: how ``extract`` and ``run`` extract features (one text for both)."""
    f = click.option("--chunk-size", default=None, type=click.IntRange(1),
                     cls=DescribedDefault,
                     show_default="5000, or fewer so that a chunk's pixels and the feature set's working memory fit "
                                  "in 256 MB (about 1000 of 256x256 for lecture, one 20-megapixel photo)",
                     help="Images per chunk (per shard of a sharded table): bounds memory; finished chunks "
                          "survive an interruption.")(f)
    f = click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
                     help="Processes to extract with (1 = this process, using all its threads).")(f)
    return f


def features_option(f):
    help_text = ("Feature set, or several joined by '+' (their columns side by side, in that order, "
                 "e.g. lecture+hog+color). " + "; ".join(f"{k}: {v.description}" for k, v in FEATURE_SETS.items()))
    return click.option("--features", "features", default=DEFAULT_FEATURES, show_default=True,
                        metavar="NAME[+NAME...]", callback=_parse_features, help=help_text)(f)


SOURCE_HELP = """SOURCE is one of: nothing or 'sample' (the CIFAR-10 sample bundled with featmlp),
'cifar10' (downloads the official archive once into the cache), a cifar-10-python.tar.gz
archive or cifar-10-batches-py folder, or an image folder ROOT/<class>/* or
ROOT/train/<class>/* + ROOT/test/<class>/*, as a folder or a .zip/.tar/.tar.gz archive,
a folder of .tar shards (members <key>.<class>.<ext>), or an fsspec URL to any of those
(s3://bucket/prefix/, gs://...; settings by --storage-option KEY=VALUE)."""


def load_source(source, test_fraction, seed, image_size, progress, *, skip_bad=False, storage_options=None,
                mixed_size=None):
    """load_dataset for a command: its warnings (a missing CIFAR-10 batch) as one line each on stderr.

    ``storage_options`` default: the command's --storage-option settings.
    """
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..data import load_dataset

    if storage_options is None:
        storage_options = cli_storage_options()
    with warnings.catch_warnings(record=True) as caught:
        # What the data sources warn of; not, say, a ResourceWarning the garbage collector
        # happens to emit meanwhile for a file of some earlier code.
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", UserWarning)
        ds = load_dataset(source, test_fraction=test_fraction, seed=seed, image_size=image_size,
                          progress=progress, skip_bad=skip_bad, storage_options=storage_options,
                          mixed_size=mixed_size)
    for w in caught:
        click.echo(f"warning: {printable(cli_spelling(w.message))}", err=True)
    return ds


def report_skipped(dataset, shown: int = 3) -> None:
    """One line on stderr naming the files ``--skip-bad`` left out (the first few, and how many)."""
    skipped = getattr(dataset, "skipped", ())
    if not skipped:
        return
    n = len(skipped)
    listed = ", ".join(f"{printable(name)} ({printable(reason)})" for name, reason in skipped[:shown])
    more = f", and {n - shown} more" if n > shown else ""
    click.echo(f"skipped {n} unreadable file{'s' if n > 1 else ''}: {listed}{more}", err=True)


def default_out(kind: str) -> str:
    """Where a command writes when not told: ``runs/<kind>-<time>`` (never the working directory itself)."""
    import time
    from pathlib import Path

    return str(Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")


def plot_file(out, plot, kind: str, name: str, *, force: bool = False, sources=()):
    """The file a plotting command draws into: ``--plot FILE`` as given, else ``name`` in ``--out``
    (default ``runs/<kind>-<time>``), so that a plot never lands silently in the working directory.

    An existing file there is replaced only with ``force`` and only when it is a plot featmlp
    drew (:func:`featmlp._outputs.check_output`); the folder ``--out`` itself is only added to.
    """
    from pathlib import Path

    # start-up: loaded when the command runs, not by `featmlp --help`
    from .._outputs import check_output

    if out is not None and plot is not None:
        raise click.UsageError("give --out (a folder for the plot) or --plot (its file), not both")
    path = Path(plot) if plot is not None else Path(out or default_out(kind)) / name
    check_output(path, "plot", force=force, sources=sources, option="--plot" if plot is not None else "--out")
    return path


def force_option(what: str):
    """``--force``: replace an existing output of the command's own kind (featmlp's only)."""
    return click.option("--force", is_flag=True,
                        help=f"Replace an existing {what} that featmlp wrote. Anything else there is refused, "
                             f"even with --force.")
