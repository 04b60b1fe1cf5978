"""``featmlp train | run | lecture | evaluate | predict``: models from features, and their use."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import FeatmlpError
from ..features import recommended_preset
from ..progress import TqdmProgress
from ._common import (SOURCE_HELP, _load, data_options, default_out, features_option, fitted_options,
                      report_skipped, resolve_fitted)


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
LR_FIND_UNUSED = ("lr", "epochs", "schedule", "patience", "flip", "test_flip", "log_scale", "tensorboard")
SWEEP_UNUSED = ("tensorboard",)  # TensorBoard logs one run; a sweep's runs share results.csv and loss.png


def train_options(f=None, *, sweep: bool = False, preset: str = "default", omit: tuple[str, ...] = ()):
    """Every TrainConfig field as an option; unset options keep the preset's value.

    Each option's help ends with its value in ``preset`` (the one the command starts from) and in
    the other presets where it differs, read from :data:`featmlp.train.PRESETS`. Options named
    in ``omit`` (settings the command does not use) are left out, so passing one is a usage
    error rather than silently ignored. With ``sweep=True`` each option takes a comma-separated
    list of values to try, and ``--hidden`` may be repeated (one architecture each).
    """
    if f is None:
        return lambda g: train_options(g, sweep=sweep, preset=preset, omit=omit)
    from ..model import ACTIVATIONS, HEADS, SCALERS
    from ..train import OPTIMIZERS, PRESETS, SCHEDULES

    if preset == "lecture":
        start = "default: 'lecture', the notebook's; 'default' = the best on the 9 lecture features"
    else:
        start = ("default: 'kmeans' for kmeans features, else 'default', the best on the 9 lecture features; "
                 "'lecture' = the notebook's")
    # (field, declarations, click settings, what it does); the defaults are added below
    specs = [
        ("preset", ("--preset",), dict(type=click.Choice(sorted(PRESETS))),
         f"Named configuration to start from ({start}; 'wide' = default with dropout 0.3, for wide feature "
         "sets such as lecture+hog+color; 'kmeans' = 256 linear bottleneck -> 2048, dropout 0.5, label "
         "smoothing, flips). Any option below overrides its value."),
        ("hidden", ("--hidden",), dict(callback=_parse_hidden, metavar="N[,N...]"),
         "Hidden layer sizes: 6 | 6,6 | 512,256 (empty string: no hidden layer)."),
        ("bottleneck", ("--bottleneck",), dict(type=click.IntRange(0)),
         "Width of a linear layer before the hidden layers (0: none): a low-rank first layer for thousands "
         "of features."),
        ("activation", ("--activation",), dict(type=click.Choice(sorted(ACTIVATIONS))),
         "Activation of the hidden layers."),
        ("dropout", ("--dropout",), dict(type=click.FloatRange(0, 1, max_open=True)),
         "Dropout after each hidden layer."),
        ("batch_norm", ("--batch-norm/--no-batch-norm",), dict(default=None), "Batch norm after each hidden layer."),
        ("head", ("--head",), dict(type=click.Choice(sorted(HEADS))),
         "ce: logits + cross-entropy; mse: the lecture's softmax + MSE against one-hot labels."),
        ("optimizer", ("--optimizer",), dict(type=click.Choice(sorted(OPTIMIZERS))),
         "gd: the lecture's full-batch gradient descent (one step per epoch); sgd (momentum), adam, adamw."),
        ("lr", ("--lr",), dict(type=float), "Learning rate (peak under a schedule)."),
        ("epochs", ("--epochs",), dict(type=click.IntRange(1)), "Epochs (the most, with early stopping)."),
        ("batch_size", ("--batch-size",), dict(type=click.IntRange(1)),
         "Training rows per optimiser step (not used by gd, which steps once per epoch on all of them)."),
        ("momentum", ("--momentum",), dict(type=click.FloatRange(0, 1, max_open=True)), "Momentum of sgd."),
        ("weight_decay", ("--weight-decay",), dict(type=click.FloatRange(0)),
         "L2 penalty on the weights (decoupled from the gradient with adamw)."),
        ("schedule", ("--schedule",), dict(type=click.Choice(sorted(SCHEDULES))),
         "Learning-rate schedule over the run's steps: none | cosine (down to 0) | onecycle (warm-up, then down)."),
        ("scaler", ("--scaler",), dict(type=click.Choice(sorted(SCALERS))),
         "Feature scaling fitted on train only: standard | minmax | global (centred, one scale for all "
         "columns) | none."),
        ("val_fraction", ("--val-fraction",), dict(type=click.FloatRange(0, 1, max_open=True)),
         "Share of train held out for validation curves and early stopping."),
        ("patience", ("--patience",), dict(type=click.IntRange(0)),
         "Early stopping: epochs without a better validation loss (0: off)."),
        ("class_weight", ("--class-weight",), dict(type=click.Choice(["none", "balanced"])),
         "balanced: weigh classes inversely to their frequency (unbalanced folders)."),
        ("seed", ("--seed",), dict(type=click.IntRange(0)), "Seed of weights, batch order, validation split."),
        ("flip", ("--flip/--no-flip",), dict(default=None),
         "Also train on the mirror image of every training image (feature sets whose mirrored features are a "
         "column permutation: kmeans, color)."),
        ("label_smoothing", ("--label-smoothing",), dict(type=click.FloatRange(0, 1, max_open=True)),
         "Cross-entropy against (1 - e) one-hot + e / classes instead of one-hot labels."),
        ("test_flip", ("--test-flip/--no-test-flip",), dict(default=None),
         "Predict with the mean of each image's and its mirror image's probabilities."),
        ("device", ("--device",), {}, "auto (CUDA when available) | cpu | cuda | cuda:N."),
        ("log_scale", ("--log-scale",), dict(is_flag=True), "Loss plots on a log scale."),
        ("tensorboard", ("--tensorboard",), dict(is_flag=True),
         "Also log every epoch for TensorBoard, in RUN_DIR/tensorboard (needs the tensorboard package)."),
        ("quiet", ("-q", "--quiet"), dict(is_flag=True), "No per-epoch lines or progress bars."),
    ]
    for name, decls, settings, text in reversed(specs):
        if name in omit:
            continue
        if sweep and name == "hidden":
            settings = dict(multiple=True, metavar="N[,N...]",
                            callback=lambda c, p, v: [_parse_hidden(c, p, x) for x in v] or None)
            text = "Hidden layer sizes of one architecture; repeat for several: --hidden 6 --hidden 6,6."
        elif sweep and not settings.get("is_flag") and "/" not in decls[0] and name not in ("preset", "device"):
            settings = _as_list(settings)
            text += " Comma-separated values to try."
        if name in _TRAIN_KEYS:
            text = f"{text} {preset_defaults(name, preset)}"
        f = click.option(*decls, name, help=text, **settings)(f)
    return f


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


def preset_defaults(field: str, preset: str = "default") -> str:
    """``Default: 256,256 (preset 'default'); other presets: lecture 6, kmeans 2048.`` for an option's help.

    Values are written as they are typed on the command line (``--no-flip``, ``none``, ``6,6``).
    """
    from ..train import PRESETS

    value = getattr(PRESETS[preset], field)
    others = [f"{name} {_as_typed(field, getattr(config, field))}" for name, config in PRESETS.items()
              if name != preset and getattr(config, field) != value]
    text = f"Default: {_as_typed(field, value)} (preset '{preset}')"
    return text + ("; other presets: " + ", ".join(others) if others else "; the same in every preset") + "."


def _as_typed(field: str, value) -> str:
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{field.replace('_', '-')}"
    if field == "hidden":
        return ",".join(map(str, value)) or "''"
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


_TRAIN_KEYS = ("hidden", "activation", "dropout", "batch_norm", "head", "optimizer", "lr", "epochs",
               "batch_size", "momentum", "weight_decay", "schedule", "scaler", "val_fraction", "patience",
               "class_weight", "seed", "device", "bottleneck", "flip", "test_flip", "label_smoothing")


def _config_from(opts: dict, preset: str | None = None):
    """The preset, overridden by every option the user gave."""
    import dataclasses

    from ..train import PRESETS

    base = PRESETS[opts.pop("preset", None) or preset or "default"]
    given = {k: opts.pop(k) for k in _TRAIN_KEYS if opts.get(k) is not None}
    for k in _TRAIN_KEYS:
        opts.pop(k, None)
    if isinstance(given.get("class_weight"), str) and given["class_weight"] == "none":
        given["class_weight"] = None
    if "optimizer" in given and given["optimizer"] != "gd":
        given.setdefault("lecture_batch_size", None)  # the lecture's gradient scale is gd's only
    return dataclasses.replace(base, **given)


def _grid_from(opts: dict, preset: str | None = None):
    """The sweep's configurations: the preset, with every listed value tried."""
    from ..sweep import expand_grid

    lists = {k: opts.pop(k) for k in _TRAIN_KEYS if opts.get(k) is not None}
    for k in _TRAIN_KEYS:
        opts.pop(k, None)
    if "class_weight" in lists:
        lists["class_weight"] = [None if v == "none" else v for v in lists["class_weight"]]
    base = _config_from(opts, preset)
    if any(v != "gd" for v in lists.get("optimizer", [])):
        lists.setdefault("lecture_batch_size", [None])  # the lecture's gradient scale is gd's only
    return expand_grid(base, **lists)


