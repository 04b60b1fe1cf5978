"""``featmlp lr-find | sweep``: choosing settings by trying them.

``compare`` and ``report``, which only read what runs wrote, are in :mod:`featmlp.cli.runs`
(this module's options import torch)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from .._text import printable
from ..features import recommended_preset
from ._common import default_out, force_option, plot_file
from .options import (LR_FIND_HELP, LR_FIND_UNUSED, SWEEP_UNUSED, DescribedDefault, FiniteFloatRange, config_from,
                      fmt, grid_from, train_options)
from .training import FEATURES_METAVAR


@click.command("lr-find")
@click.argument("features_file", metavar=FEATURES_METAVAR, type=click.Path())
@train_options(omit=LR_FIND_UNUSED, help_for=LR_FIND_HELP)
@click.option("--start-lr", default=1e-7, show_default=True, type=FiniteFloatRange(0, min_open=True),
              help="Learning rate of the first step.")
@click.option("--end-lr", default=10.0, show_default=True, type=FiniteFloatRange(0, min_open=True),
              help="Learning rate of the last step (the lr grows geometrically in between).")
# featmlp.training.lr_find.lr_find takes at least 5 steps: the smallest curve its rules can read
@click.option("--steps", "num_steps", default=100, show_default=True, type=click.IntRange(5),
              help="Optimiser steps, at least 5 (fewer are taken when the loss blows up).")
@click.option("--smoothing", default=0.98, show_default=True, type=FiniteFloatRange(0, 1, max_open=True),
              help="Weight of the past in the exponentially smoothed loss.")
@click.option("--rule", default="steepest", show_default=True,
              type=click.Choice(["steepest", "minimum/10"]),
              help="steepest: where the smoothed loss falls fastest (before its minimum); "
                   "minimum/10: a tenth of the lr at the smoothed minimum.")
@click.option("--out", "out", type=click.Path(file_okay=False), cls=DescribedDefault, show_default="runs/lr-find-<time>",
              help="Folder to draw loss against learning rate in, as lr_find.png.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Draw it into this file instead (its suffix picks the format: .png, .svg, .pdf).")
@force_option("plot (lr_find.png, or the --plot file)")
def lr_find(features_file, start_lr, end_lr, num_steps, smoothing, rule, out, plot_path, force, **opts):
    """Learning-rate range test: train briefly with an exponentially growing lr, plot the loss.

    The loss is smoothed and the test stops when it blows up. Always look at the plot: a
    suggested value alone misleads on noisy losses. The last line is `suggested lr: <value>`.
    A sharded table (DIR.features/) is read into memory, when it fits.
    """
    # start-up: loaded when the command runs, not by `featmlp --help`
    from .._figures import plot_format
    from ..progress import TqdmProgress
    from ..tables.store import load_features
    from ..training.lr_find import lr_find as lr_find_

    plot_path = plot_file(out, plot_path, "lr-find", "lr_find.png", force=force, sources=[features_file])
    plot_format(plot_path)  # a bad --plot suffix fails here, not after the test ran
    table = load_features(features_file)
    quiet = opts.pop("quiet")
    config = config_from(opts, recommended_preset(table.feature_set))
    progress = TqdmProgress(unit="step", disable=True if quiet else None)
    result = lr_find_(table.X_train, table.y_train, config, n_classes=len(table.class_names),
                      start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, smoothing=smoothing, rule=rule,
                      callbacks=[progress])
    progress.close()
    result.plot(plot_path)
    click.echo(f"{len(result.lrs)} steps from lr {result.lrs[0]:.3g} to {result.lrs[-1]:.3g} "
               f"({result.stop_reason}); loss against lr: {printable(plot_path)}")
    for name, value in result.suggestions.items():
        click.echo(f"  rule {name}: {value:.3g}")
    click.echo(f"rule: {result.rule}")
    click.echo(f"suggested lr: {result.suggested_lr:.3g}")


@click.command()
@click.argument("features_file", metavar=FEATURES_METAVAR, type=click.Path())
@train_options(sweep=True, omit=SWEEP_UNUSED)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Processes for configurations that cannot train together (dropout, batch norm, early stopping).")
@click.option("--out", "out", type=click.Path(file_okay=False), cls=DescribedDefault, show_default="runs/sweep-<time>",
              help="Sweep directory. The same sweep run again into it resumes: configurations already finished "
                   "there are not trained again.")
@click.option("--force", is_flag=True,
              help="Replace another featmlp sweep in --out instead of refusing. A directory that is not a "
                   "featmlp sweep (nor empty) is refused, even with --force.")
@click.option("--run-plots", is_flag=True,
              help="Also draw loss.png and confusion.png in each configuration's run directory (two plots a "
                   "configuration, most of a small sweep's time); without, `featmlp report` draws them on its "
                   "pages.")
def sweep(features_file, workers, out, force, run_plots, **opts):
    """Train every combination of the listed values; those that share data train together.

    \b
    featmlp sweep feats.npz --preset lecture --lr 1,10,50,500,5000 --hidden 6 --hidden 6,6
    featmlp sweep feats.npz --lr 1e-4,1e-3,1e-2 --weight-decay 0,1e-4 --epochs 20

    Writes DIR/results.csv (one row per configuration), DIR/loss.png (every curve overlaid),
    DIR/accuracy_vs_lr.png, DIR/sweep.json and one run directory per configuration (its
    plots with --run-plots), each written as soon as its configuration finishes: a sweep
    killed midway keeps them, and the same command again trains only the rest. A sharded table (DIR.features/) is read into
    memory, when it fits. The table ranks the configurations by validation accuracy (a 10 %
    split of train by default), so that the test split chooses nothing; by test accuracy
    with --val-fraction 0 (and with preset lecture, which holds out nothing).
    """
    # start-up: loaded when the command runs, not by `featmlp --help`
    from .._outputs import check_output
    from ..progress import TqdmProgress
    from ..runs.job import decide_flips
    from ..sweep import run_sweep
    from ..tables.store import load_features

    if out is not None:  # before reading the table: no place but a sweep's (resumed or, --force, replaced)
        check_output(out, "sweep", force=True, sources=[features_file])
    table = load_features(features_file)
    quiet, log_scale = opts.pop("quiet"), opts.pop("log_scale")
    if opts.get("device") is not None:
        # --device takes one value (every configuration runs where the sweep runs), while the
        # grid takes a list per field: the one value is a one-entry list, so it does not vary.
        opts["device"] = [opts["device"]]
    flips_given = opts.get("flip") is not None or opts.get("test_flip") is not None
    configs = grid_from(opts, recommended_preset(table.feature_set))
    if not flips_given and configs:  # the preset's flips, decided as `featmlp train` decides them (all share them)
        decided, notice = decide_flips(table, configs[0])
        configs = [dataclasses.replace(c, flip=decided.flip, test_flip=decided.test_flip) for c in configs]
        if notice:
            click.echo(printable(notice), err=True)
    out = Path(out or default_out("sweep"))
    if not quiet:
        click.echo(f"{len(configs)} configurations on {len(table.X_train)} x {len(table.feature_names)} features")

    # One bar over all configurations: those trained together finish at once, the others one by one.
    progress = TqdmProgress(unit="config", disable=True if quiet else None)
    try:
        result = run_sweep(table, configs, out, workers=workers, log_scale=log_scale, force=force,
                           callbacks=[progress], run_plots=run_plots)
    finally:
        progress.close()
    if result.resumed and not quiet:
        click.echo(f"resumed: {len(result.resumed)} configuration(s) already finished in {printable(out)}, "
                   f"not trained again")
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..runs.compare import ranked

    column, rows = ranked(result.table())
    width = max(len(r["name"]) for r in rows)
    val = "val_accuracy" in rows[0]
    click.echo(f"ranked by {'validation' if column == 'val_accuracy' else 'test'} accuracy"
               + (" (the test split chose nothing)" if column == "val_accuracy" else
                  " (no validation split: --val-fraction 0 or preset lecture)"))
    click.echo(f"{'name':<{width}}  {'final_train_loss':>16}  " + (f"{'val_accuracy':>12}  " if val else "")
               + f"{'test_accuracy':>13}  {'diverged':>8}  {'seconds':>8}")
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {fmt(r['final_train_loss'], '.6f'):>16}  "
                   + (f"{fmt(r['val_accuracy'], '.4f'):>12}  " if val else "")
                   + f"{fmt(r['test_accuracy'], '.4f'):>13}  {'yes' if r['diverged'] else 'no':>8}  "
                   f"{r['seconds']:8.3f}")
    diverged = [r["name"] for r in rows if r["diverged"]]
    if diverged:
        click.echo(f"diverged (loss became NaN or infinite; drawn up to there): {', '.join(diverged)}", err=True)
    click.echo(f"trained in {result.seconds:.2f} s; wrote {printable(out)}/results.csv, loss.png, accuracy_vs_lr.png "
               f"and {len(rows)} run directories")
