"""Training out of core (featmlp.training.engines.streamed): a sharded table streamed from disk trains as
the same table in memory does, with the same (shard-blocked) batch order, without ever being
read whole.

References: ``train`` on ``np.asarray`` of the table with ``blocks=shard_rows`` (the in-memory
loop, itself checked against plain torch in test_loop.py), and numpy's own column statistics for
the scaler.
"""

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from featmlp.errors import ConfigError, DataError
from featmlp.model import Scaler
from featmlp.tables.sharded import ShardedArray
from featmlp.tables.store import FeatureTable, load_features, save_features, save_sharded
from featmlp.training import PRESETS, TrainConfig, check_training, train
from featmlp.training.engines.streamed import blocked_permutation

# Uneven shards: the last one short, and more than one batch per shard.
SHARD_ROWS = 70
N_TRAIN, N_TEST, N_FEATURES = 311, 57, 8


def _table(n_train=N_TRAIN, n_features=N_FEATURES, seed=0):
    X, y = make_classification(n_train + N_TEST, n_features, n_informative=5, n_redundant=0, n_classes=3,
                               n_clusters_per_class=1, random_state=seed)
    X = (X * np.arange(1, n_features + 1) + 3).astype(np.float32)  # columns of unequal spread and offset
    return FeatureTable(X[:n_train], y[:n_train], X[n_train:], y[n_train:],
                        tuple(f"f{i}" for i in range(n_features)), ("a", "b", "c"), {"features": "lecture"})


@pytest.fixture
def sharded(tmp_path):
    return load_features(save_sharded(tmp_path / "t.features", _table(), shard_rows=SHARD_ROWS))


def _params(result):
    return torch.cat([p.detach().reshape(-1) for p in result.model.parameters()])


