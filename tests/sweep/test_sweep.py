"""featmlp.sweep against featmlp.training.train, configuration by configuration.

``train()`` is the reference: it is tested against plain PyTorch loops (tests/training/test_loop.py),
and a stacked sweep must end each configuration where ``train()`` alone ends it, up to float
rounding (batched products sum in another order).
"""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from featmlp.errors import ConfigError
from featmlp.model.arrays import ArrayMLP
from featmlp.tables.store import FeatureTable
from featmlp.sweep import config_names, expand_grid, run_sweep
from featmlp.training import PRESETS, TrainConfig, train

N_CLASSES = 4


@pytest.fixture(scope="module")
def table():
    X, y = make_classification(360, 9, n_informative=5, n_redundant=0, n_classes=N_CLASSES,
                               n_clusters_per_class=1, random_state=0)
    return FeatureTable(X[:300], y[:300], X[300:], y[300:], tuple(f"f{i}" for i in range(9)),
                        tuple("abcd"))


def _params(model):
    if isinstance(model, ArrayMLP):  # the lecture's gradient descent, trained in numpy
        return torch.cat([torch.from_numpy(v.reshape(-1)) for v in model.state_dict().values()])
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.fixture
def stacked_engine(monkeypatch):
    """Lecture groups on the stacked engine (and its fused kernel) instead of numpy's, however small."""
    import featmlp.sweep._run

    monkeypatch.setattr(featmlp.sweep._run, "ARRAYS_GROUP_ROWS", 0)


def _assert_same_as_train(table, run, rtol=1e-5, weight_atol=1e-6):
    ref = train(table.X_train, table.y_train, run.config, n_classes=N_CLASSES)
    assert (run.diverged, run.result.stop_reason, run.result.best_epoch) == \
        (ref.diverged, ref.stop_reason, ref.best_epoch), run.name
    assert len(run.history) == len(ref.history), run.name
    for ours, theirs in zip(run.history, ref.history):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            if key != "seconds":
                assert ours[key] == pytest.approx(theirs[key], rel=rtol, abs=1e-7), (run.name, key)
    torch.testing.assert_close(_params(run.result.model), _params(ref.model), rtol=rtol, atol=weight_atol)
    assert not getattr(run.result.model, "training", False)
    np.testing.assert_array_equal(run.result.predict(table.X_test), ref.predict(table.X_test))


GRIDS = {
    # The lecture: full-batch GD, softmax + MSE, minmax features; two architectures.
    "lecture": (PRESETS["lecture"], dict(lr=[1, 10, 30], hidden=[(6,), (6, 6)])),
    # The notebook's literal gradient scale, per configuration, with a schedule.
    "lecture_batch_size": (dataclasses.replace(PRESETS["lecture"], epochs=8, schedule="cosine"),
                           dict(lr=[0.005, 0.02], lecture_batch_size=[None, 64])),
    "sgd": (TrainConfig(hidden=(16,), optimizer="sgd", epochs=4, batch_size=32,
                        schedule="onecycle"),
            dict(lr=[0.01, 0.1], momentum=[0.0, 0.9], weight_decay=[0.0, 1e-3])),
    "adam_validation": (TrainConfig(hidden=(16, 8), optimizer="adam", epochs=4, batch_size=64,
                                    val_fraction=0.2),
                        dict(lr=[1e-3, 1e-2], weight_decay=[0.0, 1e-3])),
    "adamw_weighted": (TrainConfig(hidden=(12,), activation="gelu", head="mse",
                                   optimizer="adamw", epochs=3, batch_size=50,
                                   class_weight="balanced"),
                       dict(lr=[1e-3, 1e-2], weight_decay=[0.0, 1e-2])),
    # A step budget per configuration: 300 rows in batches of 64 are 5 steps an epoch, so 0, 10 and 15
    # steps are 6, 2 and 3 epochs, each schedule spanning its own.
    "max_steps": (TrainConfig(hidden=(16,), optimizer="adam", epochs=6, batch_size=64),
                  dict(max_steps=[0, 10, 15], lr=[1e-3, 1e-2])),
    # Full-batch GD ignores the order of samples: different seeds (initial weights) stack.
    "gd_seeds_tanh": (TrainConfig(hidden=(8,), activation="tanh", optimizer="gd", epochs=5,
                                  schedule="none", class_weight=(1.0, 2.0, 0.5, 1.0)),
                      dict(lr=[0.3, 1.0], seed=[0, 1])),
}


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_stacked_configurations_end_as_train_alone(table, grid, stacked_engine):
    base, values = GRIDS[grid]
    sweep = run_sweep(table, expand_grid(base, **values))
    assert all(run.engine == "stacked" for run in sweep)
    # lr 30 on softmax + MSE amplifies float32 rounding (~1e-7 after one epoch) about tenfold
    # over 20 epochs, in any summation order: the fused kernel ends ~2e-6 from train(), the
    # torch stacked path ~3e-6 with another seed. Histories keep the 1e-5 relative tolerance.
    weight_atol = 1e-5 if grid == "lecture" else 1e-6
    for run in sweep:
        _assert_same_as_train(table, run, weight_atol=weight_atol)


