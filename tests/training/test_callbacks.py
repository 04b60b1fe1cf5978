"""The one hook protocol (featmlp.progress.Callback): the same object hears train, lr_find and a sweep."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from featmlp.errors import ConfigError
from featmlp.training.lr_find import lr_find
from featmlp.progress import Callback, TqdmProgress
from featmlp.tables.store import FeatureTable
from featmlp.sweep import config_names, expand_grid, run_sweep
from featmlp.training import PRESETS, TrainConfig, train


def _data(n=120, seed=0):
    X = np.random.default_rng(seed).normal(size=(n, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def _table():
    X, y = _data(160)
    return FeatureTable(X[:120], y[:120], X[120:], y[120:], ("a", "b", "c"), ("no", "yes"))


class Recorder(Callback):
    """Writes down every call, with the length of the history it was shown at that moment."""

    def __init__(self, stop=None):
        self.calls = []
        self.stop = stop or (lambda name, record: False)

    def on_progress(self, desc, done, total):
        self.calls.append(("progress", desc, done, total))

    def on_train_begin(self, config):
        self.calls.append(("begin",))

    def on_epoch(self, record, history):
        assert history[-1] is record
        self.calls.append(("epoch", record["epoch"], len(history)))

    def on_config_epoch(self, name, record, history):
        assert history[-1] is record
        self.calls.append(("config_epoch", name, record["epoch"], len(history)))
        return self.stop(name, record)

    def on_train_end(self, history):
        self.calls.append(("end", len(history)))


def test_one_callback_hears_train_lr_find_and_a_sweep():
    X, y = _data()
    hook = Recorder()
    train(X, y, TrainConfig(hidden=(4,), epochs=3), callbacks=[hook])
    # Each epoch: its progress first, then the epoch (the order train told progress= and callbacks in).
    assert hook.calls == [("begin",),
                          ("progress", "train", 1, 3), ("epoch", 1, 1),
                          ("progress", "train", 2, 3), ("epoch", 2, 2),
                          ("progress", "train", 3, 3), ("epoch", 3, 3),
                          ("end", 3)]

    hook.calls.clear()
    found = lr_find(X, y, TrainConfig(hidden=(4,), batch_size=16), num_steps=8, callbacks=[hook])
    assert hook.calls == [("progress", "lr_find", i, 8) for i in range(1, len(found.lrs) + 1)]

    hook.calls.clear()
    # Two configurations trained together (stacked) and one alone (dropout), in this process.
    configs = expand_grid(PRESETS["lecture"], lr=[1.0, 10.0], epochs=[3]) + [
        TrainConfig(hidden=(4,), dropout=0.1, epochs=2, batch_size=32)]
    names = config_names(configs)
    sweep = run_sweep(_table(), configs, callbacks=[hook])
    epochs = [c for c in hook.calls if c[0] == "config_epoch"]
    for run in sweep:  # each configuration's epochs, in order, each with its history up to it
        assert [c[2:] for c in epochs if c[1] == run.name] == [(e, e) for e in range(1, len(run.history) + 1)]
    assert sorted({c[1] for c in epochs}) == sorted(names)
    # The sweep tells its own progress, not train()'s, and no run's begin or end.
    assert [c for c in hook.calls if c[0] != "config_epoch"] == [("progress", "sweep", i, 3) for i in (1, 2, 3)]


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["stacked", "alone"])
def test_a_sweep_callback_stops_the_configuration_it_names(dropout):
    configs = expand_grid(TrainConfig(hidden=(4,), optimizer="gd", lr=1.0, dropout=dropout, epochs=5),
                          lr=[1.0, 2.0])
    target = config_names(configs)[1]
    hook = Recorder(stop=lambda name, record: name == target and record["epoch"] == 2)
    sweep = run_sweep(_table(), configs, callbacks=[hook])
    assert {run.engine for run in sweep} == {"stacked" if dropout == 0 else "train"}
    assert [len(run.history) for run in sweep] == [5, 2]
    assert [run.result.stop_reason for run in sweep] == ["completed", "callback"]


def test_worker_configurations_are_told_each_record_with_its_history_so_far():
    configs = expand_grid(TrainConfig(hidden=(4,), dropout=0.1, epochs=3, batch_size=32), lr=[1e-3, 1e-2])
    hook = Recorder()
    sweep = run_sweep(_table(), configs, workers=2, callbacks=[hook])
    epochs = [c for c in hook.calls if c[0] == "config_epoch"]
    for run in sweep:
        assert [c[2:] for c in epochs if c[1] == run.name] == [(1, 1), (2, 2), (3, 3)]


def test_a_plain_function_in_a_sweep_acts_as_on_epoch():
    seen = []
    configs = expand_grid(PRESETS["lecture"], lr=[1.0, 10.0], epochs=[2])
    run_sweep(_table(), configs, callbacks=[lambda record, history: seen.append(record["epoch"])])
    assert sorted(seen) == [1, 1, 2, 2]


def test_the_deprecated_on_epoch_still_works_after_the_callbacks():
    order = []

    class First(Callback):
        def on_config_epoch(self, name, record, history):
            order.append(("callback", name, record["epoch"]))

    configs = expand_grid(PRESETS["lecture"], lr=[1.0], epochs=[2])
    with pytest.warns(DeprecationWarning, match="callbacks="):
        run_sweep(_table(), configs, callbacks=[First()],
                  on_epoch=lambda name, record: order.append(("on_epoch", name, record["epoch"])))
    name = config_names(configs)[0]
    assert order == [("callback", name, 1), ("on_epoch", name, 1), ("callback", name, 2), ("on_epoch", name, 2)]


def test_a_callback_given_as_progress_hears_only_progress():
    X, y = _data()
    hook = Recorder()
    train(X, y, TrainConfig(hidden=(4,), epochs=2), progress=hook)
    assert hook.calls == [("progress", "train", 1, 2), ("progress", "train", 2, 2)]


def test_tqdm_progress_is_a_callback_and_a_hook(monkeypatch):
    bars = []

    class Bar:  # stands in for tqdm: what the bars were told
        def __init__(self, total, desc, **kw):
            self.n, self.total, self.desc = 0, total, desc
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            pass

    monkeypatch.setattr("tqdm.auto.tqdm", Bar)
    shown = TqdmProgress(unit="epoch")
    assert isinstance(shown, Callback)
    X, y = _data()
    train(X, y, TrainConfig(hidden=(4,), epochs=3), callbacks=[shown])  # as a Callback
    shown("extract", 4, 10)  # as a progress hook, the data layer's form
    assert [(b.desc, b.n, b.total) for b in bars] == [("train", 3, 3), ("extract", 4, 10)]


def test_lr_find_refuses_a_plain_function_among_its_callbacks():
    X, y = _data()
    with pytest.raises(ConfigError, match="Callback"):
        lr_find(X, y, TrainConfig(hidden=(4,)), num_steps=5, callbacks=[lambda record, history: None])


def test_the_protocol_loads_without_training():
    import featmlp.training.callbacks

    assert featmlp.training.callbacks.Callback is Callback  # re-exported, one class
    # The data layer reports through featmlp.progress: importing it must not load training or torch.
    loaded = subprocess.run([sys.executable, "-c", "import sys, featmlp.progress; "
                             "print(sorted(m for m in sys.modules if m.startswith(('featmlp.training', 'torch'))))"],
                            check=True, capture_output=True, text=True).stdout.strip()
    assert loaded == "[]"


def test_a_listing_told_at_once_shows_no_rate_and_counts_files(monkeypatch):
    import io

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    shown = TqdmProgress(unit="img", disable=False)
    shown("read", 5000, 5000)  # load_dataset's listing of a URL or shards: known whole, nothing read one by one
    assert "5000/5000 file" in err.getvalue() and "/s" not in err.getvalue()
    err.seek(0), err.truncate()
    shown("read", 1024, 2048)  # a folder's headers read as it goes: a rate of files
    shown("read", 2048, 2048)
    assert "2048/2048" in err.getvalue() and "file/s" in err.getvalue() and "img/s" not in err.getvalue()


def test_a_line_while_a_kernel_compiles_and_none_when_it_is_cached(tmp_path):
    # numba's compile event, with an empty cache directory of its own: the first process compiles
    # the serial grayscale kernel and says so once, the second loads it from the disk cache silently
    code = ("import logging, numpy as np\n"
            "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
            "from featmlp.features.gray import to_gray\n"
            "print(to_gray(np.full((2, 4, 4, 3), 200, np.uint8), parallel=False).sum())\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                           check=True) for _ in range(2)]
    assert runs[0].stdout == runs[1].stdout == f"{200 * 32}\n"
    said = [line for line in runs[0].stderr.splitlines() if line.startswith("featmlp.compile: ")]
    assert said == ["featmlp.compile: compiling the numba kernel gray.rgb_to_gray_serial (once per install: cached "
                    "on disk for the next runs)"]
    assert "featmlp.compile" not in runs[1].stderr
    assert any((tmp_path / "cache").rglob("*.nbi"))  # it went to NUMBA_CACHE_DIR