def _same_run(disk, memory, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(_params(disk), _params(memory), rtol=rtol, atol=atol)
    assert len(disk.history) == len(memory.history)
    for a, b in zip(disk.history, memory.history):
        for key in set(a) - {"seconds"}:
            assert a[key] == pytest.approx(b[key], rel=rtol, abs=atol), key
    np.testing.assert_allclose(disk.scaler.offset, memory.scaler.offset, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(disk.scaler.scale, memory.scaler.scale, rtol=1e-6)


def _both(sharded, config, **kw):
    X = sharded.X_train
    disk = train(X, sharded.y_train, config, out_of_core=True, **kw)
    memory = train(np.asarray(X), sharded.y_train, config, blocks=X.shard_rows, **kw)
    return disk, memory


def test_the_table_is_sharded_unevenly(sharded):
    assert sharded.X_train.shard_rows.tolist() == [70, 70, 70, 70, 31]


@pytest.mark.parametrize("config", [
    dataclasses.replace(PRESETS["lecture"], epochs=6),
    TrainConfig(hidden=(9, 7), activation="relu", optimizer="gd", lr=0.5, epochs=6, scaler="standard"),
], ids=["lecture", "relu-2-layers"])
def test_full_batch_gd_streamed_equals_in_memory(sharded, config):
    disk, memory = _both(sharded, config)
    _same_run(disk, memory)
    # gd's step does not depend on the order: the plain in-memory run (no blocks) is the same too
    plain = train(np.asarray(sharded.X_train), sharded.y_train, config)
    _same_run(disk, plain)


@pytest.mark.parametrize("extra", [
    {},
    {"dropout": 0.3},
    {"val_fraction": 0.2, "patience": 2},
    {"class_weight": "balanced", "bottleneck": 4},
    {"batch_norm": True, "schedule": "cosine"},
], ids=["plain", "dropout", "validation", "balanced", "batch-norm"])
def test_minibatch_adam_streamed_equals_in_memory_in_the_same_order(sharded, extra):
    config = TrainConfig(hidden=(16,), optimizer="adam", lr=0.01, epochs=4, batch_size=32, seed=2, **extra)
    disk, memory = _both(sharded, config)
    _same_run(disk, memory, rtol=1e-4, atol=1e-5)
    assert disk.best_epoch == memory.best_epoch and disk.stop_reason == memory.stop_reason


def test_flips_read_mirror_images_from_the_same_shards(sharded):
    mirror = np.arange(N_FEATURES)[::-1].copy()
    config = TrainConfig(hidden=(16,), epochs=3, batch_size=32, scaler="global", flip=True, test_flip=True)
    disk, memory = _both(sharded, config, mirror=mirror)
    _same_run(disk, memory, rtol=1e-4, atol=1e-5)
    gd = TrainConfig(hidden=(8,), optimizer="gd", lr=0.5, epochs=3, scaler="minmax", flip=True)
    _same_run(*_both(sharded, gd, mirror=mirror))


def test_blocked_order_visits_each_shard_in_one_run_of_batches():
    block_of = np.repeat([0, 1, 2, 3], [5, 0, 7, 3])
    perm = blocked_permutation(block_of, torch.Generator().manual_seed(1)).numpy()
    assert sorted(perm) == list(range(15))
    runs = [block_of[perm][0]] + [b for a, b in zip(block_of[perm], block_of[perm][1:]) if a != b]
    assert sorted(runs) == [0, 2, 3]  # each block once: its rows consecutive
    again = blocked_permutation(block_of, torch.Generator().manual_seed(1)).numpy()
    assert (perm == again).all()


def test_default_in_memory_order_is_untouched(sharded):
    # A small sharded table is read into memory and trained exactly as the array would be.
    config = TrainConfig(hidden=(8,), epochs=2, batch_size=32)
    a = train(sharded.X_train, sharded.y_train, config)
    b = train(np.asarray(sharded.X_train), sharded.y_train, config)
    assert torch.equal(_params(a), _params(b))


@pytest.mark.parametrize("kind", ["standard", "minmax", "global", "none"])
@pytest.mark.parametrize("with_mirror", [False, True])
def test_streamed_scaler_equals_numpy_statistics(sharded, kind, with_mirror):
    X = np.asarray(sharded.X_train).astype(np.float64)
    mirror = np.roll(np.arange(N_FEATURES), 3) if with_mirror else None
    both = np.concatenate([X, X[:, mirror]]) if with_mirror else X
    expected = {"standard": (both.mean(0), both.std(0)),
                "minmax": (both.min(0), both.max(0) - both.min(0)),
                "global": (both.mean(0), np.full(N_FEATURES, np.sqrt(np.mean(both.var(0))))),
                "none": (np.zeros(N_FEATURES), np.ones(N_FEATURES))}[kind]
    streamed = Scaler.fit(sharded.X_train, kind, mirror=mirror)
    np.testing.assert_allclose(streamed.offset, expected[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(streamed.scale, expected[1], rtol=1e-6)
    in_memory = Scaler.fit(np.asarray(sharded.X_train), kind, mirror=mirror)
    np.testing.assert_allclose(streamed.offset, in_memory.offset, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(streamed.scale, in_memory.scale, rtol=1e-6)


def test_streamed_scaler_of_some_rows(sharded):
    rows = np.sort(np.random.default_rng(0).choice(N_TRAIN, 100, replace=False))
    X = np.asarray(sharded.X_train).astype(np.float64)[rows]
    s = Scaler.fit(sharded.X_train, "standard", rows=rows)
    np.testing.assert_allclose(s.offset, X.mean(0), rtol=1e-6)
    np.testing.assert_allclose(s.scale, X.std(0), rtol=1e-6)


@pytest.fixture
def no_whole_reads(monkeypatch):
    """Fail on any read of a whole ShardedArray; count the shards mapped at once."""
    import weakref

    def whole(self, *a, **k):
        raise AssertionError("the sharded table was read whole")

    monkeypatch.setattr(ShardedArray, "__array__", whole)
    original = ShardedArray.shard
    state = {"open": 0, "peak": 0, "calls": 0}

    def closed():
        state["open"] -= 1

    def shard(self, i):
        X = original(self, i)
        state["calls"] += 1
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        weakref.finalize(X, closed)
        return X

    monkeypatch.setattr(ShardedArray, "shard", shard)
    return state


def test_a_nan_in_one_shard_is_refused_without_reading_the_table(tmp_path, no_whole_reads):
    table = _table()
    X = table.X_train.copy()
    X[150, 3] = np.nan  # in the third shard
    sharded = load_features(save_sharded(tmp_path / "t.features", dataclasses.replace(table, X_train=X),
                                         shard_rows=SHARD_ROWS))
    with pytest.raises(DataError, match=r"X contains NaN or infinite values in 1 of 311 rows \(first: row 150\)"):
        train(sharded.X_train, sharded.y_train, TrainConfig(epochs=1), out_of_core=True)
    with pytest.raises(DataError, match="row 150"):
        check_training(sharded.X_train, sharded.y_train, TrainConfig(epochs=1))
    assert no_whole_reads["peak"] <= 2  # one, and the last block of the one before while the next opens


@pytest.mark.parametrize("config", [
    TrainConfig(hidden=(8,), epochs=2, batch_size=16, val_fraction=0.2, dropout=0.1),
    dataclasses.replace(PRESETS["lecture"], epochs=2),
], ids=["adam", "gd"])
def test_streaming_never_reads_the_table_whole_and_maps_at_most_two_shards(sharded, no_whole_reads, config):
    result = train(sharded.X_train, sharded.y_train, config, out_of_core=True)
    assert no_whole_reads["peak"] <= 2
    # about a shard read per shard per epoch (the blocked order), not one per batch
    passes = 3  # the NaN check and the scaler's pass, then the epochs
    assert no_whole_reads["calls"] <= (passes + config.epochs) * sharded.X_train.n_shards + 2 * config.epochs
    no_whole_reads["calls"] = 0
    assert result.predict(sharded.X_test).shape == (N_TEST,)  # test rows a shard at a time
    assert no_whole_reads["calls"] == sharded.X_test.n_shards


def test_large_tables_stream_by_default_and_small_ones_are_read(sharded, monkeypatch):
    import featmlp._memory
    import featmlp.training.engines.streamed as stream

    used = []
    real = stream.ShardedRows
    monkeypatch.setattr("featmlp.training.loop.ShardedRows", lambda *a: used.append(1) or real(*a))
    config = TrainConfig(hidden=(8,), epochs=1, batch_size=64)
    train(sharded.X_train, sharded.y_train, config)
    assert not used
    monkeypatch.setattr(featmlp._memory, "available_memory", lambda device="cpu": 3 * sharded.X_train.nbytes)
    train(sharded.X_train, sharded.y_train, config)
    assert used


def test_what_cannot_stream_is_refused_clearly(sharded, monkeypatch):
    import featmlp._memory

    with pytest.raises(ConfigError, match="batch_norm with full-batch optimizer 'gd' on a table streamed"):
        train(sharded.X_train, sharded.y_train, TrainConfig(optimizer="gd", batch_norm=True), out_of_core=True)
    with pytest.raises(ConfigError, match="out_of_core=True streams a sharded feature table"):
        train(np.asarray(sharded.X_train), sharded.y_train, TrainConfig(), out_of_core=True)
    with pytest.raises(ConfigError, match="blocks must be the table's shards"):
        train(sharded.X_train, sharded.y_train, TrainConfig(), out_of_core=True, blocks=[311])
    monkeypatch.setattr(featmlp._memory, "available_memory", lambda device="cpu": 10_000)
    with pytest.raises(ConfigError, match=r"on 311 rows streamed from 5 shards of up to 70 rows \(batch 64\) needs "
                                          r"about .* of memory, and 9.8 KB is available: .* smaller shards"):
        check_training(sharded.X_train, sharded.y_train, TrainConfig(hidden=(8,), batch_size=64), out_of_core=True)
    with pytest.raises(ConfigError, match="read into memory .* or stream the table from disk"):
        check_training(sharded.X_train, sharded.y_train, TrainConfig(hidden=(8,)), out_of_core=False)


def test_sweep_and_lr_find_read_the_table_after_a_memory_check(sharded, monkeypatch, tmp_path):
    import featmlp._memory
    from featmlp.training.lr_find import lr_find
    from featmlp.sweep import run_sweep

    r = lr_find(sharded.X_train, sharded.y_train, TrainConfig(hidden=(8,), batch_size=32), num_steps=10)
    assert len(r.lrs) == 10
    sweep = run_sweep(sharded, [TrainConfig(hidden=(8,), epochs=1, lr=lr) for lr in (1e-3, 1e-2)])
    assert all(run.test_accuracy is not None for run in sweep.runs)
    monkeypatch.setattr(featmlp._memory, "available_memory", lambda device="cpu": 1000)
    with pytest.raises(ConfigError, match="the sweep reads the sharded table .* into memory and needs about"):
        run_sweep(sharded, [TrainConfig(epochs=1)])
    with pytest.raises(ConfigError, match="the learning-rate test reads the sharded table"):
        lr_find(sharded.X_train, sharded.y_train, TrainConfig())


def test_cli_train_and_evaluate_a_sharded_table_as_its_npz(tmp_path, monkeypatch, run_cli):
    import json

    table = _table()
    save_sharded(tmp_path / "t.features", table, shard_rows=SHARD_ROWS)
    save_features(tmp_path / "t.npz", load_features(tmp_path / "t.features"))
    monkeypatch.chdir(tmp_path)
    evaluated = {}
    for name, source, extra in (("disk", "t.features/", ["--out-of-core"]), ("npz", "t.npz", [])):
        code, out, err = run_cli(["train", source, "--preset", "lecture", "--epochs", "5", "--out", name, "-q",
                                  *extra])
        assert code == 0, out + err
        code, out, err = run_cli(["evaluate", name, "--json"])
        assert code == 0, out + err
        evaluated[name] = json.loads(out)
    assert evaluated["disk"] == evaluated["npz"]
    metrics = json.loads((tmp_path / "disk" / "metrics.json").read_text())
    reference = json.loads((tmp_path / "npz" / "metrics.json").read_text())
    assert metrics["test_accuracy"] == reference["test_accuracy"]
    assert [r["train_loss"] for r in metrics["history"]] == pytest.approx(
        [r["train_loss"] for r in reference["history"]], rel=1e-5)
    config = json.loads((tmp_path / "disk" / "config.json").read_text())
    assert config["data"]["feature_file"].endswith("t.features")
