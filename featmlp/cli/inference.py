"""``featmlp evaluate | predict``: a saved model on a labelled feature table or new images."""

from __future__ import annotations

import click

from .._text import printable
from ._common import storage_option
from .options import fmt
from .training import FEATURES_METAVAR


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("features_file", metavar=f"[{FEATURES_METAVAR}]", required=False, type=click.Path())
@click.option("--data", "source", default=None, metavar="SOURCE",
              help="Score the model on every image of a labelled source instead (any source extract takes: a "
                   "folder of class folders, a folder with only test/<class>/ ...), extracted with the run's "
                   "feature set, fitted state and image size; classes are matched by name. Writes metrics.json, "
                   "predictions.csv, confusion.png and report.html into --out.")
@click.option("--out", "out", type=click.Path(file_okay=False),
              help="With --data: the new directory to write into (default: runs/evaluate-<time>); never the run.")
@click.option("--force", is_flag=True, help="With --data: replace an existing --out that featmlp evaluate wrote.")
@click.option("--skip-bad", "skip_bad", is_flag=True,
              help="With --data: leave out files that are not readable images, and list them.")
@storage_option
@click.option("--errors", "errors", type=click.IntRange(0), default=0, metavar="N",
              help="Also list the N most confident mistakes: probability, true -> predicted class, image name.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the test scores as JSON under the keys metrics.json gives them (test_accuracy, n_test, "
                   "per_class, macro, weighted, confusion_matrix; not the training record: history, epochs_run, "
                   "stop_reason ... stay in the run's metrics.json), and with --errors a 'mistakes' list.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def evaluate(run_dir, features_file, source, out, force, skip_bad, errors, as_json, quiet):
    """Evaluate a saved model on the test split of a feature file (default: the run's own), or on every
    image of a labelled source (--data SOURCE --out DIR).

    The feature file may be a sharded table (DIR.features/): its test split is predicted a
    shard at a time."""
    import json

    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..runs.predictions import confident_mistakes

    if source is not None:
        if features_file is not None:
            raise click.UsageError("give a feature file or --data SOURCE, not both")
        m, preds, shown, out = _evaluate_source(run_dir, source, out, force, skip_bad, quiet)
    else:
        if out is not None or force or skip_bad:
            raise click.UsageError("--out, --force and --skip-bad go with --data SOURCE")
        # start-up: loaded when the command runs, not by `featmlp --help`
        from ..runs.evaluate import run_feature_file, score_run

        m, preds = score_run(run_dir, features_file)
        shown = features_file if features_file is not None else run_feature_file(run_dir)[0]
    mistakes = confident_mistakes(preds, errors) if errors and preds is not None else []
    if as_json:
        extra = {"mistakes": [vars(x) for x in mistakes]} if errors else {}
        click.echo(json.dumps({**m, **extra}, indent=2))
        return
    click.echo(f"test accuracy {fmt(m['test_accuracy'])} on {m['n_test']} images ({printable(shown)})")
    if m["n_test"]:
        names = [printable(row["class"]) for row in m["per_class"]]  # --json keeps the real names
        width = max(map(len, names))
        click.echo(f"{'class':<{width}}  precision  recall     f1  support")
        for name, row in zip(names, m["per_class"]):
            click.echo(f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  "
                       f"{row['support']:7d}")
        click.echo(f"{'macro':<{width}}  {m['macro']['precision']:9.3f}  {m['macro']['recall']:6.3f}  "
                   f"{m['macro']['f1']:5.3f}")
    if errors:
        click.echo(f"{len(mistakes)} most confident mistake{'s' if len(mistakes) != 1 else ''} "
                   f"(probability  true -> predicted  image):")
        for x in mistakes:
            click.echo(f"{x.probability:.4f}  {printable(x.true_class)} -> {printable(x.predicted_class)}  "
                       f"{printable(x.name)}")
    if out is not None:
        click.echo(f"wrote {printable(out)}: metrics.json, predictions.csv, confusion.png, report.html")


def _evaluate_source(run_dir, source, out, force, skip_bad, quiet):
    """``featmlp evaluate RUN --data SOURCE``: the metrics, predictions, what was scored and where they went."""
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..progress import TqdmProgress
    from ..runs.score import evaluate_source
    from ._common import cli_storage_options, default_out

    out = out or default_out("evaluate")
    progress = TqdmProgress(unit="img", disable=quiet or None)
    m, preds = evaluate_source(run_dir, source, out, overwrite=force, progress=progress, skip_bad=skip_bad,
                               storage_options=cli_storage_options())
    progress.close()
    return m, preds, source, out


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path())  # a directory: an error line of its own
@click.option("--no-resize", is_flag=True,
              help="Keep each image's size instead of resizing it to the training images' size.")
@click.pass_context
def predict(ctx, run_dir, images, no_resize):
    """Classify image files with a saved model: one line per image, path<TAB>class<TAB>probability.

    Images are resized (bilinear) to the size of the images the model was trained on, so their
    features describe the same scale; the run records that size.

    In the output a backslash, tab, newline or carriage return in a file or class name is written
    as \\\\, \\t, \\n, \\r and any other control character as \\xNN (PostgreSQL COPY's text
    format), so each image is one line of three fields and nothing reaches the terminal raw. A
    file that cannot be read or classified gets one line 'error: <file>: <reason>' on stderr and
    the others are still classified; the exit status is 1 when any failed.
    """
    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..runs.bundle import load_bundle

    failed = 0
    for r in load_bundle(run_dir).iter_predict_images(images, resize=not no_resize):  # as each is known
        if r.error is not None:
            failed += 1
            click.echo(f"error: {printable(r.path, tsv=True)}: {printable(r.error)}", err=True)
        else:
            click.echo(f"{printable(r.path, tsv=True)}\t{printable(r.class_name, tsv=True)}\t{r.probability:.4f}")
    if failed:
        ctx.exit(1)
