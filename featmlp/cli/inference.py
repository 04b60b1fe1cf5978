"""``featmlp evaluate | predict``: a saved model on a labelled feature table or new images."""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from pathlib import Path

import click

from .._outputs import PREDICTIONS_HEADER, identify
from .._text import printable
from ..errors import DataError
from ..progress import TqdmProgress
from ._common import cli_storage_options, storage_option
from .options import DescribedDefault, fmt
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
              cls=DescribedDefault, show_default="runs/evaluate-<time>",
              help="With --data: the new directory to write into; never the run.")
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

        try:
            m, preds = score_run(run_dir, features_file)
        except DataError as exc:
            if features_file is None:
                raise
            # start-up: loaded on this error only, not by `featmlp --help`
            from ..data import ARCHIVE_SUFFIXES

            local = Path(features_file)
            images = (local.is_dir() and identify(local)[0] is None) or local.name.lower().endswith(ARCHIVE_SUFFIXES)
            if not images:
                raise
            # an image folder or archive where a feature file goes: the user meant --data
            raise DataError(f"{exc}; to score the model on the images of a labelled source, give it as "
                            f"--data: featmlp evaluate {run_dir} --data {features_file}") from None
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
    from ..runs.score import evaluate_source
    from ._common import default_out

    out = out or default_out("evaluate")
    progress = TqdmProgress(unit="img", disable=quiet or None)
    m, preds = evaluate_source(run_dir, source, out, overwrite=force, progress=progress, skip_bad=skip_bad,
                               storage_options=cli_storage_options())
    progress.close()
    return m, preds, source, out


FORMATS = ("tsv", "csv", "jsonl")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option("--top-k", "top_k", default=1, show_default=True, type=click.IntRange(1),
              help="The K most probable classes of each image, each with its probability, most probable first.")
@click.option("--format", "fmt_", default="tsv", show_default=True, type=click.Choice(FORMATS),
              help="tsv: path<TAB>class<TAB>probability, then the next classes' pairs, no header; csv: the columns of a "
                   "run's predictions.csv but the true class, name,predicted_class,probability[,top1_class,"
                   "top1_probability ...], one row an image; jsonl: one JSON object an image, {\"name\", "
                   "\"predicted_class\", \"probability\"} and, with --top-k above 1, \"top\": "
                   "[{\"class\", \"probability\"} ...].")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Write the predictions to this file (built beside it, renamed into place once complete) "
                   "instead of the standard output. An existing file is replaced only with --force, and only when "
                   "it is a predictions file featmlp wrote.")
@click.option("--force", is_flag=True, help="Replace the predictions file featmlp wrote at -o.")
@click.option("--no-resize", is_flag=True,
              help="Keep each image's size instead of resizing it to the training images' size.")
@storage_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def predict(ctx, run_dir, sources, top_k, fmt_, output, force, no_resize, quiet):
    """Classify the images of files, folders, archives or URLs with a saved model: one line per image.

    A SOURCE is an image file, a folder (every image file under it, by its name's extension,
    in a sorted walk: a folder's files by name, then its subfolders; archives in it are read
    too), a .zip/.tar/.tar.gz archive or tar shard (its image members), or an fsspec URL to any
    of these or to a pattern of shards (s3://b/shard-{000..009}.tar). Images are named as given,
    FOLDER/relative/path, or ARCHIVE:member. They are read and classified a chunk at a time
    (memory does not grow with their number), with a progress bar on a terminal's stderr when
    the predictions go to a file or a pipe.

    Images are resized (bilinear) to the size of the images the model was trained on, so their
    features describe the same scale; the run records that size.

    In the tsv output a backslash, tab, newline or carriage return in a file or class name is
    written as \\\\, \\t, \\n, \\r and any other control character as \\xNN (PostgreSQL COPY's
    text format), so each image is one line and nothing reaches the terminal raw; csv and jsonl
    quote names as those formats do. An image that cannot be read or classified gets one line
    'error: <name>: <reason>' on stderr and the others are still classified; the exit status is
    1 when any failed.
    """
    import sys

    # start-up: loaded when the command runs, not by `featmlp --help`
    from .._outputs import check_output
    from ..runs.bundle import load_bundle

    if output is not None:  # before anything is read: what -o names may be written
        # never one of the files read; inside a folder read it may be (it is not an image)
        check_output(output, "predictions", force=force, option="-o",
                     sources=[s for s in sources if not os.path.isdir(s)])
    bundle = load_bundle(run_dir)
    if top_k > len(bundle.class_names):
        raise click.BadParameter(f"{top_k} is more than the {len(bundle.class_names)} classes the model knows",
                                 param_hint="'--top-k'")
    to_terminal = output is None and sys.stdout.isatty()  # the lines show the progress there
    progress = TqdmProgress(unit="img", disable=True if quiet or to_terminal else None)
    failed = 0
    with contextlib.ExitStack() as stack:
        if output is None:
            write = lambda line: click.echo(line.encode("utf-8", "backslashreplace").decode("utf-8"))  # noqa: E731
        else:
            # start-up: loaded when the command runs, not by `featmlp --help`
            from .._io import atomic_write

            f = stack.enter_context(atomic_write(output, "wb"))
            write = lambda line: f.write(line.encode("utf-8", "backslashreplace") + b"\n")  # noqa: E731
        if fmt_ == "csv":
            write(_csv_line(list(PREDICTIONS_HEADER) + ([f"top{k}_{what}" for k in range(1, top_k + 1)
                                                          for what in ("class", "probability")] if top_k > 1 else [])))
        predictions = bundle.iter_predict_images(sources, resize=not no_resize, top_k=top_k, progress=progress,
                                                 storage_options=cli_storage_options())
        with warnings.catch_warnings(record=True) as caught:  # the listing's (files left out): one line each
            warnings.simplefilter("always", UserWarning)
            first = next(predictions, None)
        for w in caught:
            progress.echo(f"warning: {printable(w.message)}")
        for r in itertools.chain([first] if first is not None else [], predictions):
            if r.error is not None:
                failed += 1
                progress.echo(f"error: {printable(r.path, tsv=True)}: {printable(r.error)}")  # above the bar
            else:
                write(_prediction_line(r, fmt_))
        progress.close()
    if failed:
        ctx.exit(1)


def _csv_line(fields) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    return buf.getvalue()


def _prediction_line(r, fmt_: str) -> str:
    """One image's line of predict's output in the format ``fmt_`` (see predict's --format)."""
    if fmt_ == "tsv":
        return "\t".join([printable(r.path, tsv=True)] + [f"{printable(c, tsv=True)}\t{p:.4f}" for c, p in r.top])
    if fmt_ == "csv":
        top = [v for c, p in r.top for v in (c, f"{p:.6f}")] if len(r.top) > 1 else []
        return _csv_line([r.path, r.class_name, f"{r.probability:.6f}"] + top)
    import json

    line = dict(zip(PREDICTIONS_HEADER, (r.path, r.class_name, round(r.probability, 6))))
    if len(r.top) > 1:
        line["top"] = [{"class": c, "probability": round(p, 6)} for c, p in r.top]
    return json.dumps(line, ensure_ascii=False)