def _fmt(v, spec=".4f"):
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


class EpochPrinter:
    """One line per epoch on stdout, from the run's history record."""

    def __init__(self, epochs: int, lecture: bool = False):
        self.epochs = epochs
        self.lecture = lecture

    def __call__(self, record: dict, history: list[dict]) -> None:
        if self.lecture:  # the notebook's print, with the mean loss over samples
            click.echo(f"Epoch: {record['epoch']}, Loss: {_fmt(record['train_loss'], '.6f')}, "
                       f"Time: {record['seconds']:.4f}s")
            return
        line = (f"epoch {record['epoch']:>{len(str(self.epochs))}}/{self.epochs}  "
                f"loss {_fmt(record['train_loss'])}  acc {_fmt(record.get('train_accuracy'), '.3f')}")
        if "val_loss" in record:
            line += f"  val_loss {_fmt(record['val_loss'])}  val_acc {_fmt(record.get('val_accuracy'), '.3f')}"
        click.echo(line + f"  {record['seconds']:.3f} s")


def _report_run(run, lecture: bool = False) -> None:
    m = run.metrics
    if m["diverged"]:
        last = m["epochs_run"]
        kept = f"the weights after epoch {last}" if last else "the initial weights"
        click.echo(f"diverged: the loss became NaN or infinite in epoch {last + 1}; kept {kept} "
                   f"(try a smaller --lr)", err=True)
    acc = m.get("test_accuracy")
    if lecture:
        click.echo(f"Accuracy of the network on the {m.get('n_test', 0)} test images: {_fmt(acc * 100 if acc is not None else None, '.2f')} %")
    else:
        click.echo(f"test accuracy {_fmt(acc)} on {m.get('n_test', 0)} images; {m['epochs_run']} epochs in "
                   f"{m['train_seconds']:.2f} s ({m['stop_reason']})")
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(run.out).iterdir())
    click.echo(f"run directory: {run.out}  ({', '.join(files)})")


