"""``report.html``: one self-contained page for a run directory or a sweep directory.

The page needs nothing beside it: plots are embedded as ``data:image/png;base64`` URIs, the style
sheet is inline, and there are no scripts and no external links, so it can be mailed, attached to
a course page or opened offline. Every text that comes from a file (class names, settings, CSV
cells) is HTML-escaped.

- A run directory (``config.json`` + ``metrics.json``, see :mod:`featmlp.runs.results`): results,
  settings, data, loss curves, per-class precision/recall/F1, the confusion matrix and the test
  images (:mod:`featmlp.runs.gallery`: the most confident mistakes, the most confused pairs, each
  class's examples; bounded in size). Long lists (feature names) are shown as a count and a rule.
- An evaluation directory (``featmlp evaluate RUN --data SOURCE --out DIR``): the same for the
  images it scored.
- A sweep directory (``sweep.json`` and/or ``results.csv``, one run directory per
  configuration ``DIR/<name>/``): the results ranked by validation accuracy (test accuracy without
  a validation split: :func:`featmlp.runs.compare.ranked`), the overlaid loss
  curves, accuracy against learning rate, then one section per configuration.

Images already in the directory (``loss.png`` ...) are embedded as they are; missing ones are
drawn from the recorded numbers.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from pathlib import Path
from typing import Sequence

from featmlp import __version__
from featmlp._io import atomic_write
from featmlp._outputs import check_output
from featmlp.errors import DataError
from featmlp.runs.compare import (Run, differing_settings, format_cell, is_run_dir, ranked,
                                  read_run)
from featmlp.runs.gallery import GALLERY_CSS, gallery_html
from featmlp.runs.layout import (CONFUSION_PLOT, EVALUATION_FILE, LOSS_PLOT, METRICS_FILE, REPORT_FILE, RESULTS_FILE,
                                 SWEEP_ACCURACY_PLOT, SWEEP_FILE, SWEEP_LOSS_PLOT, read_json)
from featmlp.training.history import TRAIN_ACCURACY, TRAIN_LOSS, VAL_ACCURACY, VAL_LOSS

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ccc; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; max-width: 100%; }
/* Headers break after their underscores, configuration names too, and a word longer than its
   column (a path, a long name) anywhere ("anywhere", unlike "break-word", lets the column shrink
   below that word); other words and numbers stay whole. So a table fits the page's width
   instead of widening it. */
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
table.kv td, td.name { overflow-wrap: anywhere; }
td.name { min-width: 8em; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
/* The last resort for a table with more columns than the page has room for: it scrolls in its
   own box; the page keeps its width. */
div.scroll { overflow-x: auto; max-width: 100%; }
div.scroll > table { margin: 0; }
table.results { font-size: .8em; }
table.results td, table.results th { padding: .2em .35em; }
tr.diverged td { color: #a00; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.muted { color: #777; font-size: .85em; }
section.config { border-top: 1px solid #ddd; margin-top: 1.5em; }
"""


def write_report(directory: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 overwrite: bool = False) -> Path:
    """Write ``directory/report.html`` (or ``out``) for a run or a sweep directory; return its path.

    Parameters
    ----------
    directory : path
        A run directory (``config.json`` + ``metrics.json``) or a sweep directory
        (``sweep.json`` or ``results.csv``, with a run directory per configuration).
    out : path, optional
        Where to write it instead: a file, or a folder (an existing one, or a name ending in
        ``/``) to write ``report.html`` in; for a directory that cannot be written to. An
        existing file there is replaced only with ``overwrite`` and only when it is a report
        featmlp wrote (:func:`featmlp._outputs.check_output`).
    overwrite : bool
        Replace an existing report at ``out``. ``directory/report.html`` itself, featmlp's
        own, is always rewritten (a file of that name featmlp did not write is refused).

    Returns
    -------
    Path
        The report, written atomically (a reader never sees half a page).

    Raises
    ------
    DataError
        ``directory`` is neither a run nor a sweep directory, or its files cannot be read.

    Examples
    --------
    >>> write_report("runs/lecture")                               # doctest: +SKIP
    PosixPath('runs/lecture/report.html')
    """
    directory = Path(directory)
    if out is None:
        path, overwrite = directory / REPORT_FILE, True
    else:
        path = Path(out)
        if os.fspath(out).endswith(("/", os.sep)) or path.is_dir():
            path = path / REPORT_FILE
    check_output(path, "report", force=overwrite)
    page = render_report(directory)
    with atomic_write(path, "wb") as f:
        f.write(page.encode("utf-8"))
    return path


