"""The training settings as command-line options, and the configurations they give.

Shared by ``train``, ``run``, ``lecture`` (:mod:`featmlp.cli.training`) and ``lr-find``,
``sweep`` (:mod:`featmlp.cli.experiments`). Every option, its help and its default come from
:data:`featmlp.training.config.PRESETS` and its constraint table ``FIELDS`` (types, ranges,
choices), which import no torch: ``featmlp train --help`` starts without it.
"""

from __future__ import annotations

import click


class DescribedDefault(click.Option):
    """click's Option, showing a described default (``show_default="runs/run-<time>"``) as
    ``[default: runs/run-<time>]``: the one style of every featmlp option's default (click would
    write ``[default: (runs/run-<time>)]``)."""

    def get_help_extra(self, ctx):
        extra = super().get_help_extra(ctx)
        if isinstance(self.show_default, str):
            extra["default"] = self.show_default
        return extra


def _parse_hidden(ctx, param, value):
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.replace(" ", "").split(",") if v != "")
        if any(v < 1 for v in sizes):
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{value!r} is not comma-separated positive layer sizes, e.g. 6 or 6,6 or 512,256") from None
    return sizes


def _list_of(type_):
    """Callback parsing 'a,b,c' into a list of ``type_`` values (the sweep's options)."""
    def parse(ctx, param, value):
        if value is None:
            return None
        return [type_.convert(v.strip(), param, ctx) for v in value.split(",") if v.strip()]
    return parse


# The options of the training settings some commands do not use, so do not offer.
LR_FIND_UNUSED = ("lr", "epochs", "max_steps", "schedule", "patience", "flip", "test_flip", "log_scale", "tensorboard")
SWEEP_UNUSED = ("tensorboard",)  # TensorBoard logs one run; a sweep's runs share results.csv and loss.png
# lr-find trains no run: its held-out rows are those a run with the same settings trains without.
LR_FIND_HELP = {"val_fraction": "Share of train held out (stratified, seeded) as a run with this value holds it "
                                "out, so that the test steps on the rows such a run trains on; they are not "
                                "scored."}
# lecture's features (the 9 texture features) have no mirror images: presets with flips cannot run there.
LECTURE_UNUSED = ("flip", "test_flip")


def lecture_presets() -> tuple[str, ...]:
    """The presets ``featmlp lecture`` offers: those without flips (the lecture features have no mirror images)."""
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..training.config import PRESETS

    return tuple(name for name, c in PRESETS.items() if not (c.flip or c.test_flip))


