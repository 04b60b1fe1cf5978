"""``featmlp train | run | lecture``: models from features (``evaluate`` and ``predict`` use them: :mod:`.inference`)."""

from __future__ import annotations

from pathlib import Path

import click

from .._text import cli_spelling, printable
from ..errors import DataError
from ..features import recommended_preset
from ..progress import Callback, TqdmProgress
from ..training.history import EPOCH, SECONDS, TRAIN_ACCURACY, TRAIN_LOSS, VAL_ACCURACY, VAL_LOSS, overfitting
from ._common import (SOURCE_HELP, cli_storage_options, data_options, default_out,
                      extraction_options, features_option, fitted_options, report_skipped, resolve_fitted)
from .options import DescribedDefault, LECTURE_UNUSED, config_from, fmt, lecture_presets, train_options


class EpochPrinter(Callback):
    """One line per epoch on stdout, from the run's history record; ``epoch k/N`` with the N training
    tells (fewer than ``--epochs`` under ``--max-steps``)."""

    def __init__(self, epochs: int, lecture: bool = False):
        self.epochs = epochs
        self.lecture = lecture

    def on_progress(self, desc: str, done: int, total: int | None) -> None:
        if desc == "train" and total:
            self.epochs = total

    def on_epoch(self, record: dict, history: list[dict]) -> None:
        if self.lecture:  # the notebook's print, with the mean loss over samples
            click.echo(f"Epoch: {record[EPOCH]}, Loss: {fmt(record[TRAIN_LOSS], '.6f')}, "
                       f"Time: {record[SECONDS]:.4f}s")
            return
        line = (f"epoch {record[EPOCH]:>{len(str(self.epochs))}}/{self.epochs}  "
                f"loss {fmt(record[TRAIN_LOSS])}  acc {fmt(record.get(TRAIN_ACCURACY), '.3f')}")
        if VAL_LOSS in record:
            line += f"  val_loss {fmt(record[VAL_LOSS])}  val_acc {fmt(record.get(VAL_ACCURACY), '.3f')}"
        click.echo(line + f"  {record[SECONDS]:.3f} s")


class OverfitNotice(Callback):
    """One line on stderr, the first epoch whose record shows overfitting (even with -q); told the table
    and settings (:meth:`expect`), only a gap beyond the noise of that many validation rows."""

    def __init__(self):
        self.said = False
        self.n_val = None

    def expect(self, table, config) -> None:
        """Training ``config`` on ``table`` follows: the validation rows it holds out."""
        # start-up: loaded when training starts, not by `featmlp --help`
        from ..training.config import validation_size

        try:
            self.n_val = validation_size(len(table.y_train), config.val_fraction) if config.val_fraction else None
        except DataError:  # nothing to hold out: training itself says so
            self.n_val = None

    def on_epoch(self, record: dict, history: list[dict]) -> None:
        message = None if self.said else overfitting(record, self.n_val)
        if message:
            self.said = True
            click.echo(f"warning: {message}: try --preset wide or --dropout, fewer --epochs, or --patience N "
                       f"(early stopping)", err=True)


def _report_run(run, lecture: bool = False) -> None:
    m = run.metrics
    if m["diverged"]:
        last = m["epochs_run"]
        kept = f"the weights after epoch {last}" if last else "the initial weights"
        click.echo(f"diverged: the loss became NaN or infinite in epoch {last + 1}; kept {kept} "
                   f"(try a smaller --lr)", err=True)
    acc = m.get("test_accuracy")
    if lecture:
        click.echo(f"Accuracy of the network on the {m.get('n_test', 0)} test images: {fmt(acc * 100 if acc is not None else None, '.2f')} %")
    else:
        click.echo(f"test accuracy {fmt(acc)} on {m.get('n_test', 0)} images; {m['epochs_run']} epochs in "
                   f"{m['train_seconds']:.2f} s ({m['stop_reason']})")
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(run.out).iterdir())
    click.echo(printable(f"run directory: {run.out}  ({', '.join(files)})"))


def network_line(config, n_features: int, n_classes: int) -> str:
    """What is trained, for people: the layers, the loss, the optimiser and whatever is switched on.

    ``network 9 -> 6 -> 10, mse, gd lr 10, 20 epochs`` (the lecture's);
    ``network 14400 -> 256 (linear) -> 2048 -> 10, dropout 0.5, ce, label smoothing 0.1, adam lr
    0.001 cosine, batch 256, 30 epochs, flip, test flip`` (the kmeans preset).
    """
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..training.config import FULL_BATCH_OPTIMIZERS

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
    if config.optimizer not in FULL_BATCH_OPTIMIZERS:
        parts.append(f"batch {config.batch_size}")
    elif config.lecture_batch_size:
        parts.append(f"gradient of the sum over batches of {config.lecture_batch_size}")
    parts.append(f"{config.epochs} epochs" + (f" (at most {config.max_steps} steps)" if config.max_steps else ""))
    if config.val_fraction:
        parts.append(f"{config.val_fraction:g} held out for validation")
    if config.patience:
        parts.append(f"early stopping after {config.patience}")
    if config.class_weight is not None:
        parts.append("balanced classes" if config.class_weight == "balanced" else "class weights")
    parts += [name for name, on in (("flip", config.flip), ("test flip", config.test_flip)) if on]
    return ", ".join(parts)


