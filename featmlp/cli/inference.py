"""``featmlp evaluate | predict``: a saved model on a labelled feature table or new images."""

from __future__ import annotations

import click

from .._text import printable
from .options import fmt
from .training import FEATURES_METAVAR


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("features_file", metavar=f"[{FEATURES_METAVAR}]", required=False, type=click.Path())
@click.option("--json", "as_json", is_flag=True,
              help="Print the metrics as JSON, with the keys of the run's metrics.json (test_accuracy, n_test, "
                   "per_class, macro, weighted, confusion_matrix).")
def evaluate(run_dir, features_file, as_json):
    """Evaluate a saved model on the test split of a feature file (default: the run's own).

    The feature file may be a sharded table (DIR.features/): its test split is predicted a
    shard at a time."""
    import json

    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..runs.evaluate import evaluate_run, run_feature_file

    m = evaluate_run(run_dir, features_file)
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    shown = features_file if features_file is not None else run_feature_file(run_dir)[0]
    click.echo(f"test accuracy {fmt(m['test_accuracy'])} on {m['n_test']} images ({printable(shown)})")
    if not m["n_test"]:
        return
    names = [printable(row["class"]) for row in m["per_class"]]  # --json keeps the real names
    width = max(map(len, names))
    click.echo(f"{'class':<{width}}  precision  recall     f1  support")
    for name, row in zip(names, m["per_class"]):
        click.echo(f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  "
                   f"{row['support']:7d}")
    click.echo(f"{'macro':<{width}}  {m['macro']['precision']:9.3f}  {m['macro']['recall']:6.3f}  "
               f"{m['macro']['f1']:5.3f}")


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
