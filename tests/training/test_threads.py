"""The CPU thread policy of training (featmlp.training.training_threads and its inputs).

Pure functions of sizes, the user's override and the measured load; no timings here (those are
in benchmarks/bench_threads.py).
"""

import os

import numpy as np
import pytest
import torch

from featmlp.errors import ConfigError
from featmlp.training import (THREADS_ENV, TrainConfig, idle_cores, threads_override, train,
                           training_threads)

LECTURE = 50_000 * (9 * 6 + 6 * 10)            # full batch: every row in the one step
DEFAULT = 256 * (9 * 256 + 256 * 256 + 256 * 10)  # 9 -> 256 -> 256 -> 10 at batch 256: 18M
KMEANS = 256 * (14_400 * 256 + 256 * 2048 + 2048 * 10)


@pytest.mark.parametrize("work, available, idle, expected", [
    (LECTURE, 2, None, 1),      # small steps: one thread, quiet or not
    (LECTURE, 2, 2.0, 1),
    (256 * (9 * 64 + 64 * 10), 16, 16.0, 1),
    (DEFAULT, 2, None, 2),      # load unknown: every thread torch has
    (DEFAULT, 2, 1.95, 2),      # quiet
    (DEFAULT, 2, 1.05, 1),      # another process holds a core
    (DEFAULT, 2, 0.0, 1),       # never fewer than one
    (KMEANS, 2, 1.8, 2),        # 0.2 of a core used elsewhere: still both
    (KMEANS, 8, 5.3, 5),        # as many as the idle cores
    (KMEANS, 4, 8.0, 4),        # at most what torch has
    (KMEANS, 1, 2.0, 1),
])
def test_training_threads(work, available, idle, expected):
    assert training_threads(work, available, idle_cores=idle) == expected


def test_the_override_wins():
    assert training_threads(LECTURE, 2, override=2) == 2
    assert training_threads(KMEANS, 2, override=1, idle_cores=2.0) == 1
    assert training_threads(KMEANS, 2, override=6) == 6


def test_threads_override_reads_the_environment(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_override() is None
    monkeypatch.setenv(THREADS_ENV, " 3 ")
    assert threads_override() == 3
    monkeypatch.setenv(THREADS_ENV, "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torch applied it at start: its count is kept
    assert threads_override() == torch.get_num_threads()
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ConfigError, match=f"{THREADS_ENV}={bad!r}"):
            threads_override()


def test_idle_cores_is_a_share_of_the_cores():
    idle = idle_cores(0.05)
    if idle is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= idle <= os.cpu_count() + 0.5


def _threads_seen(monkeypatch, value, hidden=(4,)):
    if value is None:
        monkeypatch.delenv(THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(THREADS_ENV, value)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)), np.arange(64) % 2
    seen = []
    before = torch.get_num_threads()
    train(X, y, TrainConfig(hidden=hidden, epochs=2, device="cpu"),
          callbacks=[lambda record, history: seen.append(torch.get_num_threads())])
    assert torch.get_num_threads() == before  # restored
    return seen


def test_train_follows_the_policy_and_the_override(monkeypatch):
    assert _threads_seen(monkeypatch, None) == [1, 1]  # a small network: one thread
    assert _threads_seen(monkeypatch, "2") == [2, 2]   # the user's word, even for it
    with pytest.raises(ConfigError, match=THREADS_ENV):
        _threads_seen(monkeypatch, "zero")
