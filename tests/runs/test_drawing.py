"""Plots drawn by forked processes (featmlp._figures.drawing_in_background): the same files as
drawn here, written in the order asked, errors raised, processes gone after.

Processes are forked only while no other thread runs; a test suite's process has usually started
some (tqdm's monitor, a Dask client's), so the tests of the forked processes run in a fresh one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from featmlp._figures import draw, drawing_in_background, drawing_processes, wait_drawn
from featmlp.runs.plots import plot_confusion, plot_history

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2,
                                reason="drawing processes are forked on Linux with two cores or more")

HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_accuracy": 0.1 * e} for e in range(1, 6)]
CM = [[5, 1, 0], [2, 3, 1], [0, 0, 7]]
NAMES = ["cat", "dog", "frog"]


def _children() -> set[int]:
    psutil = pytest.importorskip("psutil")
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _fresh(test, tmp_path):
    """Run ``test(tmp_path)`` of this module in a new Python process (no thread but its own)."""
    code = textwrap.dedent(f"""
        import sys, pathlib
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import test_drawing
        test_drawing.{test.__name__}(pathlib.Path({str(tmp_path)!r}))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_plots_drawn_in_the_background_are_the_plots_drawn_here(tmp_path):
    _fresh(check_plots_drawn_in_the_background_are_the_plots_drawn_here, tmp_path)


def test_one_file_drawn_twice_keeps_the_last_drawing(tmp_path):
    _fresh(check_one_file_drawn_twice_keeps_the_last_drawing, tmp_path)


def test_a_plots_error_is_raised_when_waited_for(tmp_path):
    _fresh(check_a_plots_error_is_raised_when_waited_for, tmp_path)


def check_plots_drawn_in_the_background_are_the_plots_drawn_here(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    plot_history(HISTORY, here / "loss.png", log_scale=True)
    plot_confusion(CM, NAMES, here / "confusion.png")
    assert threading.active_count() == 1
    before = _children()
    with drawing_in_background(imports=("featmlp.runs.plots",)):
        assert drawing_processes() == 2
        workers = _children() - before
        assert len(workers) == 2  # forked at once, before any plot is asked for
        draw(there / "loss.png", plot_history, HISTORY, there / "loss.png", log_scale=True)
        draw(there / "confusion.png", plot_confusion, CM, NAMES, there / "confusion.png")
        wait_drawn()
        for name in ("loss.png", "confusion.png"):
            assert (there / name).read_bytes() == (here / name).read_bytes()
    assert drawing_processes() == 0
    assert not (workers & _children())  # the drawing processes ended with the block


def check_one_file_drawn_twice_keeps_the_last_drawing(tmp_path):
    expected = tmp_path / "expected.png"
    plot_history(HISTORY, expected)
    path = tmp_path / "loss.png"
    with drawing_in_background():
        assert drawing_processes() == 2
        draw(path, plot_history, HISTORY[:2], path)
        draw(path, plot_history, HISTORY, path)  # waits for the first: the files land in this order
    assert path.read_bytes() == expected.read_bytes()


def check_a_plots_error_is_raised_when_waited_for(tmp_path):
    assert threading.active_count() == 1
    with pytest.raises(ValueError, match="confusion matrix of shape"):
        with drawing_in_background():
            draw(tmp_path / "c.png", plot_confusion, CM, NAMES[:2], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
    assert drawing_processes() == 0


def test_no_fork_once_another_thread_runs(tmp_path):
    # a forked child of a threaded process can deadlock: then the plots are drawn here, at once
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        before = _children()
        with drawing_in_background():
            assert drawing_processes() == 0 and _children() == before
            draw(tmp_path / "loss.png", plot_history, HISTORY, tmp_path / "loss.png")
            assert (tmp_path / "loss.png").is_file()  # drawn before draw() returned
    finally:
        stop.set()
        thread.join()


def test_without_the_block_draw_draws_at_once(tmp_path):
    draw(tmp_path / "loss.png", plot_history, HISTORY, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