def train_options(f=None, *, sweep: bool = False, preset: str = "default", omit: tuple[str, ...] = (),
                  held_out: bool = True, presets: tuple[str, ...] | None = None, help_for: dict | None = None):
    """Every TrainConfig field as an option; unset options keep the preset's value.

    Each option's help ends with its value in ``preset`` (the one the command starts from) and in
    the other presets where it differs, read from :func:`featmlp.training.config.command_presets`
    (``held_out``: the commands' validation split) or :data:`featmlp.training.PRESETS`, in click's
    ``[default: ...]``. Options named in ``omit`` (settings the command does not use) are left out,
    so passing one is a usage error rather than silently ignored; ``presets`` are the presets
    offered (default all); ``help_for`` replaces an option's help. With ``sweep=True`` each option
    takes a comma-separated list of values to try, and ``--hidden`` may be repeated (one
    architecture each).
    """
    if f is None:
        return lambda g: train_options(g, sweep=sweep, preset=preset, omit=omit, held_out=held_out,
                                       presets=presets, help_for=help_for)
    from ..training.config import PRESETS  # torch-free: building the options imports no torch

    offered = tuple(presets or PRESETS)
    described = {"default": "the best on the 9 lecture features", "lecture": "the notebook's",
                 "wide": "default with dropout 0.3, for wide feature sets such as lecture+hog+color",
                 "kmeans": "256 linear bottleneck -> 2048, dropout 0.5, label smoothing, flips",
                 "pretrained": "1024 hidden, dropout 0.5, label smoothing, for a pretrained network's features"}
    start = ("'lecture'" if preset == "lecture" else "'kmeans' for kmeans features, 'pretrained' for a pretrained "
             "network's, else 'default'")
    # (field, declarations, click settings, what it does); the defaults are added below
    specs = [
        ("preset", ("--preset",), dict(type=click.Choice(sorted(offered)), cls=DescribedDefault, show_default=start),
         "Named configuration to start from: " + "; ".join(f"'{name}' = {described.get(name, name)}"
                                                          for name in offered) +
         ". Any option below overrides its value."),
        ("hidden", ("--hidden",), dict(callback=_parse_hidden, metavar="N[,N...]"),
         "Hidden layer sizes: 6 | 6,6 | 512,256 (empty string: no hidden layer)."),
        ("bottleneck", ("--bottleneck",), dict(type=_click_type("bottleneck")),
         "Width of a linear layer before the hidden layers (0: none): a low-rank first layer for thousands "
         "of features."),
        ("activation", ("--activation",), dict(type=_click_type("activation")),
         "Activation of the hidden layers."),
        ("dropout", ("--dropout",), dict(type=_click_type("dropout")),
         "Dropout after each hidden layer."),
        ("batch_norm", ("--batch-norm/--no-batch-norm",), dict(default=None), "Batch norm after each hidden layer."),
        ("head", ("--head",), dict(type=_click_type("head")),
         "ce: logits + cross-entropy; mse: the lecture's softmax + MSE against one-hot labels."),
        ("optimizer", ("--optimizer",), dict(type=_click_type("optimizer")),
         "gd: the lecture's full-batch gradient descent (one step per epoch); sgd (momentum), adam, adamw."),
        ("lr", ("--lr",), dict(type=FiniteFloatRange(0, min_open=True)), "Learning rate (peak under a schedule)."),
        ("epochs", ("--epochs",), dict(type=_click_type("epochs")), "Epochs (the most, with early stopping)."),
        ("max_steps", ("--max-steps",), dict(type=_click_type("max_steps")),
         "At most this many optimiser steps: the whole epochs that fit, at least one (0: no limit; the "
         "pretrained preset's 1800 shortens only large training sets)."),
        ("batch_size", ("--batch-size",), dict(type=_click_type("batch_size")),
         "Training rows per optimiser step (not used by gd, which steps once per epoch on all of them)."),
        ("momentum", ("--momentum",), dict(type=_click_type("momentum")), "Momentum of sgd."),
        ("weight_decay", ("--weight-decay",), dict(type=_click_type("weight_decay")),
         "L2 penalty on the weights (decoupled from the gradient with adamw)."),
        ("schedule", ("--schedule",), dict(type=_click_type("schedule")),
         "Learning-rate schedule over the run's steps: none | cosine (down to 0) | onecycle (warm-up, then down)."),
        ("scaler", ("--scaler",), dict(type=_click_type("scaler")),
         "Feature scaling fitted on train only: standard | minmax | global (centred, one scale for all "
         "columns) | none."),
        ("val_fraction", ("--val-fraction",), dict(type=_click_type("val_fraction")),
         "Share of train held out (stratified, seeded) for the validation curves, the line that says a run "
         "overfits, a sweep's ranking and early stopping (which alone chooses weights by it); 0: none."),
        ("patience", ("--patience",), dict(type=_click_type("patience")),
         "Early stopping: epochs without a better validation loss (0: off)."),
        ("class_weight", ("--class-weight",), dict(type=click.Choice(["none", "balanced"])),
         "balanced: weigh classes inversely to their frequency (unbalanced folders)."),
        ("seed", ("--seed",), dict(type=_click_type("seed")), "Seed of weights, batch order, validation split."),
        ("flip", ("--flip/--no-flip",), dict(default=None),
         "Also train on the mirror image of every training image (feature sets whose mirrored features are a "
         "column permutation: kmeans, color)."),
        ("label_smoothing", ("--label-smoothing",), dict(type=_click_type("label_smoothing")),
         "Cross-entropy against (1 - e) one-hot + e / classes instead of one-hot labels."),
        ("test_flip", ("--test-flip/--no-test-flip",), dict(default=None),
         "Predict with the mean of each image's and its mirror image's probabilities (where the features "
         "of a mirror image are no column permutation, as for the pretrained sets, `run` extracts the test "
         "images' mirror images too, and `predict` each image's)."),
        ("device", ("--device",), {}, "auto (CUDA when available) | cpu | cuda | cuda:N."),
        ("log_scale", ("--log-scale",), dict(is_flag=True), "Loss plots on a log scale."),
        ("tensorboard", ("--tensorboard",), dict(is_flag=True),
         "Also log every epoch for TensorBoard, in RUN_DIR/tensorboard (needs the tensorboard package)."),
        ("quiet", ("-q", "--quiet"), dict(is_flag=True), "No per-epoch lines or progress bars."),
    ]
    for name, decls, settings, text in reversed(specs):
        if name in omit:
            continue
        text = (help_for or {}).get(name, text)
        if sweep and name == "hidden":
            settings = dict(multiple=True, metavar="N[,N...]",
                            callback=lambda c, p, v: [_parse_hidden(c, p, x) for x in v] or None)
            text = "Hidden layer sizes of one architecture; repeat for several: --hidden 6 --hidden 6,6."
        elif sweep and not settings.get("is_flag") and "/" not in decls[0] and name not in ("preset", "device"):
            settings = _as_list(settings)
            text += " Comma-separated values to try."
        elif sweep and "/" in decls[0]:
            text += " Sets it for every configuration."
        if name in TRAIN_KEYS:
            settings = dict(settings, cls=DescribedDefault, show_default=preset_defaults(name, preset, held_out, offered))
        f = click.option(*decls, name, help=text, **settings)(f)
    return f


