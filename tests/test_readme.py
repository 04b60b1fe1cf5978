"""The README's Python examples run as written, on the bundled sample, and repeat."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_the_examples_checked_here():
    blocks = python_blocks()
    assert len(blocks) == 4
    assert sum("KMeansFeatures" in b for b in blocks) == 1
    assert sum("confident_mistakes" in b for b in blocks) == 1


@pytest.mark.parametrize("index", range(4))
def test_python_example_runs_and_repeats(tmp_path, run_cli, monkeypatch, index):
    block = python_blocks()[index]
    if "KMeansFeatures" in block:
        pytest.skip("the kmeans Pipeline example takes ~75 s (run by hand: 0.64)")
    monkeypatch.chdir(tmp_path)
    if "feats.npz" in block:  # made by the README's `featmlp extract -o feats.npz` just before
        assert run_cli(["extract", "-o", "feats.npz", "-q"])[0] == 0
    if "runs/sample" in block:  # the loop: the README's `featmlp run --out runs/sample` just before
        _the_loops_inputs(run_cli)
    first, again = {}, {}
    exec(compile(block, f"README.md python block {index}", "exec"), first)
    if "confident_mistakes" in block:
        # what the block scored, against the predictions it wrote, counted here
        import csv

        with open("runs/sample-on-new/predictions.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == first["metrics"]["n_test"] == 8
        assert first["metrics"]["test_accuracy"] == pytest.approx(
            sum(r["true_class"] == r["predicted_class"] for r in rows) / len(rows))
    if "FeatMLPClassifier" in block:  # it trains: a second run gives the same model
        exec(compile(block, f"README.md python block {index}", "exec"), again)
        def curve(clf):  # the history without its timings
            return [{k: v for k, v in record.items() if k != "seconds"} for record in clf.history_]

        assert curve(first["clf"]) == curve(again["clf"])
        assert first["clf"].score(first["t"].X_test, first["t"].y_test) == \
            again["clf"].score(again["t"].X_test, again["t"].y_test)


def _the_loops_inputs(run_cli):
    """The run, the new labelled folder new/<class>/ and the folder of photos photos/ the loop's
    example reads: 4 test images of 2 classes of the bundled sample, written as PNG files."""
    from PIL import Image

    from featmlp.data import load_dataset

    assert run_cli(["run", "--out", "runs/sample", "-q"])[0] == 0
    ds = load_dataset("sample")
    labels = list(ds.test_labels)
    for c in (0, 1):
        rows = [i for i, y in enumerate(labels) if y == c][:4]
        for i in rows:
            name = f"{ds.class_names[c]}/{i}.png"
            for root in ("new", "photos"):
                (Path(root) / name).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(ds.test_images[i]).save(Path(root) / name)
