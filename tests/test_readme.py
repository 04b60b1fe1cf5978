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
    assert len(blocks) == 3
    assert sum("KMeansFeatures" in b for b in blocks) == 1


@pytest.mark.parametrize("index", range(3))
def test_python_example_runs_and_repeats(tmp_path, run_cli, monkeypatch, index):
    block = python_blocks()[index]
    if "KMeansFeatures" in block:
        pytest.skip("the kmeans Pipeline example takes ~75 s (run by hand: 0.64)")
    monkeypatch.chdir(tmp_path)
    if "feats.npz" in block:  # made by the README's `featmlp extract -o feats.npz` just before
        assert run_cli(["extract", "-o", "feats.npz", "-q"])[0] == 0
    first, again = {}, {}
    exec(compile(block, f"README.md python block {index}", "exec"), first)
    if "FeatMLPClassifier" in block:  # it trains: a second run gives the same model
        exec(compile(block, f"README.md python block {index}", "exec"), again)
        def curve(clf):  # the history without its timings
            return [{k: v for k, v in record.items() if k != "seconds"} for record in clf.history_]

        assert curve(first["clf"]) == curve(again["clf"])
        assert first["clf"].score(first["t"].X_test, first["t"].y_test) == \
            again["clf"].score(again["t"].X_test, again["t"].y_test)