# Flips are left on when the mirror images are classified as their own class nearly as often as
# the images themselves (see featmlp.store.mirror_agreement).
_MIRROR_AGREEMENT = 0.9


def _check_flips(table, config, flips_given: bool):
    """The preset's flips, turned off (with one line) where mirror images change the class."""
    import dataclasses

    from ..store import mirror_agreement

    if flips_given or not (config.flip or config.test_flip):
        return config
    agreement = mirror_agreement(table)
    if agreement is None or agreement[1] >= _MIRROR_AGREEMENT * agreement[0]:
        return config
    click.echo(f"flips off: mirror images of the training images keep their class for {agreement[1]:.0%} of them "
               f"against {agreement[0]:.0%} for the images (nearest class mean), so mirroring changes what these "
               f"images show (as for characters); --flip / --test-flip force them", err=True)
    return dataclasses.replace(config, flip=False, test_flip=False)


def network_line(config, n_features: int, n_classes: int) -> str:
    """What is trained, for people: the layers, the loss, the optimiser and whatever is switched on.

    ``network 9 -> 6 -> 10, mse, gd lr 10, 20 epochs`` (the lecture's);
    ``network 14400 -> 256 (linear) -> 2048 -> 10, dropout 0.5, ce, label smoothing 0.1, adam lr
    0.001 cosine, batch 256, 30 epochs, flip, test flip`` (the kmeans preset).
    """
    from ..train import OPTIMIZERS

    layers = [str(n_features), *([f"{config.bottleneck} (linear)"] if config.bottleneck else []),
              *map(str, config.hidden), str(n_classes)]
    parts = [f"network {' -> '.join(layers)}"]
    if config.activation != "relu" and config.hidden:
        parts.append(config.activation)
    if config.batch_norm:
        parts.append("batch norm")
    if config.dropout:
        parts.append(f"dropout {config.dropout:g}")
    parts.append(config.head)
    if config.label_smoothing:
        parts.append(f"label smoothing {config.label_smoothing:g}")
    optimiser = f"{config.optimizer} lr {config.lr:g}"
    if config.schedule != "none":
        optimiser += f" {config.schedule}"
    if config.optimizer == "sgd" and config.momentum:
        optimiser += f" momentum {config.momentum:g}"
    if config.weight_decay:
        optimiser += f" weight decay {config.weight_decay:g}"
    parts.append(optimiser)
    if not OPTIMIZERS[config.optimizer].full_batch:
        parts.append(f"batch {config.batch_size}")
    elif config.lecture_batch_size:
        parts.append(f"gradient of the sum over batches of {config.lecture_batch_size}")
    parts.append(f"{config.epochs} epochs")
    if config.val_fraction:
        parts.append(f"{config.val_fraction:g} held out for validation")
    if config.patience:
        parts.append(f"early stopping after {config.patience}")
    if config.class_weight is not None:
        parts.append("balanced classes" if config.class_weight == "balanced" else "class weights")
    parts += [name for name, on in (("flip", config.flip), ("test flip", config.test_flip)) if on]
    return ", ".join(parts)