def render_report(directory: str | os.PathLike) -> str:
    """The HTML of :func:`write_report`, as a string (nothing is written)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory: pass a run or a sweep directory")
    if is_run_dir(directory):
        return _run_page(read_run(directory))
    if (directory / EVALUATION_FILE).is_file():  # featmlp evaluate --data: a run's test scores, no training
        run = Run(directory.resolve().name, directory, {"data": read_json(directory / EVALUATION_FILE)},
                  read_json(directory / METRICS_FILE))
        return _page(f"featmlp evaluation {run.name}", [f"<h1>featmlp evaluation: {_e(run.name)}</h1>",
                                                        _run_body(run, level=2)])
    if (directory / SWEEP_FILE).is_file() or (directory / RESULTS_FILE).is_file():
        return _sweep_page(directory)
    raise DataError(
        f"{directory} is neither a featmlp run directory (config.json + metrics.json) nor a "
        f"sweep directory (sweep.json or results.csv): pass a directory written by "
        f"'featmlp train', 'featmlp run' or 'featmlp sweep'"
    )


# --------------------------------------------------------------------------------------------
# A run
# --------------------------------------------------------------------------------------------

def _run_page(run: Run) -> str:
    body = [f"<h1>featmlp run: {_e(run.name)}</h1>",
            f'<p class="muted">{_e(run.path.resolve())}</p>',
            _run_body(run, level=2)]
    return _page(f"featmlp run {run.name}", body)


def _run_body(run: Run, level: int) -> str:
    """Results, settings, curves, per-class table and confusion matrix of one run."""
    h = f"h{level}"
    m = run.metrics
    history = run.history
    last = history[-1] if history else {}
    summary = [
        ("test accuracy", "test_accuracy", m.get("test_accuracy")),
        ("test samples", "n_test", m.get("n_test")),
        ("macro F1", "f1", (m.get("macro") or {}).get("f1")),
        ("weighted F1", "f1", (m.get("weighted") or {}).get("f1")),
        ("final train loss", "loss", last.get(TRAIN_LOSS)),
        ("final train accuracy", "train_accuracy", last.get(TRAIN_ACCURACY)),
        ("final validation loss", "loss", last.get(VAL_LOSS)),
        ("final validation accuracy", "val_accuracy", last.get(VAL_ACCURACY)),
        ("epochs run", "epochs", m.get("epochs_run", len(history))),
        ("best epoch (validation loss)", "epochs", m.get("best_epoch")),
        ("stop reason", "stop_reason", m.get("stop_reason")),
        ("diverged", "diverged", m.get("diverged")),
        ("training seconds", "seconds", m.get("train_seconds")),
        ("device", "device", m.get("device")),
    ]
    out = [f"<{h}>Results</{h}>",
           _key_value_table([(label, key, v) for label, key, v in summary
                             if v is not None or key in ("test_accuracy", "diverged")])]

    if "history" in m or history:
        out.append(f"<{h}>Loss curves</{h}>")
    if history:
        out.append(_img(_png_or_render(run.path / LOSS_PLOT, lambda p: _plot_history(history, p)),
                        f"loss per epoch of {run.name}"))
    elif "history" in m:
        out.append('<p class="muted">No epoch finished (the run diverged in its first '
                   "epoch): no curve to draw.</p>")

    per_class = m.get("per_class")
    if isinstance(per_class, list) and per_class:
        out.append(f"<{h}>Per-class scores (test set)</{h}>")
        out.append(_per_class_table(per_class, m.get("macro"), m.get("weighted")))
    cm = m.get("confusion_matrix")
    class_names = _class_names(run, per_class, cm)
    if cm and class_names:
        out.append(f"<{h}>Confusion matrix (test set; rows: true class, columns: predicted)</{h}>")
        out.append(_img(_png_or_render(run.path / CONFUSION_PLOT,
                                       lambda p: _plot_confusion(cm, class_names, p)),
                        f"confusion matrix of {run.name}"))
        out.append("<details><summary>as a table</summary>"
                   + _confusion_table(cm, class_names) + "</details>")
    out.append(gallery_html(run.path, level))

    train = run.config.get("train")
    if isinstance(train, dict):
        out.append(f"<{h}>Training settings</{h}>")
        out.append(_key_value_table([(k, k, v) for k, v in train.items()]))
    data = run.config.get("data")
    if isinstance(data, dict):
        out.append(f"<{h}>Data</{h}>")
        out.append(_key_value_table([(k, k, _collapsed(v)) for k, v in data.items()]))
    return "\n".join(out)


# A list longer than this is shown as its count, its first and last items (and its rule, when recorded).
LISTED = 20


def _collapsed(value):
    """A long list (14,400 feature names) as a count and its ends; a rule recorded in their place as its text."""
    if isinstance(value, dict) and "count" in value and "rule" in value:  # featmlp.runs.results.feature_names_record
        return f"{value['count']} names: {value['rule']}"
    if isinstance(value, list) and len(value) > LISTED:
        return f"{len(value)} items: {', '.join(map(str, value[:3]))}, ..., {value[-1]}"
    return value


def _class_names(run: Run, per_class, cm) -> list[str] | None:
    names = None
    data = run.config.get("data")
    if isinstance(data, dict) and isinstance(data.get("class_names"), list):
        names = [str(c) for c in data["class_names"]]
    elif isinstance(per_class, list):
        names = [str(r.get("class", i)) for i, r in enumerate(per_class) if isinstance(r, dict)]
    if names is None or not isinstance(cm, list) or len(cm) != len(names):
        return None
    return names


def _per_class_table(per_class: list, macro, weighted) -> str:
    keys = ("precision", "recall", "f1")
    rows = []
    for r in per_class:
        if isinstance(r, dict):
            rows.append([_td(r.get("class"))] + [_td(r.get(k), k) for k in keys]
                        + [_td(r.get("support"), "support")])
    for label, avg in (("macro average", macro), ("weighted average", weighted)):
        if isinstance(avg, dict):
            rows.append([f"<td><em>{label}</em></td>"] + [_td(avg.get(k), k) for k in keys]
                        + ["<td></td>"])
    return _table(["class", "precision", "recall", "F1", "support"], rows)


def _confusion_table(cm: list, names: Sequence[str]) -> str:
    rows = [[f"<th>{_e(name)}</th>"] + [_td(v, "count") for v in row]
            for name, row in zip(names, cm)]
    return _table(["true \\ predicted", *names], rows)


# --------------------------------------------------------------------------------------------
# A sweep
# --------------------------------------------------------------------------------------------

def _sweep_page(directory: Path) -> str:
    sweep = read_json(directory / SWEEP_FILE) if (directory / SWEEP_FILE).is_file() else None
    header, rows = _read_results(directory / RESULTS_FILE)
    names = ([r.get("name") or "" for r in rows] if rows and "name" in header
             else sorted(p.name for p in directory.iterdir() if is_run_dir(p)))
    # A name is a folder inside the sweep directory, never a path leading out of it.
    runs = [read_run(directory / n, n) if _is_plain_name(n) and is_run_dir(directory / n)
            else None for n in names]
    anchors = {n: f"config-{i}" for i, n in enumerate(names)}
    found = [r for r in runs if r is not None]

    if not rows:
        # No results.csv: the same columns from the run directories themselves.
        differing = differing_settings(found)
        header = ["name", *differing, "test_accuracy", "final_train_loss", "diverged", "seconds"]
        rows = [{"name": r.name, **{k: r.settings().get(k) for k in differing}, **r.results()}
                for r in found]
    column, ordered = ranked(rows)

    body = [f"<h1>featmlp sweep: {_e(directory.resolve().name)}</h1>",
            f'<p class="muted">{_e(directory.resolve())}; {len(names)} configuration(s), '
            f"{len(found)} run director{'y' if len(found) == 1 else 'ies'} found</p>"]
    body.append("<h2>Results (best validation accuracy first; the test split chose nothing)</h2>"
                if column == "val_accuracy" else "<h2>Results (best test accuracy first: no validation split)</h2>")
    table_rows = []
    for r in ordered:
        cells = []
        for c in header:
            value = r.get(c)
            if c == "name" and value in anchors and runs[names.index(value)] is not None:
                cells.append(f'<td class="name"><a href="#{anchors[value]}">{_breakable(value)}</a></td>')
            elif c == "name":
                cells.append(f'<td class="name">{_breakable(value or "")}</td>')
            else:
                # CSV cells are text: show numbers as the other tables do.
                cells.append(_td(_csv_value(value), c))
        table_rows.append((cells, _truthy(r.get("diverged"))))
    body.append('<div class="scroll">' + _table(header, [c for c, _ in table_rows],
                                               row_classes=["diverged" if d else "" for _, d in table_rows],
                                               cls="results") + "</div>")

    body.append("<h2>Loss curves</h2>")
    if found or _is_png(directory / SWEEP_LOSS_PLOT):
        body.append(_img(_png_or_render(directory / SWEEP_LOSS_PLOT,
                                        lambda p: _plot_loss_curves(found, p)),
                         "loss curves of every configuration"))
    body.append("<h2>Test accuracy against learning rate</h2>")
    if _is_png(directory / SWEEP_ACCURACY_PLOT) or any(_number(r.get("lr")) for r in rows):
        body.append(_img(_png_or_render(directory / SWEEP_ACCURACY_PLOT,
                                        lambda p: _plot_accuracy_vs_lr(rows, p)),
                         "test accuracy against learning rate"))
    if isinstance(sweep, dict):
        body.extend(_sweep_settings(sweep))

    body.append("<h2>Configurations</h2>")
    for name, run in zip(names, runs):
        body.append(f'<section class="config" id="{anchors[name]}"><h3>{_e(name)}</h3>')
        if run is None:
            body.append(f'<p class="muted">No run directory for {_e(name)} in this sweep.</p>')
        else:
            body.append(_run_body(run, level=4))
        body.append("</section>")
    return _page(f"featmlp sweep {directory.resolve().name}", body)


def _sweep_settings(sweep: dict) -> list[str]:
    """sweep.json as tables: what the sweep varied and its other facts; the training settings
    every configuration shares; then one row per configuration with those that differ."""
    configs = sweep.get("configs")
    trains = ([c.get("train") for c in configs] if isinstance(configs, list)
              and all(isinstance(c, dict) and isinstance(c.get("train"), dict) for c in configs) else None)
    facts = []
    for key, value in sweep.items():
        if key == "configs" and trains:
            continue
        if key == "names" and isinstance(value, list):
            facts.append(("configurations", "count", len(value)))
        elif key == "grid" and isinstance(value, dict):
            facts.extend((f"varied: {k}", k, _listing(k, v)) for k, v in value.items())
        elif isinstance(value, dict):
            facts.extend((f"{key}.{k}", k, _listing(k, v)) for k, v in _flatten(value).items())
        else:
            facts.append((key, key, _listing(key, value)))
    out = ["<h2>Sweep settings</h2>", _key_value_table(facts)]
    if trains:
        keys = list(dict.fromkeys(k for t in trains for k in t))
        shared = [k for k in keys if all(k in t and t[k] == trains[0][k] for t in trains)]
        differing = [k for k in keys if k not in shared]
        out.append("<h3>Training settings shared by every configuration</h3>")
        out.append(_key_value_table([(k, k, trains[0][k]) for k in shared]))
        columns = ["name", *(k for k in ("engine", "group") if any(k in c for c in configs)), *differing]
        rows = [[f'<td class="name">{_breakable(c.get("name", ""))}</td>']
                + [_td(c.get(k), k) for k in columns[1:len(columns) - len(differing)]]
                + [_td(t.get(k), k) for k in differing] for c, t in zip(configs, trains)]
        out.append("<h3>Training settings of each configuration (those that differ)</h3>")
        out.append('<div class="scroll">' + _table(columns, rows, cls="results") + "</div>")
    return out


def _listing(key: str, value):
    """A list of values as words that wrap: ``1, 10, 50``; layer lists as ``6 | 6,6``."""
    if isinstance(value, list) and not value:
        return "none"
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return " | ".join(format_cell(key, v) for v in value)
    if isinstance(value, list) and all(isinstance(v, (int, float, str, bool)) or v is None for v in value):
        return ", ".join(format_cell(key, v) for v in value)
    return value


def _read_results(path: Path) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        return [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [dict(r) for r in reader]
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return header, rows


def _csv_value(value):
    """A CSV cell as the value it stands for: a number, a bool, or the text."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    number = _number(value)
    return value if number is None else number


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --------------------------------------------------------------------------------------------
# Plots, as PNG bytes
# --------------------------------------------------------------------------------------------

