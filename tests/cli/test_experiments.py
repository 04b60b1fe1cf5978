"""lr-find, compare, report and --tensorboard from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.datasets import make_classification

from featmlp.tables.store import FeatureTable, save_features



@pytest.fixture
def feats(tmp_path):
    X, y = make_classification(500, 9, n_informative=6, n_classes=3, random_state=0)
    return save_features(tmp_path / "f.npz", FeatureTable(X[:400], y[:400], X[400:], y[400:],
                                                          tuple(f"f{i}" for i in range(9)), ("a", "b", "c"),
                                                          {"features": "lecture"}))


def test_lr_find_prints_suggestion_last_and_plots(tmp_path, run_cli, feats):
    code, out, err = run_cli(["lr-find", feats, "--steps", "40", "--batch-size", "32", "-q",
                              "--plot", tmp_path / "lr.png"])
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("suggested lr: ")
    lr = float(last.split(": ")[1])
    assert 1e-7 <= lr <= 10
    assert "rule: " in out
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_and_report(tmp_path, run_cli, feats):
    for name, lr in (("slow", "0.0001"), ("fast", "0.01")):
        code, _, err = run_cli(["train", feats, "--epochs", "3", "--lr", lr, "-q", "--out", tmp_path / name])
        assert code == 0, err
    code, out, _ = run_cli(["compare", tmp_path / "slow", tmp_path / "fast", "--plot", tmp_path / "c.png"])
    assert code == 0
    header, *rows = out.strip().splitlines()[:3]
    assert "lr" in header.split() and "test_accuracy" in header.split()
    assert rows[0].split()[0] == "slow" and rows[1].split()[0] == "fast"
    assert (tmp_path / "c.png").exists()

    code, out, _ = run_cli(["report", tmp_path / "fast"])
    assert code == 0
    html = (tmp_path / "fast" / "report.html").read_text()
    acc = json.loads((tmp_path / "fast" / "metrics.json").read_text())["test_accuracy"]
    assert "data:image/png;base64," in html and f"{acc:.4f}" in html

    code, _, err = run_cli(["compare", tmp_path / "nope"])
    assert code == 1 and "nope" in err


def test_tensorboard_logs(tmp_path, run_cli, feats):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, err = run_cli(["train", feats, "--epochs", "4", "--tensorboard", "-q", "--out", tmp_path / "t"])
    assert code == 0, err
    acc = EventAccumulator(str(tmp_path / "t" / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train_loss")] == [1, 2, 3, 4]


def test_sweep_command(tmp_path, run_cli, feats):
    import csv

    code, out, err = run_cli(["sweep", feats, "--preset", "lecture", "--lr", "1,10,1e30", "--head", "ce",
                              "--hidden", "6", "--hidden", "6,6", "--epochs", "5", "--out", tmp_path / "s"])
    assert code == 0, err
    with open(tmp_path / "s" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert {"lr", "hidden", "final_train_loss", "test_accuracy", "diverged", "seconds"} <= set(rows[0])
    assert sorted({r["hidden"] for r in rows}) == ["6", "6-6"]
    by_lr = {(float(r["lr"]), r["hidden"]): r for r in rows}
    assert by_lr[(1e30, "6")]["diverged"].lower() in ("true", "1", "yes")
    assert by_lr[(10.0, "6")]["diverged"].lower() in ("false", "0", "no")
    diverged_names = [r["name"] for r in rows if r["diverged"].lower() in ("true", "1", "yes")]
    assert len(diverged_names) == 2 and all(name in err for name in diverged_names)
    for name in ("loss.png", "accuracy_vs_lr.png", "sweep.json"):
        assert (tmp_path / "s" / name).is_file()
    for r in rows:
        assert (tmp_path / "s" / r["name"] / "metrics.json").is_file()
        # a run directory's own plots are drawn on request (--run-plots) or by the report
        assert not (tmp_path / "s" / r["name"] / "loss.png").exists()
        assert not (tmp_path / "s" / r["name"] / "confusion.png").exists()
    # the sweep directory gets a report like a run does, each configuration's plots drawn for it
    code, _, _ = run_cli(["report", tmp_path / "s"])
    assert code == 0 and (tmp_path / "s" / "report.html").is_file()
    page = (tmp_path / "s" / "report.html").read_text()
    # the sweep's two plots, then a loss curve and a confusion matrix per configuration
    assert page.count('src="data:image/png;base64,') == 2 + 2 * len(rows)
    assert not (tmp_path / "s" / rows[0]["name"] / "loss.png").exists()  # drawn into the page, not the run

    code, _, err = run_cli(["sweep", feats, "--preset", "lecture", "--lr", "1,10", "--epochs", "3", "--run-plots",
                            "-q", "--out", tmp_path / "p"])
    assert code == 0, err
    for name in ("lr1_h6", "lr10_h6"):
        for plot in ("loss.png", "confusion.png"):
            assert (tmp_path / "p" / name / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_bad_value(tmp_path, run_cli, feats):
    code, _, err = run_cli(["sweep", feats, "--lr", "1,x"])
    assert code == 2 and "x" in err


def test_sweep_on_a_given_device(tmp_path, run_cli, feats):
    code, out, err = run_cli(["sweep", feats, "--device", "cpu", "--lr", "0.01,0.1", "--epochs", "2",
                              "-q", "--out", tmp_path / "s"])
    assert code == 0, err
    sweep = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [c["train"]["device"] for c in sweep["configs"]] == ["cpu", "cpu"]
    assert "device" not in sweep["grid"]  # one value: it does not vary, nor name the runs
    assert sweep["names"] == ["lr0.01_h256-256", "lr0.1_h256-256"]


@pytest.mark.parametrize("command", ["lr-find", "compare"])
def test_plot_to_an_unknown_format_fails_first_in_one_line(tmp_path, run_cli, command):
    # The input does not exist either: the plot's suffix is checked before anything is read.
    target = tmp_path / ("missing.npz" if command == "lr-find" else "missing_run")
    code, out, err = run_cli([command, target, "--plot", tmp_path / "x.txt"])
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "x.txt" in err and ".png" in err and "missing" not in err
    assert not (tmp_path / "x.txt").exists()


def test_sweep_resumes_refuses_another_and_force_replaces(tmp_path, run_cli, feats):
    args = ["sweep", feats, "--preset", "lecture", "--epochs", "2", "--out", tmp_path / "s"]
    code, _, err = run_cli([*args, "--lr", "1,10"])
    assert code == 0, err
    code, out, err = run_cli([*args, "--lr", "1,10"])
    assert code == 0 and "resumed: 2 configuration(s)" in out
    code, out, err = run_cli([*args, "--lr", "1,50"])
    assert code == 1 and err.count("\n") == 1 and "other configurations" in err and "--force" in err
    code, out, err = run_cli([*args, "--lr", "1,50", "--force"])
    assert code == 0, err
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["names"] == ["lr1_h6", "lr50_h6"]


def test_sweep_shows_progress_unless_quiet(tmp_path, run_cli, feats, monkeypatch):
    import featmlp.progress

    class Shown(featmlp.progress.TqdmProgress):  # a bar even though stderr is no terminal here
        def __init__(self, unit="it", disable=None):
            super().__init__(unit, disable=disable or False)

    monkeypatch.setattr(featmlp.progress, "TqdmProgress", Shown)
    # dropout: each configuration trains alone, one after another
    args = ["sweep", feats, "--dropout", "0.1,0.2,0.3", "--hidden", "4", "--epochs", "1"]
    code, _, err = run_cli([*args, "--out", tmp_path / "s"])
    assert code == 0, err
    assert "sweep" in err and "3/3" in err and "config" in err
    code, _, err = run_cli([*args, "-q", "--out", tmp_path / "q"])
    assert code == 0 and err == ""


@pytest.mark.parametrize("command, kind, name", [("lr-find", "lr-find", "lr_find.png"),
                                                 ("compare", "compare", "compare.png")])
def test_plots_go_into_a_named_folder_not_the_working_directory(tmp_path, run_cli, feats, monkeypatch,
                                                                  command, kind, name):
    if command == "lr-find":
        args = ["lr-find", feats, "--steps", "20", "-q"]
    else:
        for run in ("a", "b"):
            assert run_cli(["train", feats, "--epochs", "2", "-q", "--out", tmp_path / run])[0] == 0
        args = ["compare", tmp_path / "a", tmp_path / "b"]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = run_cli(args)
    assert code == 0, err
    (folder,) = (work / "runs").iterdir()  # runs/<kind>-<time>, and nothing else in the working directory
    assert [p.name for p in work.iterdir()] == ["runs"] and folder.name.startswith(f"{kind}-")
    assert [p.name for p in folder.iterdir()] == [name]
    assert f"{Path('runs') / folder.name / name}" in out  # said where

    code, out, err = run_cli([*args, "--out", tmp_path / "mine"])
    assert code == 0, err
    assert (tmp_path / "mine" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(tmp_path / "mine" / name) in out
    code, _, err = run_cli([*args, "--out", tmp_path / "x", "--plot", tmp_path / "y.png"])
    assert code == 2 and "not both" in err and not (tmp_path / "x").exists() and not (tmp_path / "y.png").exists()


@pytest.mark.parametrize("args, column", [([], "val_accuracy"), (["--val-fraction", "0"], "test_accuracy")])
def test_sweep_ranks_by_validation_accuracy_when_it_has_a_split(tmp_path, run_cli, feats, args, column):
    import csv

    import numpy as np

    out = tmp_path / "s"
    code, stdout, err = run_cli(["sweep", feats, "--lr", "1e-4,1e-3,1e-2,1e-1", "--hidden", "8", "--epochs", "3",
                                 "-q", "--out", out, *args])
    assert code == 0, err
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert (column == "val_accuracy") == ("val_accuracy" in rows[0])
    values = np.array([float(r[column]) for r in rows])
    expected = [rows[i]["name"] for i in np.argsort(-values, kind="stable")]  # best first, ties in order
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("name"))
    assert [line.split()[0] for line in lines[header + 1:header + 1 + len(rows)]] == expected
    said = "ranked by validation accuracy" if column == "val_accuracy" else "ranked by test accuracy"
    assert said in stdout
    code, _, err = run_cli(["report", out])
    assert code == 0, err
    page = (out / "report.html").read_text()
    results = page[page.index("<h2>Results"):]
    assert ("best validation accuracy first" if column == "val_accuracy" else "best test accuracy first") in \
        page[page.index("<h2>Results"):results.index("</h2>") + page.index("<h2>Results")]
    positions = [results.index(f'href="#config-{[r["name"] for r in rows].index(name)}"') for name in expected]
    assert positions == sorted(positions)
