"""featmlp.runs.compare and featmlp.runs.report: tables, overlaid curves and report.html, on run
directories made with featmlp.runs.train_run and a sweep directory put together here."""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
import re

import pytest
from sklearn.datasets import make_classification

from featmlp.runs.compare import RESULT_COLUMNS, compare_runs, format_table, plot_comparison
from featmlp.errors import ConfigError, DataError
from featmlp.runs.report import render_report, write_report
from featmlp.runs import train_run
from featmlp.tables.store import FeatureTable
from featmlp.training import PRESETS, TrainConfig

EVIL = "<script>alert('x')</script>"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def table():
    X, y = make_classification(400, 9, n_informative=6, n_classes=3, random_state=0)
    return FeatureTable(X[:300], y[:300], X[300:], y[300:], tuple(f"f{i}" for i in range(9)),
                        ("ant", EVIL, "cow & calf"), {"features": "lecture"})


BASE = TrainConfig(hidden=(8,), epochs=4, batch_size=64, val_fraction=0.2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, table):
    """Three runs: two learning rates, a second architecture, one of them diverging."""
    root = tmp_path_factory.mktemp("runs")
    configs = {
        "lr1e-3": dataclasses.replace(BASE, lr=1e-3),
        "lr1e-2": dataclasses.replace(BASE, lr=1e-2),
        "deep-diverged": dataclasses.replace(PRESETS["lecture"], head="ce", hidden=(8, 8),
                                             lr=1e30, epochs=4, val_fraction=0.2),
    }
    return {name: train_run(table, config, root / name) for name, config in configs.items()}


def test_compare_runs_rows_and_differing_settings(runs):
    dirs = [r.out for r in runs.values()]
    rows, differing = compare_runs(dirs)
    assert [r["name"] for r in rows] == list(runs)
    assert differing[:2] == ["hidden", "optimizer"] and "lr" in differing
    assert "features" not in differing and "seed" not in differing
    for row, run in zip(rows, runs.values()):
        m = run.metrics
        assert row["test_accuracy"] == m["test_accuracy"]
        assert row["epochs"] == m["epochs_run"] and row["seconds"] == m["train_seconds"]
        assert row["diverged"] is m["diverged"]
        if m["history"]:
            assert row["final_train_loss"] == m["history"][-1]["train_loss"]
            assert row["final_val_loss"] == m["history"][-1]["val_loss"]
        assert set(RESULT_COLUMNS) <= set(row)
    assert rows[2]["diverged"] is True

    # two runs differing in lr only
    rows, differing = compare_runs(dirs[:2])
    assert differing == ["lr"]
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "lr", *RESULT_COLUMNS]
    assert lines[1].split()[:3] == ["lr1e-3", "0.001", f"{rows[0]['test_accuracy']:.4f}"]
    assert lines[2].split()[-1] == "no"  # diverged

    # one run: nothing differs
    assert compare_runs(dirs[:1])[1] == []


def test_format_table_chosen_columns_and_missing_values():
    rows = [{"name": "a", "hidden": [6, 6], "test_accuracy": None, "diverged": True}]
    assert format_table(rows, ["name", "hidden", "test_accuracy", "diverged"]).splitlines()[1] \
        .split() == ["a", "6,6", "-", "yes"]


def test_same_folder_names_are_told_apart_by_path(tmp_path, runs):
    import shutil

    other = tmp_path / "again" / "lr1e-3"
    shutil.copytree(runs["lr1e-3"].out, other)
    rows, _ = compare_runs([runs["lr1e-3"].out, other])
    assert len({r["name"] for r in rows}) == 2


def test_plot_comparison(tmp_path, runs):
    path = plot_comparison([r.out for r in runs.values()], tmp_path / "cmp.png", log_scale=True)
    assert path.read_bytes()[:8] == PNG


def test_not_a_run_directory_is_a_clear_data_error(tmp_path, runs):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty is not a featmlp run directory: it has no "
                                        r"config\.json or metrics\.json"):
        compare_runs([runs["lr1e-3"].out, tmp_path / "empty"])
    with pytest.raises(DataError, match="is not a directory"):
        plot_comparison([tmp_path / "nope"], tmp_path / "x.png")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    (tmp_path / "bad" / "metrics.json").write_text("{}")
    with pytest.raises(DataError, match="cannot read"):
        compare_runs([tmp_path / "bad"])
    with pytest.raises(ConfigError, match="no run directories"):  # an empty argument: a setting
        compare_runs([])
    with pytest.raises(DataError, match="neither a featmlp run directory"):
        write_report(tmp_path / "empty")


def _check_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    for attr in re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page):
        assert attr.startswith(("data:image/png;base64,", "#")), attr
    assert "<script" not in page.lower() and "<link" not in page.lower()
    # every embedded image decodes to a PNG
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert images
    for data in images:
        assert base64.b64decode(data)[:8] == PNG