def test_a_small_lecture_sweep_trains_in_numpy_as_train_alone(table):
    # The lecture's gradient descent on a small table: each configuration is train()'s run in
    # numpy (featmlp.training.engines.arrays), no torch imported for it.
    base, values = GRIDS["lecture"]
    sweep = run_sweep(table, expand_grid(base, **values))
    assert all(run.engine == "train" and isinstance(run.result.model, ArrayMLP) for run in sweep)
    for run in sweep:
        _assert_same_as_train(table, run, weight_atol=1e-5)


def test_lecture_sweep_takes_the_fused_kernel(table, stacked_engine):
    # Full-batch ReLU groups on the CPU run in featmlp.training.engines.fused; here with several
    # 256-sample blocks, a partial one, and chunks on both threads.
    from featmlp.training.engines import stacked as _stacked

    assert _stacked._uses_fused(PRESETS["lecture"])
    assert not _stacked._uses_fused(dataclasses.replace(PRESETS["lecture"], activation="tanh"))
    X = np.concatenate([table.X_train] * 3)
    y = np.concatenate([table.y_train] * 3)
    big = FeatureTable(X, y, table.X_test, table.y_test, table.feature_names, table.class_names)
    sweep = run_sweep(big, expand_grid(dataclasses.replace(PRESETS["lecture"], epochs=5),
                                       lr=[1.0, 10.0], head=["mse", "ce"]))
    for run in sweep:
        # The kernel sums in float64, train() in float32: at lr 10 five full-batch steps carry
        # float32 rounding to ~2e-5 of a weight (numba 0.68 / numpy 2.4), hence 1e-4 here.
        _assert_same_as_train(big, run, rtol=1e-4, weight_atol=1e-5)


def test_full_batch_gradient_summed_over_chunks(table, monkeypatch):
    # Full-batch epochs run in chunks of samples (the 300 here fit one): force ~40-sample
    # chunks, of two sizes, and a validation split.
    from featmlp.training.engines import stacked as _stacked

    monkeypatch.setattr(_stacked, "_CHUNK_ELEMENTS", 40 * 2 * 6)
    monkeypatch.setattr(_stacked, "_MIN_CHUNK", 1)
    # tanh: ReLU full-batch groups take the fused kernel instead of the torch chunks
    base = dataclasses.replace(PRESETS["lecture"], epochs=6, val_fraction=0.1, activation="tanh")
    sweep = run_sweep(table, expand_grid(base, lr=[2.0, 5.0], head=["mse", "ce"]))
    assert [run.engine for run in sweep] == ["stacked"] * 4
    for run in sweep:
        _assert_same_as_train(table, run)


def test_configurations_with_different_epochs_share_a_group(table):
    configs = expand_grid(dataclasses.replace(PRESETS["default"], hidden=(8,), batch_size=64),
                          epochs=[2, 5], lr=[1e-3, 3e-3])
    sweep = run_sweep(table, configs)
    assert [run.engine for run in sweep] == ["stacked"] * 4
    assert [len(run.history) for run in sweep] == [2, 2, 5, 5]
    for run in sweep:
        _assert_same_as_train(table, run)


def test_a_diverging_configuration_stops_alone(table):
    configs = expand_grid(TrainConfig(hidden=(8,), head="ce", optimizer="gd", epochs=6,
                                      schedule="none"), lr=[0.5, 1e30, 2.0])
    sweep = run_sweep(table, configs)
    good, bad, other = sweep
    assert bad.diverged and bad.result.stop_reason == "diverged"
    assert bad.diverged_epoch == len(bad.history) + 1 <= 3
    assert all(math.isfinite(r["train_loss"]) for r in bad.history)
    assert torch.isfinite(_params(bad.result.model)).all()
    for run in (good, other):
        assert not run.diverged and len(run.history) == 6
    for run in sweep:
        _assert_same_as_train(table, run)


