"""Worker processes stop with their parent: Ctrl-C, ``kill`` (SIGTERM) and ``kill -9`` alike.

Each test starts ``featmlp sweep --workers 2`` or ``featmlp extract --workers 2`` in a
subprocess of its own session, waits until its two worker processes exist, signals the parent
(or its whole process group, as a terminal's Ctrl-C does), and checks within a bounded time
that no worker is left, that nothing printed a traceback, and (SIGINT, SIGTERM) that the
command answered with the resume line: exit status 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

psutil = pytest.importorskip("psutil")  # installed with distributed (the test extra)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")]

RESUME = "run the same command again to resume"
START_TIMEOUT = 90  # the workers of a loaded machine may take a while to appear (torch imports)
STOP_TIMEOUT = 10  # every process gone within this after the signal (it takes well under 2 s)


def _features(path: Path) -> Path:
    """A small feature file: 2 classes, 9 features, 200 + 40 rows."""
    from featmlp.tables.store import FeatureTable, save_features

    rng = np.random.default_rng(0)
    table = FeatureTable(rng.normal(size=(200, 9)).astype(np.float32), np.arange(200) % 2,
                         rng.normal(size=(40, 9)).astype(np.float32), np.arange(40) % 2,
                         tuple(f"f{i}" for i in range(9)), ("a", "b"))
    return save_features(path, table)


def _images(root: Path, n: int = 60, size: int = 64) -> Path:
    """root/cat and root/dog with n PNGs each."""
    rng = np.random.default_rng(1)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
            (root / c / f"{i:03d}.png").write_bytes(buf.getvalue())
    return root


# A sweep that keeps two workers busy far longer than any test waits: four configurations that
# train alone (dropout), many epochs each.
SWEEP = ["--workers", "2", "--dropout", "0.1,0.2,0.3,0.4", "--epochs", "100000", "-q"]
# Extraction of the bundled sample, enlarged so that it lasts (tens of seconds on two workers).
EXTRACT = ["sample", "--workers", "2", "--image-size", "96x96", "--chunk-size", "50", "-q"]


class Command:
    """``featmlp ARGS`` in a session of its own; its worker processes once they exist."""

    def __init__(self, args, cwd: Path):
        self.err_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
        self.err_file = open(self.err_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "featmlp.cli", *map(str, args)], cwd=cwd,
                                     stdout=subprocess.DEVNULL, stderr=self.err_file, start_new_session=True,
                                     env={**os.environ, "MPLBACKEND": "Agg"})
        self.parent = psutil.Process(self.proc.pid)
        self.workers: list = []

    def wait_for_workers(self, n: int = 2) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"it ended before its workers started: {self.stderr()}"
            try:
                self.workers = [p for p in self.parent.children(recursive=True)
                                if "spawn_main" in " ".join(p.cmdline())]
            except psutil.Error:
                self.workers = []
            if len(self.workers) >= n:
                return
            time.sleep(0.05)
        pytest.fail(f"no {n} workers within {START_TIMEOUT} s: {self.stderr()}")

    def signal(self, sig, *, group: bool = False) -> float:
        """Send ``sig`` to the parent (or its process group); when it was sent."""
        assert self.proc.poll() is None, f"it ended before the signal: {self.stderr()}"
        (os.killpg if group else os.kill)(self.proc.pid, sig)
        return time.monotonic()

    def alive_workers(self) -> list:
        alive = []
        for p in self.workers:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        return alive

    def wait_all_gone(self, since: float) -> tuple[int, float]:
        """(exit status, seconds from ``since`` until the parent and every worker were gone)."""
        deadline = since + STOP_TIMEOUT
        code = None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None and not self.alive_workers():
                return code, time.monotonic() - since
            time.sleep(0.02)
        alive = [p.pid for p in self.alive_workers()]
        pytest.fail(f"{STOP_TIMEOUT} s after the signal: exit status {code}, workers still alive {alive}; "
                    f"{self.stderr()}")

    def stderr(self) -> str:
        self.err_file.flush()
        return self.err_path.read_text()

    def cleanup(self) -> None:
        """End whatever of it is left (by pid: only the processes this test started)."""
        for p in [self.parent, *self.workers]:
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.err_file.close()


def _interrupted(cmd: Command, sig, *, group: bool = False, settle: float = 0.5):
    """Signal a command once its workers run; checks that everything stopped. (status, seconds, stderr)."""
    try:
        cmd.wait_for_workers()
        time.sleep(settle)  # the workers are at work
        code, seconds = cmd.wait_all_gone(cmd.signal(sig, group=group))
        time.sleep(0.3)  # what a dying worker might still print
        return code, seconds, cmd.stderr()
    finally:
        cmd.cleanup()


def _check_answer(sig, code: int, err: str) -> None:
    assert "Traceback" not in err and "Error" not in err, err
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
        assert "leaked semaphore" not in err, err
    else:
        assert code == (143 if sig == signal.SIGTERM else 130), err
        assert err.strip().splitlines()[-1].endswith(RESUME), err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"])
def test_sweep_workers_stop_with_the_parent(tmp_path, sig):
    features = _features(tmp_path / "f.npz")
    code, seconds, err = _interrupted(Command(["sweep", features, "--out", tmp_path / "sw", *SWEEP], tmp_path), sig)
    _check_answer(sig, code, err)
    assert seconds < STOP_TIMEOUT


def test_ctrl_c_on_a_terminal_reaches_every_process_and_only_the_parent_answers(tmp_path):
    """A terminal sends SIGINT to the whole foreground group: the workers ignore it, the parent stops them."""
    features = _features(tmp_path / "f.npz")
    code, seconds, err = _interrupted(Command(["sweep", features, "--out", tmp_path / "sw", *SWEEP], tmp_path),
                                      signal.SIGINT, group=True)
    _check_answer(signal.SIGINT, code, err)
    assert "KeyboardInterrupt" not in err and "SpawnProcess" not in err


def test_ctrl_c_while_the_workers_start(tmp_path):
    """SIGINT to the group as soon as the workers exist, before they have imported anything."""
    features = _features(tmp_path / "f.npz")
    code, _, err = _interrupted(Command(["sweep", features, "--out", tmp_path / "sw", *SWEEP], tmp_path),
                                signal.SIGINT, group=True, settle=0)
    _check_answer(signal.SIGINT, code, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"])
def test_extract_workers_stop_with_the_parent(tmp_path, sig):
    cmd = Command(["extract", *EXTRACT, "-o", tmp_path / "f.npz"], tmp_path)
    code, seconds, err = _interrupted(cmd, sig)
    _check_answer(sig, code, err)
    assert not (tmp_path / "f.npz").exists()


def test_an_interrupted_extraction_keeps_the_old_output_and_resumes(tmp_path):
    root = _images(tmp_path / "imgs")
    out = tmp_path / "f.npz"
    args = ["extract", root, "-o", out, "--workers", "2", "--chunk-size", "2", "--force", "-q"]
    first = Command(args, tmp_path)
    try:
        first.wait_for_workers()
        assert first.proc.wait(120) == 0, first.stderr()
    finally:
        first.cleanup()
    before = out.read_bytes()
    second = Command(args + ["--features", "hog"], tmp_path)  # another extraction to replace it
    code, _, err = _interrupted(second, signal.SIGTERM, settle=1.0)
    if code == 0:
        pytest.skip("the extraction ended before it was interrupted (a fast machine)")
    _check_answer(signal.SIGTERM, code, err)
    assert out.read_bytes() == before  # what existed before is intact
    again = subprocess.run([sys.executable, "-m", "featmlp.cli", *map(str, args), "--features", "hog"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with np.load(out) as f:
        assert f["X_train"].shape[0] + f["X_test"].shape[0] == 120
        assert "hog" in str(f["meta"])


def test_a_sweep_interrupted_by_sigterm_resumes(tmp_path):
    """SIGTERM once one configuration is saved, another still training: the same command again
    reads the saved one back and trains only the other."""
    import json

    from featmlp.tables.store import FeatureTable, save_features

    rng = np.random.default_rng(0)  # enough rows that 8 epochs of batches of 16 take a few seconds
    X = rng.normal(size=(4000, 9)).astype(np.float32)
    save_features(tmp_path / "f.npz", FeatureTable(X, np.arange(4000) % 2, X[:40], np.arange(40) % 2,
                                                   tuple(f"f{i}" for i in range(9)), ("a", "b")))
    out = tmp_path / "sw"
    args = ["sweep", tmp_path / "f.npz", "--out", out, "--workers", "2", "--dropout", "0.1",
            "--epochs", "1,8", "--batch-size", "16", "-q"]
    cmd = Command(args, tmp_path)
    try:
        cmd.wait_for_workers()
        progress, deadline = out / "progress.json", time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and cmd.proc.poll() is None:
            if progress.exists() and json.loads(progress.read_text())["finished"]:
                break
            time.sleep(0.05)
        if cmd.proc.poll() is not None:
            pytest.skip("the sweep ended before it was interrupted (a fast machine)")
        finished = json.loads(progress.read_text())["finished"]
        if len(finished) != 1:
            pytest.skip("both configurations ended before the signal")
        code, _, err = cmd.wait_all_gone(cmd.signal(signal.SIGTERM)) + (cmd.stderr(),)
    finally:
        cmd.cleanup()
    _check_answer(signal.SIGTERM, code, err)
    again = subprocess.run([sys.executable, "-m", "featmlp.cli", *map(str, args)], capture_output=True, text=True,
                           timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "sweep.json").read_text())["resumed"] == finished


def test_the_dask_local_cluster_stops_with_the_parent(tmp_path):
    pytest.importorskip("distributed")
    cmd = Command(["extract", *EXTRACT[:1], "--cluster", "local:2", *EXTRACT[3:], "-o", tmp_path / "d.features"],
                  tmp_path)
    code, seconds, err = _interrupted(cmd, signal.SIGTERM, settle=1.0)
    _check_answer(signal.SIGTERM, code, err)