def _features_line(table, config) -> str:
    return (f"features: {len(table.X_train)} train, {len(table.X_test)} test x {len(table.feature_names)}; "
            f"{network_line(config, table.X_train.shape[1], len(table.class_names))}")


def _train_and_report(table, config, out, data, quiet, log_scale, tensorboard=False, flips_given=True,
                      overwrite=False, out_of_core=None):
    """``featmlp train``: train into the run directory ``out`` and print the result."""
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..runs.directory import staging_dir
    from ..runs.job import decide_flips
    from ..runs.results import train_run

    if not flips_given:
        config, notice = decide_flips(table, config)
        if notice:
            click.echo(printable(notice), err=True)
    overfit = OverfitNotice()
    overfit.expect(table, config)
    callbacks = [overfit]
    if not quiet:
        click.echo(_features_line(table, config))

        class SayWhere(Callback):  # once training starts: the checks before it passed, the directory exists
            def on_train_begin(self, config):
                click.echo(printable(f"training in {staging_dir(out)} (its loss.png follows the loss); "
                                     f"moved to {out} when complete"))

        callbacks += [SayWhere(), EpochPrinter(config.epochs)]
    run = train_run(table, config, out, data=data, callbacks=callbacks, log_scale=log_scale,
                    overwrite=overwrite, tensorboard=tensorboard, out_of_core=out_of_core)
    _report_run(run)
    return run


_FORCE_HELP = ("Replace an existing featmlp run directory (only once the new run is complete; a failed run "
               "leaves it as it was). Anything else at --out is refused, even with --force.")


# A feature table on the command line: an .npz file, or a sharded table's directory.
FEATURES_METAVAR = "FEATURES.npz|DIR.features/"


@click.command()
@click.argument("features_file", metavar=FEATURES_METAVAR, type=click.Path())
@train_options
@click.option("--out", "out", type=click.Path(file_okay=False), cls=DescribedDefault, show_default="runs/train-<time>",
              help="Run directory.")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
@click.option("--out-of-core/--in-memory", "out_of_core", default=None,
              cls=DescribedDefault, show_default="stream it when it is larger than a quarter of the free memory",
              help="For a sharded table (DIR.features/): stream it from disk a shard at a time, or read it into "
                   "memory.")
def train(features_file, out, force, out_of_core, **opts):
    """Train an MLP on a feature file and evaluate it on its test split.

    The feature file may be a sharded table (featmlp extract -o DIR.features/); one too large
    for memory is trained out of core: its shards are read one or two at a time, minibatches take the shards in a shuffled
    order, and its test split is scored a shard at a time.
    """
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..runs.directory import check_out
    from ..tables.store import load_features
    from ..training.threads import threads_override

    out = out or default_out("train")
    # Before reading a large feature file. One inside the run it replaces is carried into the new run.
    check_out(out, overwrite=force, carried=[features_file])
    threads_override()  # a bad FEATMLP_NUM_THREADS refused now, not after reading the features
    table = load_features(features_file)
    quiet, log_scale, tensorboard = opts.pop("quiet"), opts.pop("log_scale"), opts.pop("tensorboard")
    flips_given = opts.get("flip") is not None or opts.get("test_flip") is not None
    config = config_from(opts, recommended_preset(table.feature_set))
    _train_and_report(table, config, out, {"feature_file": str(Path(features_file).resolve())}, quiet, log_scale,
                      tensorboard=tensorboard, flips_given=flips_given, overwrite=force, out_of_core=out_of_core)


def _run_pipeline(data, features, out, opts, kind, preset=None, lecture=False):
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..runs.job import run_job
    from ..training.threads import threads_override

    threads_override()  # a bad FEATMLP_NUM_THREADS refused now, not after the extraction
    quiet, log_scale, tensorboard = opts.pop("quiet"), opts.pop("log_scale"), opts.pop("tensorboard")
    force, skip_bad = opts.pop("force", False), opts.pop("skip_bad", False)
    extraction = {"workers": opts.pop("workers", 1), "chunk_size": opts.pop("chunk_size", None)}
    options, fitted = resolve_fitted(features, opts.pop("feature_option", ()), opts.pop("fitted_from", None))
    flips_given = opts.get("flip") is not None or opts.get("test_flip") is not None
    config = config_from(opts, preset or recommended_preset(features), held_out=not lecture)
    out = Path(out or default_out(kind))
    data_opts = {"test_fraction": opts.pop("test_fraction"), "split_seed": opts.pop("split_seed"),
                 "image_size": opts.pop("image_size")}
    progress = TqdmProgress(unit="img", disable=True if quiet else None)
    overfit = OverfitNotice()
    callbacks = [_job_printer(features, progress, quiet, overfit), overfit]
    if not quiet:
        callbacks.append(EpochPrinter(config.epochs, lecture=lecture))
    run = run_job(data, features, out, config=config, auto_flips=not flips_given, options=options, fitted=fitted,
                  **data_opts, **extraction, skip_bad=skip_bad, storage_options=cli_storage_options(),
                  overwrite=force, reuse=opts.pop("reuse", True),
                  progress=progress, callbacks=callbacks, log_scale=log_scale, tensorboard=tensorboard)
    _report_run(run, lecture=lecture)
    return run