def _is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == _PNG_MAGIC
    except OSError:
        return False


def _png_or_render(path: Path, render) -> bytes:
    """The PNG at ``path`` when it is one, else what ``render(tmp_path)`` draws."""
    if _is_png(path):
        return path.read_bytes()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="featmlp-report-") as tmp:
        out = Path(tmp) / "plot.png"
        render(out)
        return out.read_bytes()


def _plot_history(history, path):
    from featmlp.runs.plots import plot_history  # start-up: numpy and the plots, only for a missing PNG

    return plot_history(history, path)


def _plot_confusion(cm, names, path):
    from featmlp.runs.plots import plot_confusion  # start-up: numpy and the plots, only for a missing PNG

    return plot_confusion(cm, names, path)


def _plot_loss_curves(runs: list[Run], path) -> Path:
    """The sweep's loss curves from its run directories, drawn by the sweep's own renderer
    (:func:`featmlp.runs.plots.plot_loss_curves`)."""
    from featmlp.runs.plots import plot_loss_curves  # start-up: numpy and the plots, only for a missing PNG

    return plot_loss_curves([(r.name, r.history, bool(r.metrics.get("diverged"))) for r in runs], path)


def _plot_accuracy_vs_lr(rows: list[dict], path) -> Path:
    """Test accuracy against lr (log axis), one line per architecture (``hidden``), from results.csv's
    rows, drawn by the sweep's own renderer (:func:`featmlp.runs.plots.plot_accuracy_vs_lr`)."""
    lines: dict[str, list[tuple[float, float, bool]]] = {}
    for r in rows:
        lr, acc = _number(r.get("lr")), _number(r.get("test_accuracy"))
        if lr is None or lr <= 0 or acc is None:
            continue
        hidden = r.get("hidden")
        key = f"hidden {format_cell('hidden', hidden)}" if hidden is not None else "all"
        lines.setdefault(key, []).append((lr, acc, _truthy(r.get("diverged"))))
    from featmlp.runs.plots import plot_accuracy_vs_lr  # start-up: numpy and the plots, only for a missing PNG

    return plot_accuracy_vs_lr(lines, path)