def _train(table, config, out, data, quiet, log_scale, lecture=False, tensorboard=False,
           flips_given=True, overwrite=False):
    """Train into ``out`` (a path, or the RunDirectory ``featmlp run`` extracted into)."""
    from ..run import RunDirectory, staging_dir, train_run

    config = _check_flips(table, config, flips_given)

    if not quiet:
        click.echo(f"features: {len(table.X_train)} train, {len(table.X_test)} test x {len(table.feature_names)}; "
                   f"{network_line(config, table.X_train.shape[1], len(table.class_names))}")
    callbacks = [] if quiet else [EpochPrinter(config.epochs, lecture=lecture)]
    if not quiet and not isinstance(out, RunDirectory):
        from ..train import Callback

        class SayWhere(Callback):  # once training starts: the checks before it passed, the directory exists
            def on_train_begin(self, config):
                click.echo(f"training in {staging_dir(out)} (its loss.png follows the loss); "
                           f"moved to {out} when complete")

        callbacks.insert(0, SayWhere())
    return train_run(table, config, out, data=data, callbacks=callbacks, log_scale=log_scale,
                     overwrite=overwrite, tensorboard=tensorboard)


def _train_and_report(table, config, out, data, quiet, log_scale, lecture=False, tensorboard=False,
                      flips_given=True, overwrite=False):
    run = _train(table, config, out, data, quiet, log_scale, lecture=lecture, tensorboard=tensorboard,
                 flips_given=flips_given, overwrite=overwrite)
    _report_run(run, lecture=lecture)
    return run