def _job_printer(features, progress, quiet, overfit=None):
    """The hook printing what ``featmlp run`` does while the job goes (with -q, only its stderr lines), and
    telling ``overfit`` (an :class:`OverfitNotice`) what is trained."""
    # Defined when used: featmlp.runs.job (where JobHook is) imports more than this module needs for --help.
    from ..runs.job import JobHook
    from ..runs.layout import FEATURES_FILE

    class JobPrinter(JobHook):
        def __init__(self, features, progress, quiet, overfit):
            self.features, self.progress, self.quiet, self.overfit = features, progress, quiet, overfit

        def on_job_begin(self, staging, out):
            self.out = out
            if not self.quiet:
                click.echo(printable(f"building the run in {staging} (its loss.png follows the loss while "
                                     f"training); moved to {out} when complete"))

        def on_reused(self, entry):
            if not self.quiet:
                click.echo(printable(f"images and features: those of the same job before, kept in {entry} "
                                     f"(--no-reuse: load and extract again)"))

        def on_warning(self, message):
            click.echo(f"warning: {printable(cli_spelling(message))}", err=True)

        def on_images(self, dataset):
            report_skipped(dataset)

        def on_features(self, dataset, table):
            self.progress.close()
            if not self.quiet:
                mirrors = " (and the test images' mirror images, for test flips)" * (table.X_test_mirror is not None)
                click.echo(printable(f"data: {dataset.source}: {len(table.X_train)} train + {len(table.X_test)} "
                                     f"test images, {len(table.class_names)} classes; {self.features} features"
                                     f"{mirrors} -> {self.out / FEATURES_FILE}"))

        def on_notice(self, message):
            click.echo(printable(message), err=True)

        def on_config(self, table, config):
            if self.overfit is not None:
                self.overfit.expect(table, config)
            if not self.quiet:
                click.echo(_features_line(table, config))

    return JobPrinter(features, progress, quiet, overfit)


def reuse_option(f):
    return click.option("--reuse/--no-reuse", default=True, show_default=True,
                        help="Read the images and features of the same small job on one file (the bundled sample, "
                             "an archive up to 64 MB; not kmeans nor pretrained sets) back from featmlp's cache "
                             "when it ran before, and keep them the first time ($FEATMLP_REUSE=0: never).")(f)


@click.command(epilog=SOURCE_HELP)
@click.option("--data", default=None, metavar="SOURCE", cls=DescribedDefault, show_default="the bundled sample",
              help="Images to use.")
@features_option
@fitted_options
@extraction_options
@train_options
@data_options
@reuse_option
@click.option("--out", "out", type=click.Path(file_okay=False), cls=DescribedDefault, show_default="runs/run-<time>",
              help="Run directory.")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
def run(data, features, out, **opts):
    """Extract features, train, evaluate, plot and save: the whole job in one run directory.

    A stratified, seeded 10 % of the training images is held out for the validation curves and
    the line that says the run overfits (--val-fraction 0: none; preset lecture holds out
    nothing); it chooses the weights only under early stopping (--patience).
    """
    _run_pipeline(data, features, out, opts, "run")


def _lecture_help() -> str:
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..training.config import PRESETS

    config = PRESETS["lecture"]
    return (f"The lecture notebook, reproduced: its 9 texture features and preset 'lecture', "
            f"{network_line(config, 9, 10).removeprefix('network ')} (on CIFAR-10), {config.scaler} scaling."
            "\n\nOptions override the lecture's values, as in its experiments: --hidden 6,6, --lr 5000.")


@click.command(epilog=SOURCE_HELP, help=_lecture_help())
@click.option("--data", default=None, metavar="SOURCE", cls=DescribedDefault, show_default="the bundled sample",
              help="Images to use.")
@train_options(preset="lecture", held_out=False, presets=lecture_presets(), omit=LECTURE_UNUSED)
@data_options
@reuse_option
@click.option("--out", "out", type=click.Path(file_okay=False), cls=DescribedDefault,
              show_default="runs/lecture-<time>", help="Run directory.")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
def lecture(data, out, **opts):
    _run_pipeline(data, "lecture", out, opts, "lecture", preset="lecture", lecture=True)