def test_fallback_configurations_train_alone_as_train_does(table):
    # Dropout needs autograd per network: train() itself, here one after another.
    configs = expand_grid(TrainConfig(hidden=(8,), dropout=0.2, epochs=2, batch_size=64),
                          lr=[1e-3, 1e-2])
    configs.append(TrainConfig(hidden=(8,), optimizer="sgd", epochs=2, batch_size=64))
    sweep = run_sweep(table, configs)
    assert [run.engine for run in sweep] == ["train"] * 3
    for run in sweep:
        _assert_same_as_train(table, run, rtol=0)


def test_fallback_in_worker_processes(table):
    configs = [TrainConfig(hidden=(8,), dropout=0.1, epochs=2, batch_size=64, lr=lr)
               for lr in (1e-3, 1e-2)]
    seen = []
    sweep = run_sweep(table, configs, workers=2, on_epoch=lambda name, r: seen.append(name))
    assert sorted(seen) == sorted(config_names(configs) * 2)
    for run in sweep:
        _assert_same_as_train(table, run, rtol=0)


def test_on_epoch_can_stop_one_configuration(table):
    configs = expand_grid(PRESETS["lecture"], lr=[1.0, 10.0], epochs=[5])
    stop = lambda name, record: name == "lr10_h6" and record["epoch"] == 2  # noqa: E731
    progress = []
    sweep = run_sweep(table, configs, on_epoch=stop, progress=lambda *a: progress.append(a))
    assert progress == [("sweep", 1, 2), ("sweep", 2, 2)]
    assert [len(run.history) for run in sweep] == [5, 2]
    assert [run.result.stop_reason for run in sweep] == ["completed", "callback"]