_FORCE_HELP = ("Replace an existing run directory (only once the new run is complete; a failed run "
               "leaves it as it was).")


@click.command()
@click.argument("features_file", metavar="FEATURES.npz", type=click.Path(dir_okay=False))
@train_options
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run directory (default: runs/train-<time>).")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
def train(features_file, out, force, **opts):
    """Train an MLP on a feature file and evaluate it on its test split."""
    from ..run import check_out
    from ..store import load_features

    out = out or default_out("train")
    check_out(out, overwrite=force)  # before reading a large feature file
    table = load_features(features_file)
    quiet, log_scale, tensorboard = opts.pop("quiet"), opts.pop("log_scale"), opts.pop("tensorboard")
    flips_given = opts.get("flip") is not None or opts.get("test_flip") is not None
    config = _config_from(opts, recommended_preset(table.feature_set))
    _train_and_report(table, config, out, {"feature_file": str(Path(features_file).resolve())}, quiet, log_scale,
                      tensorboard=tensorboard, flips_given=flips_given, overwrite=force)


def _run_pipeline(data, features, out, opts, kind, preset=None, lecture=False):
    from ..run import FEATURES_FILE, FEATURES_PARTIAL, RunDirectory
    from ..store import extract_dataset
    from ..train import check_config

    quiet, log_scale, tensorboard = opts.pop("quiet"), opts.pop("log_scale"), opts.pop("tensorboard")
    force, skip_bad = opts.pop("force", False), opts.pop("skip_bad", False)
    options, fitted = resolve_fitted(features, opts.pop("feature_option", ()), opts.pop("fitted_from", None))
    flips_given = opts.get("flip") is not None or opts.get("test_flip") is not None
    config = _config_from(opts, preset or recommended_preset(features))
    check_config(config)  # settings and device, before the long extraction
    out = Path(out or default_out(kind))
    data_opts = {"test_fraction": opts.pop("test_fraction"), "split_seed": opts.pop("split_seed"),
                 "image_size": opts.pop("image_size")}
    progress = TqdmProgress(unit="img", disable=True if quiet else None)
    # The run is built beside `out`; a failed or killed one keeps only its extraction's finished
    # chunks there, which the same command resumes from.
    with RunDirectory(out, overwrite=force, keep=(FEATURES_PARTIAL,)) as rd:
        if not quiet:
            click.echo(f"building the run in {rd.path} (its loss.png follows the loss while training); "
                       f"moved to {out} when complete")
        ds = _load(data, data_opts["test_fraction"], data_opts["split_seed"], data_opts["image_size"], progress,
                   skip_bad=skip_bad)
        report_skipped(ds)
        table = extract_dataset(ds, features, rd.path / FEATURES_FILE, options=options, fitted=fitted,
                                progress=progress)
        progress.close()
        if not quiet:
            click.echo(f"data: {ds.source}: {len(table.X_train)} train + {len(table.X_test)} test images, "
                       f"{len(table.class_names)} classes; {features} features -> {out / FEATURES_FILE}")
        run = _train(table, config, rd, {"source": data or "sample", **data_opts,
                                         "feature_file": str(rd.path / FEATURES_FILE)},
                     quiet, log_scale, lecture=lecture, tensorboard=tensorboard, flips_given=flips_given)
    _report_run(run, lecture=lecture)
    return run


@click.command(epilog=SOURCE_HELP)
@click.option("--data", default=None, metavar="SOURCE", help="Images to use (default: the bundled sample).")
@features_option
@fitted_options
@train_options
@data_options
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run directory (default: runs/run-<time>).")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
def run(data, features, out, **opts):
    """Extract features, train, evaluate, plot and save: the whole job in one run directory."""
    _run_pipeline(data, features, out, opts, "run")


def _lecture_help() -> str:
    from ..train import PRESETS

    config = PRESETS["lecture"]
    return (f"The lecture notebook, reproduced: its 9 texture features and preset 'lecture', "
            f"{network_line(config, 9, 10).removeprefix('network ')} (on CIFAR-10), {config.scaler} scaling."
            "\n\nOptions override the lecture's values, as in its experiments: --hidden 6,6, --lr 5000.")