def test_run_report(runs):
    run = runs["lr1e-2"]
    path = write_report(run.out)
    assert path == run.out / "report.html" and path.is_file()
    page = path.read_text(encoding="utf-8")
    _check_self_contained(page)
    assert page.count("data:image/png;base64,") == 2  # loss curves and confusion matrix
    m = json.loads((run.out / "metrics.json").read_text())
    assert f"{m['test_accuracy']:.4f}" in page
    assert f"{m['history'][-1]['train_loss']:.4g}" in page
    assert f"{m['history'][-1]['val_loss']:.4g}" in page
    for cls in m["per_class"]:
        for key in ("precision", "recall", "f1"):
            assert f"{cls[key]:.4f}" in page
        assert f'<td class="num">{cls["support"]}</td>' in page
    assert f"{m['macro']['f1']:.4f}" in page
    # class names from files are escaped, never markup
    assert EVIL not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "cow &amp; calf" in page
    # settings from config.json
    assert "<th>optimizer</th><td>adam</td>" in page and "<th>hidden</th>" in page
    # no file is left beside it
    assert not list(run.out.glob(".report.html.*"))


def test_run_report_draws_missing_plots_and_handles_no_epoch(tmp_path, runs):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(runs["lr1e-3"].out, d)
    (d / "loss.png").unlink()
    (d / "confusion.png").write_text("not a png")
    page = render_report(d)
    _check_self_contained(page)
    assert page.count("data:image/png;base64,") == 2

    diverged = write_report(runs["deep-diverged"].out).read_text(encoding="utf-8")
    _check_self_contained(diverged)
    assert "diverged" in diverged


def _sweep_dir(root, runs, with_images: bool):
    """A sweep directory as the sweep engine lays it out: results.csv, sweep.json, DIR/<name>/."""
    import shutil

    root.mkdir()
    fields = ["name", "lr", "hidden", "final_train_loss", "test_accuracy", "diverged", "seconds"]
    with open(root / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for name, run in runs.items():
            shutil.copytree(run.out, root / name)
            cfg = run.result.config
            h = run.metrics["history"]
            writer.writerow({"name": name, "lr": cfg.lr, "hidden": ",".join(map(str, cfg.hidden)),
                             "final_train_loss": h[-1]["train_loss"] if h else "",
                             "test_accuracy": run.metrics["test_accuracy"],
                             "diverged": run.metrics["diverged"],
                             "seconds": run.metrics["train_seconds"]})
        writer.writerow({"name": "../escape", "lr": 1.0, "hidden": "4", "test_accuracy": "",
                         "diverged": False})
    (root / "sweep.json").write_text(json.dumps({"lr": [1e-3, 1e-2], "note": EVIL}))
    if with_images:
        shutil.copy(runs["lr1e-3"].out / "loss.png", root / "loss.png")
        shutil.copy(runs["lr1e-3"].out / "loss.png", root / "accuracy_vs_lr.png")
    return root


@pytest.mark.parametrize("with_images", [True, False], ids=["sweep-plots", "drawn-here"])
def test_sweep_report(tmp_path, runs, with_images):
    d = _sweep_dir(tmp_path / "sweep", runs, with_images)
    page = write_report(d).read_text(encoding="utf-8")
    _check_self_contained(page)
    # overlaid losses, accuracy vs lr, and per configuration its loss and confusion plots
    # (the diverged one finished no epoch: confusion only)
    diverged_epochs = len(runs["deep-diverged"].metrics["history"])
    assert page.count("data:image/png;base64,") == 2 + 2 + 2 + (2 if diverged_epochs else 1)
    # results sorted by test accuracy, best first; names link to their sections
    accs = sorted(((r.metrics["test_accuracy"], n) for n, r in runs.items()), reverse=True)
    positions = [page.index(f'href="#config-{list(runs).index(n)}">{n}</a>') for _, n in accs]
    assert positions == sorted(positions)
    for name in runs:
        assert f'id="config-{list(runs).index(name)}"' in page
    for acc, _ in accs:
        assert f"{acc:.4f}" in page
    assert 'class="diverged"' in page
    # a name that would lead out of the directory is shown, not followed
    assert "No run directory for ../escape" in page
    assert EVIL not in page and "&lt;script&gt;" in page


def test_sweep_report_without_results_csv(tmp_path, runs):
    d = _sweep_dir(tmp_path / "sweep", runs, with_images=False)
    (d / "results.csv").unlink()
    page = render_report(d)
    _check_self_contained(page)
    for name in runs:
        assert f">{name}</a>" in page


# ------------------------------------------------------------------ a real sweep's page, in a browser

@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, table):
    """A sweep over four settings: a wide results table with long configuration names."""
    from featmlp.sweep import expand_grid, run_sweep

    out = tmp_path_factory.mktemp("sweep") / "s"
    configs = expand_grid(dataclasses.replace(BASE, val_fraction=0.0, epochs=2), lr=[1e-3, 1e-2],
                          weight_decay=[0.0, 1e-4], batch_size=[32, 64], schedule=["cosine", "onecycle"])
    run_sweep(table, configs, out)
    return out