def test_sweep_directory(table, tmp_path):
    configs = expand_grid(TrainConfig(hidden=(8,), head="ce", optimizer="gd", epochs=4,
                                      schedule="none"), lr=[1.0, 1e30], hidden=[(8,), (8, 8)])
    sweep = run_sweep(table, configs, tmp_path / "sweep", log_scale=True)
    with open(tmp_path / "sweep" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["lr1_h8", "lr1_h8-8", "lr1e+30_h8", "lr1e+30_h8-8"]
    for column in ("lr", "hidden", "final_train_loss", "test_accuracy", "diverged", "seconds"):
        assert column in rows[0]
    assert [r["hidden"] for r in rows] == ["8", "8-8", "8", "8-8"]
    assert [r["diverged"] for r in rows] == ["False", "False", "True", "True"]
    for row, run in zip(rows, sweep):
        assert float(row["lr"]) == run.config.lr
        assert float(row["test_accuracy"]) == pytest.approx(
            np.mean(run.result.predict(table.X_test) == table.y_test))
        metrics = json.loads((tmp_path / "sweep" / run.name / "metrics.json").read_text())
        assert metrics["diverged"] == run.diverged
        assert metrics["test_accuracy"] == pytest.approx(run.test_accuracy)
        assert (tmp_path / "sweep" / run.name / "config.json").exists()
        assert (tmp_path / "sweep" / run.name / "model.safetensors").exists()
    for name in ("loss.png", "accuracy_vs_lr.png"):
        assert (tmp_path / "sweep" / name).read_bytes()[:4] == b"\x89PNG"
    meta = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert meta["names"] == sweep.names
    assert meta["grid"] == {"hidden": [[8], [8, 8]], "lr": [1.0, 1e30]}


def test_expand_grid_is_the_cartesian_product():
    configs = expand_grid(PRESETS["lecture"], lr=[1, 10, 50, 500, 5000], hidden=[(6,), [6, 6], 4])
    assert len(configs) == 15
    assert [(c.lr, c.hidden) for c in configs[:4]] == [(1.0, (6,)), (1.0, (6, 6)), (1.0, (4,)),
                                                       (10.0, (6,))]
    assert all(dataclasses.replace(c, lr=10.0, hidden=(6,)) == PRESETS["lecture"]
               for c in configs)
    names = config_names(configs)
    assert names[:3] == ["lr1_h6", "lr1_h6-6", "lr1_h4"] and len(set(names)) == 15


@pytest.mark.parametrize("values, words", [
    (dict(lr=[10, -1]), ["lr", "-1"]),
    (dict(hidden=[(6,), (0,)]), ["hidden", "(0,)"]),
    (dict(optimizer=["gd", "rmsprop"]), ["optimizer", "rmsprop"]),
    (dict(learning_rate=[1]), ["learning_rate"]),
    (dict(lr=[]), ["lr", "non-empty"]),
    (dict(lr=0.1), ["lr", "list"]),
    (dict(lecture_batch_size=[64], optimizer=["gd", "adam"]), ["lecture_batch_size", "adam"]),
])
def test_expand_grid_rejects_bad_values(values, words):
    with pytest.raises(ConfigError) as err:
        expand_grid(PRESETS["lecture"], **values)
    for word in words:
        assert word in str(err.value)


def test_run_sweep_checks_its_arguments(table):
    with pytest.raises(ConfigError, match="at least one"):
        run_sweep(table, [])
    with pytest.raises(ConfigError, match="workers"):
        run_sweep(table, [PRESETS["lecture"]], workers=0)
    with pytest.raises(ConfigError, match="lr"):
        run_sweep(table, [dataclasses.replace(PRESETS["lecture"], lr=-1.0)])


def test_sweep_leaves_the_global_random_state_alone(table):
    before = torch.get_rng_state()
    run_sweep(table, expand_grid(PRESETS["lecture"], lr=[1, 10], epochs=[2]))
    assert torch.equal(before, torch.get_rng_state())


# A sweep killed (SIGKILL) once all configurations but the last finished: three of two kinds
# (a stacked pair, one trained alone) and a last one, alone, that waits until killed.
_KILLED_SWEEP = """
import json, sys, time
from featmlp.tables.store import load_features
from featmlp.sweep import config_names, run_sweep
from featmlp.training import TrainConfig

table = load_features(sys.argv[1])
configs = [TrainConfig.from_dict(d) for d in json.load(open(sys.argv[2]))]
last = config_names(configs)[-1]

def on_epoch(name, record):
    if name == last:
        time.sleep(600)

run_sweep(table, configs, sys.argv[3], on_epoch=on_epoch)
"""


def _resumable_configs():
    # tanh: a stacked pair (the lecture's ReLU pair, this small, trains in numpy one by one)
    pair = expand_grid(dataclasses.replace(PRESETS["lecture"], epochs=5, activation="tanh"), lr=[1, 10])
    alone = expand_grid(TrainConfig(hidden=(16,), dropout=0.1, optimizer="adam", epochs=3,
                                    batch_size=64), lr=[1e-3, 1e-2])
    return pair + alone


def test_a_killed_sweep_resumes_where_it_stopped(table, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from featmlp.tables.store import save_features

    configs = _resumable_configs()
    names = config_names(configs)
    feats = save_features(tmp_path / "f.npz", table)
    (tmp_path / "configs.json").write_text(json.dumps([c.to_dict() for c in configs]))
    (tmp_path / "killed.py").write_text(_KILLED_SWEEP)
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "killed.py"), str(feats),
                             str(tmp_path / "configs.json"), str(out)])
    try:
        deadline = time.monotonic() + 120
        finished = []
        while len(finished) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                finished = json.loads((out / "progress.json").read_text())["finished"]
            except (OSError, ValueError, KeyError):
                pass
        assert sorted(finished) == sorted(names[:3]), "the sweep did not get to its last configuration"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "results.csv").exists()  # killed before the end
    saved = {n: {f: ((out / n / f).stat().st_mtime_ns, (out / n / f).read_bytes())
                 for f in ("model.safetensors", "metrics.json", "config.json")} for n in names[:3]}
    # what a kill while writing leaves: atomic_write's temporary files, ours; not the user's
    strays = [out / ".results.csv.abcd1234.part", out / ".progress.json.x_y9z0w1.part",
              out / names[3] / ".metrics.json.0o2kq9ab.part"]
    for p in strays:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    (out / ".keep").write_text("")

    trained = []
    resumed = run_sweep(table, configs, out, on_epoch=lambda name, record: trained.append(name), run_plots=True)
    assert resumed.resumed == tuple(names[:3])
    assert set(trained) == {names[3]}
    for n, files in saved.items():
        for f, (mtime, data) in files.items():
            assert (out / n / f).stat().st_mtime_ns == mtime and (out / n / f).read_bytes() == data
    assert not any(p.exists() for p in strays) and (out / ".keep").exists()
    assert [run.engine for run in resumed] == ["stacked", "stacked", "train", "train"]
    for name in ("results.csv", "loss.png", "accuracy_vs_lr.png", "sweep.json"):
        assert (out / name).is_file()
    for n in names:  # each run directory whole, plots included (run_plots: the resumed ones' drawn now)
        assert (out / n / "loss.png").is_file() and (out / n / "confusion.png").is_file()

    # the same table as a sweep that was never interrupted (training time aside)
    clean = run_sweep(table, configs)
    with open(out / "results.csv", newline="") as f:
        assert [r["name"] for r in csv.DictReader(f)] == names
    ours, theirs = resumed.table(), clean.table()
    for row in ours + theirs:
        row.pop("seconds")
    assert ours == theirs
    assert [run.test_accuracy for run in resumed] == [run.test_accuracy for run in clean]
    for a, b in zip(resumed, clean):
        np.testing.assert_array_equal(a.result.predict(table.X_test), b.result.predict(table.X_test))
        assert a.history == [dict(r, seconds=a_r["seconds"]) for r, a_r in zip(b.history, a.history)]


