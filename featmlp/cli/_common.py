"""Options and helpers shared by the featmlp commands."""

from __future__ import annotations

import click

from ..errors import ConfigError
from ..features import DEFAULT_FEATURES, FEATURE_SETS, get_feature_set


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
    f = click.option("--split-seed", default=0, show_default=True, type=int,
                     help="Seed of the train/test split of a folder without one.")(f)
    f = click.option("--test-fraction", default=0.2, show_default=True, type=float,
                     help="Share of each class held out for testing when the folder has no train/test split.")(f)
    return f


def _parse_features(ctx, param, value):
    try:
        return get_feature_set(value).name  # canonical: "lecture + hog" -> "lecture+hog"
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None


def features_option(f):
    help_text = ("Feature set, or several joined by '+' (their columns side by side, in that order, "
                 "e.g. lecture+hog+color). " + "; ".join(f"{k}: {v.description}" for k, v in FEATURE_SETS.items()))
    return click.option("--features", "features", default=DEFAULT_FEATURES, show_default=True,
                        metavar="NAME[+NAME...]", callback=_parse_features, help=help_text)(f)


SOURCE_HELP = """SOURCE is one of: nothing or 'sample' (the CIFAR-10 sample bundled with featmlp),
'cifar10' (downloads the official archive once into the cache), a cifar-10-python.tar.gz
archive or cifar-10-batches-py folder, or an image folder ROOT/<class>/* or
ROOT/train/<class>/* + ROOT/test/<class>/*, as a folder or a .zip/.tar/.tar.gz archive."""


def _load(source, test_fraction, seed, image_size, progress):
    from ..data import load_dataset

    return load_dataset(source, test_fraction=test_fraction, seed=seed, image_size=image_size,
                        progress=progress)