@click.command(epilog=SOURCE_HELP, help=_lecture_help())
@click.option("--data", default=None, metavar="SOURCE", help="Images to use (default: the bundled sample).")
@train_options(preset="lecture")
@data_options
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run directory (default: runs/lecture-<time>).")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
def lecture(data, out, **opts):
    _run_pipeline(data, "lecture", out, opts, "lecture", preset="lecture", lecture=True)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("features_file", metavar="[FEATURES.npz]", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="Print the metrics as JSON, with the keys of the run's metrics.json (test_accuracy, n_test, "
                   "per_class, macro, weighted, confusion_matrix).")
def evaluate(run_dir, features_file, as_json):
    """Evaluate a saved model on the test split of a feature file (default: the run's own)."""
    import json

    from ..bundle import load_bundle
    from ..evaluate import run_metrics
    from ..model import nonfinite_rows
    from ..run import CONFIG_FILE, read_json, resolve_feature_file
    from ..store import load_features, table_fingerprint

    bundle = load_bundle(run_dir)
    recorded = None
    if features_file is None:
        data = read_json(Path(run_dir) / CONFIG_FILE).get("data", {})
        if not data.get("feature_file"):
            raise FeatmlpError(f"{run_dir} does not record its feature file: pass FEATURES.npz")
        features_file = resolve_feature_file(run_dir, data["feature_file"])
        recorded = data.get("table_fingerprint")  # runs before featmlp recorded it have none
    table = load_features(features_file)
    if recorded is not None and table_fingerprint(table) != recorded:
        raise FeatmlpError(f"{features_file} is not the data this model was trained on (its contents differ from "
                           f"the run's record): pass the feature file to evaluate on explicitly")
    bad = nonfinite_rows(table.X_test)
    if len(bad):
        raise FeatmlpError(f"{features_file}: the test features hold NaN or infinite values in {len(bad)} of "
                           f"{len(table.y_test)} rows (first: row {bad[0]}): clean or re-extract them")
    if table.feature_names and len(table.feature_names) != bundle.spec.n_features:
        raise FeatmlpError(f"{features_file} has {len(table.feature_names)} features, the model takes "
                           f"{bundle.spec.n_features}: extract with --features {bundle.feature_set}")
    if tuple(table.class_names) != tuple(bundle.class_names):
        raise FeatmlpError(f"{features_file}'s classes {list(table.class_names)} differ from the model's "
                           f"{list(bundle.class_names)}")
    # run_metrics: the keys and numbers of the run's metrics.json, so the two compare directly
    m = run_metrics(table.y_test, bundle.predict(table.X_test), bundle.class_names)
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    click.echo(f"test accuracy {_fmt(m['test_accuracy'])} on {m['n_test']} images ({features_file})")
    if not m["n_test"]:
        return
    width = max(len(c) for c in bundle.class_names)
    click.echo(f"{'class':<{width}}  precision  recall     f1  support")
    for row in m["per_class"]:
        click.echo(f"{row['class']:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  "
                   f"{row['support']:7d}")
    click.echo(f"{'macro':<{width}}  {m['macro']['precision']:9.3f}  {m['macro']['recall']:6.3f}  "
               f"{m['macro']['f1']:5.3f}")