# --------------------------------------------------------------------------------------------
# HTML pieces
# --------------------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}{GALLERY_CSS}</style>",
        "</head><body>",
        *body,
        f'<p class="muted">Written by featmlp {_e(__version__)}.</p>',
        "</body></html>",
        "",
    ])


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _td(value, key: str = "") -> str:
    if isinstance(value, (dict, list)) and not (
            isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value)):
        value = json.dumps(value)
    text = format_cell(key, value)
    numeric = _number(value) is not None and not isinstance(value, str)
    return f'<td class="num">{_e(text)}</td>' if numeric else f"<td>{_e(text)}</td>"


def _table(header: Sequence[str], rows: list[list[str]], row_classes: Sequence[str] = (),
           cls: str = "") -> str:
    head = "".join(f"<th>{_breakable(h)}</th>" for h in header)
    lines = [(f'<table class="{cls}">' if cls else "<table>") + f"<thead><tr>{head}</tr></thead><tbody>"]
    for i, cells in enumerate(rows):
        cls = row_classes[i] if i < len(row_classes) and row_classes[i] else ""
        lines.append((f'<tr class="{cls}">' if cls else "<tr>") + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _key_value_table(items) -> str:
    rows = [[f"<th>{_e(label)}</th>", _td(value, key)] for label, key, value in items]
    return _table(["name", "value"], rows, cls="kv")


def _breakable(text) -> str:
    """Escaped text that may break after its underscores (final_train_accuracy,
    lr0.01_h16_bs32), not inside its words."""
    return _e(text).replace("_", "_<wbr>")