def test_another_sweep_into_a_sweep_directory_is_refused_unless_forced(table, tmp_path):
    configs = expand_grid(dataclasses.replace(PRESETS["lecture"], epochs=2), lr=[1, 10])
    out = tmp_path / "sweep"
    run_sweep(table, configs, out)
    before = (out / "results.csv").read_text()
    other = expand_grid(dataclasses.replace(PRESETS["lecture"], epochs=2), lr=[1, 50])
    with pytest.raises(ConfigError, match="other configurations.*--force"):
        run_sweep(table, other, out)
    shifted = dataclasses.replace(table, X_train=table.X_train + 1.0)
    with pytest.raises(ConfigError, match="other data"):
        run_sweep(shifted, configs, out)
    assert (out / "results.csv").read_text() == before  # refused before touching anything

    # The same sweep again trains nothing and writes the same table.
    trained = []
    again = run_sweep(table, configs, out, on_epoch=lambda name, record: trained.append(name))
    assert trained == [] and again.resumed == ("lr1_h6", "lr10_h6")
    assert (out / "results.csv").read_text() == before

    forced = run_sweep(table, other, out, force=True)
    assert forced.resumed == () and not (out / "lr10_h6").exists()  # the old sweep's own run, gone
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["lr1_h6", "lr50_h6"]
    assert json.loads((out / "sweep.json").read_text())["names"] == ["lr1_h6", "lr50_h6"]

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    from featmlp.errors import DataError

    for force in (False, True):  # not a featmlp sweep: refused, --force or not
        with pytest.raises(DataError, match="did not write.*not a featmlp sweep directory"):
            run_sweep(table, configs, foreign, force=force)
    assert [p.name for p in foreign.iterdir()] == ["todo.txt"] and (foreign / "todo.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(run_sweep(table, configs, empty)) == 2  # an empty folder is fine


def test_a_second_sweep_into_the_same_directory_is_refused(table, tmp_path, lock_holder):
    from featmlp.errors import DataError

    out = tmp_path / "sweep"
    holder = lock_holder(tmp_path / ".sweep.lock")  # as a sweep or run writing into it holds
    configs = expand_grid(PRESETS["lecture"], lr=[1, 10], epochs=[2])
    with pytest.raises(DataError, match=f"another featmlp sweep or run is writing {out} \\(pid {holder.pid}\\)"):
        run_sweep(table, configs, out)
    assert not out.exists()
    holder.kill()
    holder.wait()
    assert run_sweep(table, configs, out).names == config_names(configs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]


def test_val_accuracy_is_that_of_the_weights_kept(table):
    from featmlp.training.setup import validation_indices

    base = dataclasses.replace(PRESETS["default"], hidden=(8,), epochs=15, lr=0.05, schedule="none",
                               val_fraction=0.2)
    sweep = run_sweep(table, [base, dataclasses.replace(base, patience=2)])
    _, val_rows = validation_indices(table.y_train, 0.2, base.seed)
    for run in sweep:
        kept = run.result.best_epoch if run.config.patience else run.history[-1]["epoch"]
        assert run.val_accuracy == next(r for r in run.history if r["epoch"] == kept)["val_accuracy"]
        # the network the run keeps scores that on the held-out rows
        predicted = run.result.predict(table.X_train[val_rows])
        assert run.val_accuracy == pytest.approx(np.mean(predicted == table.y_train[val_rows]))
    assert [row["val_accuracy"] for row in sweep.table()] == [run.val_accuracy for run in sweep]


def test_the_fused_kernel_is_compiled_before_the_first_epoch_is_timed(table, monkeypatch, stacked_engine):
    from featmlp.training.engines import fused

    calls = []
    compile_for, epoch = fused.compile_for, fused.epoch
    monkeypatch.setattr(fused, "compile_for", lambda *a: (calls.append("compile"), compile_for(*a))[1])

    class Epoch:  # the kernel, telling when it runs
        def __call__(self, *args):
            calls.append("epoch")
            return epoch(*args)

        def compile(self, signature):
            return epoch.compile(signature)

    monkeypatch.setattr(fused, "epoch", Epoch())
    sweep = run_sweep(table, expand_grid(dataclasses.replace(PRESETS["lecture"], epochs=3), lr=[1.0, 10.0]))
    assert calls == ["compile", "epoch", "epoch", "epoch"] and {run.engine for run in sweep} == {"stacked"}