def _tsv_field(text: str) -> str:
    r"""A file name as one TSV field: backslash, tab, newline and carriage return escaped as
    ``\\``, ``\t``, ``\n``, ``\r`` (PostgreSQL COPY's text format)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# Images whose features are computed together by predict: up to this many, and up to this many
# pixels (about 1 GB of feature work at PREDICT_BYTES_PER_PIXEL).
_PREDICT_CHUNK_IMAGES = 256
_PREDICT_CHUNK_PIXELS = 1 << 24


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--no-resize", is_flag=True,
              help="Keep each image's size instead of resizing it to the training images' size.")
@click.pass_context
def predict(ctx, run_dir, images, no_resize):
    """Classify image files with a saved model: one line per image, path<TAB>class<TAB>probability.

    Images are resized (bilinear) to the size of the images the model was trained on, so their
    features describe the same scale; the run records that size.

    In the output a backslash, tab, newline or carriage return in a file name is written as
    \\\\, \\t, \\n, \\r (PostgreSQL COPY's text format), so each image is one line of three
    fields. A file that cannot be read or classified gets one line 'error: <file>: <reason>' on
    stderr and the others are still classified; the exit status is 1 when any failed.
    """
    from .._memory import check_memory
    from ..bundle import MAX_IMAGE_PIXELS, image_bytes, load_bundle
    from ..data import read_images
    from ..errors import DataError
    from ..features import extract_features
    from ..model import nonfinite_rows

    bundle = load_bundle(run_dir)
    size = None if no_resize else bundle.extra.get("image_size")
    size = tuple(size) if size else None
    if size:
        per_chunk = max(1, min(_PREDICT_CHUNK_IMAGES, len(images), _PREDICT_CHUNK_PIXELS // (size[0] * size[1])))
        check_memory(image_bytes(size, per_chunk), f"predicting on images resized to {size[0]}x{size[1]} "
                     f"(image_size in {Path(run_dir) / 'model.json'}), {per_chunk} at once,",
                     "check that image_size, or pass --no-resize")
    failed = 0

    def fail(path, reason):
        nonlocal failed
        failed += 1
        reason = str(reason)
        if reason.startswith(f"{path}: "):
            reason = reason[len(str(path)) + 2:]
        click.echo(f"error: {_tsv_field(str(path))}: {reason}", err=True)

    def classify(chunk):
        """Features and classes of decoded images [(path, array)], printed in order."""
        by_shape = {}
        for i, (_, arr) in enumerate(chunk):
            by_shape.setdefault(arr.shape, []).append(i)  # --no-resize: one batch per size
        lines = [None] * len(chunk)
        for shape, rows in by_shape.items():
            paths = [chunk[i][0] for i in rows]
            try:
                X = extract_features(np.stack([chunk[i][1] for i in rows]), bundle.feature_set,
                                     state=bundle.feature_state)
            except FeatmlpError as e:
                for path in paths:
                    fail(path, e)
                continue
            if X.shape[1] != bundle.spec.n_features:
                for path in paths:
                    fail(path, f"its {bundle.feature_set} features have {X.shape[1]} values, the model takes "
                               f"{bundle.spec.n_features}: its size {shape[1]}x{shape[0]} differs from the training "
                               f"images'" + ("; drop --no-resize" if no_resize else ""))
                continue
            bad = set(nonfinite_rows(X).tolist())
            for j in sorted(bad):
                fail(paths[j], f"its {bundle.feature_set} features are NaN or infinite")
            keep = [j for j in range(len(rows)) if j not in bad]
            if not keep:
                continue
            proba = bundle.predict_proba(X[keep])
            best = proba.argmax(axis=1)
            for j, k, p in zip(keep, best, proba[np.arange(len(best)), best]):
                lines[rows[j]] = f"{_tsv_field(str(paths[j]))}\t{_tsv_field(bundle.class_names[k])}\t{p:.4f}"
        for line in lines:
            if line is not None:
                click.echo(line)

    chunk, pixels = [], 0
    for path in images:
        try:
            arr = read_images([path], image_size=size)[0]
        except (DataError, OSError) as e:
            fail(path, e)
            continue
        if no_resize and arr.shape[0] * arr.shape[1] > MAX_IMAGE_PIXELS:
            fail(path, f"{arr.shape[1]}x{arr.shape[0]} is over the {MAX_IMAGE_PIXELS / 1e6:.1f} Mpx an image may have")
            continue
        chunk.append((path, arr))
        pixels += arr.shape[0] * arr.shape[1]
        if len(chunk) >= _PREDICT_CHUNK_IMAGES or pixels >= _PREDICT_CHUNK_PIXELS:
            classify(chunk)
            chunk, pixels = [], 0
    if chunk:
        classify(chunk)
    if failed:
        ctx.exit(1)