def _click_type(field: str):
    """The click type of a TrainConfig field, from its entry in the one constraint table
    (:data:`featmlp.training.config.FIELDS`), so the CLI accepts what ``validate()`` accepts."""
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..training.config import FIELDS

    f = FIELDS[field]
    if f.kind == "choice":
        return click.Choice(sorted(f.choices))
    if f.kind == "int":
        return click.IntRange(int(f.low), None if f.high is None else int(f.high))
    if f.kind == "width0":
        return click.IntRange(0)
    if f.kind == "probability":
        return FiniteFloatRange(0, 1, max_open=True)
    if f.kind == "number":
        return FiniteFloatRange(f.low, f.high, min_open=f.low_open, max_open=f.high_open)
    raise ValueError(f"no click type for {field!r} ({f.kind})")


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing nan (which every comparison lets through) and infinities as
    the usage error they are, before any data is read."""

    def convert(self, value, param, ctx):
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _as_list(settings: dict) -> dict:
    """The settings of an option taking a comma-separated list of values of the same type."""
    type_ = click.types.convert_type(settings.get("type"))
    if isinstance(type_, click.Choice):
        metavar_type = "|".join(type_.choices)
    elif isinstance(type_, (click.IntRange, click.FloatRange)):
        metavar_type = "INT" if isinstance(type_, click.IntRange) else "FLOAT"
    else:
        metavar_type = getattr(type_, "name", "value").upper()
    return dict(default=None, callback=_list_of(type_), metavar=f"{metavar_type}[,...]")


def preset_defaults(field: str, preset: str = "default", held_out: bool = True,
                    offered: tuple[str, ...] | None = None) -> str:
    """``256,256 (preset 'default'); other presets: lecture 6, kmeans 2048``: an option's default, which
    click shows as ``[default: ...]``, the one way every featmlp option shows its default.

    Values are written as they are typed on the command line (``--no-flip``, ``none``, ``6,6``);
    ``held_out``: the presets as the commands that hold out a validation split start from them;
    ``offered``: the presets the command offers (default all).
    """
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..training.config import PRESETS, command_presets

    configs = command_presets() if held_out else PRESETS
    value = getattr(configs[preset], field)
    others = [f"{name} {_as_typed(field, getattr(config, field))}" for name, config in configs.items()
              if name != preset and getattr(config, field) != value and name in (offered or configs)]
    text = f"{_as_typed(field, value)} (preset '{preset}')"
    return text + ("; other presets: " + ", ".join(others) if others else "; the same in every preset")


def _as_typed(field: str, value) -> str:
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{field.replace('_', '-')}"
    if field == "hidden":
        return ",".join(map(str, value)) or "''"
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


TRAIN_KEYS = ("hidden", "activation", "dropout", "batch_norm", "head", "optimizer", "lr", "epochs",
               "batch_size", "momentum", "weight_decay", "schedule", "scaler", "val_fraction", "patience",
               "class_weight", "seed", "device", "bottleneck", "flip", "test_flip", "label_smoothing", "max_steps")


def config_from(opts: dict, preset: str | None = None, held_out: bool = True):
    """The preset, overridden by every option the user gave; ``held_out``: the preset as the commands
    that hold out a validation split by default start from it (:func:`~featmlp.training.config.command_presets`)."""
    import dataclasses

    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..training.config import PRESETS, command_presets, lecture_batch_size_applies

    base = (command_presets() if held_out else PRESETS)[opts.pop("preset", None) or preset or "default"]
    given = {k: opts.pop(k) for k in TRAIN_KEYS if opts.get(k) is not None}
    for k in TRAIN_KEYS:
        opts.pop(k, None)
    if isinstance(given.get("class_weight"), str) and given["class_weight"] == "none":
        given["class_weight"] = None
    if "optimizer" in given and not lecture_batch_size_applies(given["optimizer"]):
        given.setdefault("lecture_batch_size", None)  # the lecture's gradient scale is gd's only
    return dataclasses.replace(base, **given)


def grid_from(opts: dict, preset: str | None = None):
    """The sweep's configurations: the preset, with every listed value tried."""
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..sweep import expand_grid
    from ..training.config import lecture_batch_size_applies

    lists = {k: opts.pop(k) for k in TRAIN_KEYS if opts.get(k) is not None}
    for k in TRAIN_KEYS:
        opts.pop(k, None)
    # A flag (--batch-norm, --no-flip ...) or --device gives one value, not a list: every
    # configuration takes it.
    lists = {k: v if isinstance(v, list) else [v] for k, v in lists.items()}
    if "class_weight" in lists:
        lists["class_weight"] = [None if v == "none" else v for v in lists["class_weight"]]
    base = config_from(opts, preset)
    if any(not lecture_batch_size_applies(v) for v in lists.get("optimizer", [])):
        lists.setdefault("lecture_batch_size", [None])  # the lecture's gradient scale is gd's only
    return expand_grid(base, **lists)


def fmt(v, spec=".4f"):
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, spec)