def test_sweep_settings_are_tables_not_json(sweep_dir):
    page = render_report(sweep_dir)
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert "{&quot;" not in page and "[&quot;" not in page  # no JSON dump of the settings
    assert "<th>varied: lr</th><td>0.001, 0.01</td>" in page
    assert "<th>varied: schedule</th><td>cosine, onecycle</td>" in page
    assert f'<th>configurations</th><td class="num">{len(sweep["names"])}</td>' in page
    shared = page.split("Training settings shared by every configuration")[1].split("</table>")[0]
    assert "<th>optimizer</th><td>adam</td>" in shared and "<th>lr</th>" not in shared
    each = page.split("Training settings of each configuration")[1].split("</table>")[0]
    head = each.split("</thead>")[0]
    for column in ("name", "lr", "batch_<wbr>size", "weight_<wbr>decay", "schedule"):
        assert f"<th>{column}</th>" in head
    assert "optimizer" not in head
    assert each.count("<tr>") == 1 + len(sweep["configs"])


def _browser():
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "chromium-headless-shell", "headless_shell"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no headless Chromium here (apt-get install chromium) to render report.html in")


def _chromium(browser, tmp_path, *args):
    import subprocess

    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900", *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_sweep_report_fits_a_1200_px_page(tmp_path, sweep_dir):
    from PIL import Image

    browser = _browser()
    page = write_report(sweep_dir).read_text(encoding="utf-8")
    # Measured in the page by a script added to a copy (the report itself has none).
    measure = """<script>addEventListener("load", () => {
      const results = document.querySelector("table.results");
      document.body.dataset.m = JSON.stringify({width: innerWidth,
        page: document.documentElement.scrollWidth,
        results: results.getBoundingClientRect().width, room: results.parentElement.clientWidth});
    });</script>"""
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", measure + "</body>"), encoding="utf-8")
    dom = _chromium(browser, tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    m = json.loads(html_unescape(re.search(r'data-m="([^"]*)"', dom).group(1)))
    assert m["width"] == 1200
    assert m["page"] <= 1200, m          # no horizontal scrolling of the page
    assert m["results"] <= m["room"], m  # the results table fits without its scroll box

    shot = tmp_path / "shot.png"
    _chromium(browser, tmp_path, f"--screenshot={shot}", (sweep_dir / "report.html").as_uri())
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 900)
    # the page's right margin (outside the centred 1100 px column) is empty: nothing runs into it
    right = image.crop((1170, 0, 1200, 900))
    assert right.getextrema()[0] >= 250, "something is drawn in the right margin"
    assert image.crop((50, 150, 1150, 900)).getextrema()[0] < 100  # while the table itself is drawn


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_long_feature_name_lists_are_a_count_and_a_rule(tmp_path):
    # config.json and the report: 100 names are described, not listed; evaluation still checks them
    from featmlp.errors import DataError
    from featmlp.runs.evaluate import evaluate_run
    from featmlp.tables.store import save_features

    X, y = make_classification(120, 100, n_informative=6, n_classes=2, random_state=0)
    names = tuple(f"col{i}" for i in range(100))
    t = FeatureTable(X[:90], y[:90], X[90:], y[90:], names, ("a", "b"), {"features": "lecture"})
    save_features(tmp_path / "t.npz", t)
    out = tmp_path / "r"
    train_run(t, TrainConfig(hidden=(4,), epochs=1), out, data={"feature_file": str(tmp_path / "t.npz")})
    recorded = json.loads((out / "config.json").read_text())["data"]["feature_names"]
    assert recorded["count"] == 100 and recorded["first"] == ["col0", "col1", "col2"] and "rule" in recorded
    assert len((out / "config.json").read_text()) < 4000
    page = render_report(out)
    assert "100 names: " in page and "col50" not in page
    assert evaluate_run(out)["n_test"] == 30
    other = dataclasses.replace(t, feature_names=tuple(f"other{i}" for i in range(100)))
    save_features(tmp_path / "other.npz", other)
    with pytest.raises(DataError, match="feature columns are not the model's"):
        evaluate_run(out, tmp_path / "other.npz")


def test_a_sweeps_missing_loss_plot_is_redrawn_as_the_sweep_drew_it(sweep_dir, tmp_path):
    # One renderer (featmlp.runs.plots.plot_loss_curves): the report's redrawing of a deleted
    # loss.png is, pixel for pixel, the sweep's own (no configuration diverged, so the labels agree).
    import io
    import shutil

    import numpy as np
    from PIL import Image

    d = tmp_path / "s"
    shutil.copytree(sweep_dir, d)
    drawn = np.asarray(Image.open(d / "loss.png").convert("RGB"))
    (d / "loss.png").unlink()
    page = render_report(d)  # the redrawn plot is embedded in the page, the sweep left as it is
    data = re.search(r'<img alt="loss curves of every configuration" src="data:image/png;base64,([^"]+)"', page)[1]
    redrawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
    assert redrawn.shape == drawn.shape and np.array_equal(redrawn, drawn)
