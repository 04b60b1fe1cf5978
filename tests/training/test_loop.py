"""featmlp.training against plain PyTorch reimplementations of the same training.

The references build the network the same way (seed, then ``build_mlp``), compute the loss with
torch's own functions and step with ``torch.optim`` or by hand, so agreement checks our
hand-written forward/backward, the optimisers, the batch weighting and the bookkeeping.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.utils.class_weight import compute_class_weight
from torch.nn import functional as F

from featmlp.errors import ConfigError, DataError
from featmlp.model import ACTIVATIONS, HEADS, MLPSpec, Scaler, build_mlp
from featmlp.runs import LivePlot
from featmlp.training import (OPTIMIZERS, PRESETS, SCHEDULES, Callback, TrainConfig,
                           check_training, train)
from featmlp.training.setup import split_validation as _split_validation


def _data(n=60, f=5, classes=3, seed=0, weights=None):
    X, y = make_classification(n, f, n_informative=3, n_redundant=0, n_classes=classes,
                               n_clusters_per_class=1, weights=weights, random_state=seed)
    return X, y


def _reference_model(config, X, n_classes):
    torch.manual_seed(config.seed)
    model = build_mlp(config.spec(X.shape[1], n_classes))
    scaler = Scaler.fit(X, config.scaler)
    return model, torch.from_numpy(scaler.transform(X))


def _reference_loss(model, head, xb, yb, class_w=None):
    """The loss torch users write: F.cross_entropy, or nn.MSELoss on softmax vs one-hot."""
    out = model(xb)
    if head == "ce":
        return F.cross_entropy(out, yb, weight=class_w)
    per = ((torch.softmax(out, 1) - F.one_hot(yb, out.shape[1]).float()) ** 2).mean(1)
    if class_w is None:
        return per.mean()
    w = class_w[yb]
    return (per * w).sum() / w.sum()


def _params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("head", sorted(HEADS))
def test_gd_epoch_equals_one_plain_torch_gradient_step(activation, head):
    X, y = _data()
    config = TrainConfig(hidden=(7, 5), activation=activation, head=head, optimizer="gd", lr=0.5,
                         epochs=1, seed=4)
    ours = train(X, y, config)
    model, xt = _reference_model(config, X, 3)
    loss = _reference_loss(model, head, xt, torch.from_numpy(y))
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= config.lr * p.grad
    torch.testing.assert_close(_params(ours.model), _params(model), rtol=1e-5, atol=1e-6)
    # The recorded loss is the mean loss over samples at the weights the step started from.
    assert ours.history[0]["train_loss"] == pytest.approx(loss.item(), rel=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("engine", ["fast", "autograd"])
def test_minibatch_epochs_equal_a_plain_torch_loop(optimizer, engine):
    # 70 samples in batches of 16: the last batch has 6, and each step minimises its batch's mean.
    X, y = _data(n=70)
    extra = {} if engine == "fast" else {"batch_norm": True, "dropout": 0.25}
    if engine == "autograd" and optimizer == "adamw":
        # Batch norm leaves the first bias a gradient of rounding noise (~1e-9), which AdamW's
        # normalised step turns into full-size, order-of-summation-dependent updates.
        extra = {"dropout": 0.25}
    # Adam runs under the cosine schedule, checked against torch's CosineAnnealingLR per step.
    schedule = "cosine" if optimizer == "adam" else "none"
    config = TrainConfig(hidden=(8,), optimizer=optimizer, lr=0.01, epochs=2, batch_size=16,
                         momentum=0.9, weight_decay=0.01, schedule=schedule, seed=1, **extra)
    ours = train(X, y, config)

    model, xt = _reference_model(config, X, 3)
    yt = torch.from_numpy(y)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=0.01),
            "adam": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
            "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01)}[optimizer]
    opt = make(model.parameters())
    steps = config.epochs * math.ceil(len(y) / 16)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if schedule == "cosine" else None
    order = torch.Generator().manual_seed(config.seed)  # the documented source of batch order
    losses = []
    for _ in range(config.epochs):
        perm = torch.randperm(len(y), generator=order)
        epoch_loss = 0.0
        for idx in perm.split(16):
            opt.zero_grad()
            loss = _reference_loss(model, "ce", xt[idx], yt[idx])
            loss.backward()
            opt.step()
            if lr_schedule is not None:
                lr_schedule.step()
            epoch_loss += loss.item() * len(idx)
        losses.append(epoch_loss / len(y))
    torch.testing.assert_close(_params(ours.model), _params(model), rtol=1e-4, atol=1e-5)
    assert [r["train_loss"] for r in ours.history] == pytest.approx(losses, rel=1e-4)


def test_notebook_loop_relation_sum_of_batch_means():
    """The notebook summed the means of 64-sample batches: ceil(N / 64) x the mean-loss gradient."""
    X, y = _data(n=128)
    config = dataclasses.replace(PRESETS["lecture"], epochs=1, lr=10.0)
    model, xt = _reference_model(config, X, 3)
    yt = torch.from_numpy(y)
    total = sum(_reference_loss(model, "mse", xt[i:i + 64], yt[i:i + 64]) for i in (0, 64))
    total.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 10.0 * p.grad
    literal = train(X, y, dataclasses.replace(config, lecture_batch_size=64))
    rescaled = train(X, y, dataclasses.replace(config, lr=10.0 * 128 / 64))
    torch.testing.assert_close(_params(literal.model), _params(model), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_params(rescaled.model), _params(model), rtol=1e-5, atol=1e-6)


def test_lecture_preset_is_the_notebooks_setup():
    lecture = PRESETS["lecture"]
    assert (lecture.hidden, lecture.activation, lecture.head, lecture.optimizer, lecture.lr,
            lecture.epochs, lecture.scaler, lecture.val_fraction, lecture.schedule,
            lecture.weight_decay, lecture.dropout, lecture.batch_norm, lecture.lecture_batch_size) == (
        (6,), "relu", "mse", "gd", 10.0, 20, "minmax", 0.0, "none", 0.0, 0.0, False, None)
    assert dataclasses.replace(lecture, lr=50.0).lr == 50.0 and lecture.lr == 10.0
    assert PRESETS["default"].head == "ce" and PRESETS["default"].optimizer in ("adam", "adamw")


def test_class_weight_balanced_matches_torch_weighted_cross_entropy():
    X, y = _data(n=80, weights=[0.7, 0.2, 0.1])
    config = TrainConfig(hidden=(6,), optimizer="gd", lr=1.0, epochs=1, class_weight="balanced")
    ours = train(X, y, config)
    model, xt = _reference_model(config, X, 3)
    w = torch.tensor(compute_class_weight("balanced", classes=np.arange(3), y=y), dtype=torch.float32)
    _reference_loss(model, "ce", xt, torch.from_numpy(y), w).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= p.grad
    torch.testing.assert_close(_params(ours.model), _params(model), rtol=1e-5, atol=1e-6)


def test_history_records_and_schedules():
    X, y = _data()
    result = train(X, y, TrainConfig(hidden=(8,), epochs=6, batch_size=16, lr=0.01,
                                     schedule="onecycle", val_fraction=0.25))
    h = result.history
    assert [r["epoch"] for r in h] == list(range(1, 7))
    for r in h:
        assert {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                "seconds"} <= set(r)
        assert r["seconds"] > 0 and 0 <= r["train_accuracy"] <= 1
    lrs = [r["lr"] for r in h]
    assert max(lrs) > lrs[0] and lrs[-1] < 0.1 * max(lrs)  # warm-up, then annealing
    assert SCHEDULES["cosine"](0.0) == 1.0 and SCHEDULES["cosine"](0.5) == pytest.approx(0.5)
    assert set(OPTIMIZERS) == {"gd", "sgd", "adam", "adamw"}


def test_train_accuracy_is_the_accuracy_of_the_gd_step_weights():
    X, y = _data()
    config = TrainConfig(hidden=(6,), optimizer="gd", lr=0.5, epochs=3)
    before = train(X, y, dataclasses.replace(config, epochs=2))
    after = train(X, y, config)
    # Epoch 3's record describes the weights it started from: those after 2 epochs.
    assert after.history[2]["train_accuracy"] == pytest.approx(
        float((before.predict(X) == y).mean()))


def test_same_seed_repeats_exactly_and_leaves_global_rng_alone():
    X, y = _data()
    config = TrainConfig(hidden=(8,), epochs=3, batch_size=8, dropout=0.1, val_fraction=0.2, seed=7)
    state = torch.get_rng_state()
    a, b = train(X, y, config), train(X, y, config)
    assert torch.equal(torch.get_rng_state(), state)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert torch.equal(_params(a.model), _params(b.model))
    c = train(X, y, dataclasses.replace(config, seed=8))
    assert not torch.equal(_params(a.model), _params(c.model))


def test_divergence_ends_cleanly_with_last_finite_weights():
    X, y = _data()
    config = TrainConfig(hidden=(16,), optimizer="gd", lr=1e30, epochs=10)
    result = train(X, y, config)
    assert result.diverged and result.stop_reason == "diverged"
    n = len(result.history)
    assert n < 10
    assert all(math.isfinite(r["train_loss"]) for r in result.history)
    assert torch.isfinite(_params(result.model)).all()
    assert np.isfinite(result.predict_proba(X)).all()
    # The weights kept are those of a run stopping one or two epochs earlier (the last whose
    # loss is finite): the same seed repeats the same steps.
    earlier = [_params(train(X, y, dataclasses.replace(config, epochs=k)).model)
               for k in (n - 1, n) if k >= 1]
    if n == 1:  # or the initial weights
        earlier.append(_params(_reference_model(config, X, 3)[0]))
    assert any(torch.equal(_params(result.model), p) for p in earlier)


def test_early_stopping_restores_the_best_validation_weights():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 5)), rng.integers(0, 3, 60)  # pure noise: validation loss rises
    X_val, y_val = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    result = train(X, y, TrainConfig(hidden=(64, 64), lr=0.01, epochs=200, batch_size=16, patience=5),
                   X_val=X_val, y_val=y_val)
    assert result.stop_reason == "early_stopping"
    h = result.history
    best = min(h, key=lambda r: r["val_loss"])
    assert result.best_epoch == best["epoch"] and len(h) == best["epoch"] + 5
    with torch.no_grad():
        logits = result.model(torch.from_numpy(result.scaler.transform(X_val)))
        val_loss = F.cross_entropy(logits, torch.from_numpy(y_val)).item()
    assert val_loss == pytest.approx(best["val_loss"], rel=1e-5)


def test_callbacks_see_the_history_and_can_stop():
    X, y = _data()
    seen = []

    class Recorder(Callback):
        def on_train_begin(self, config):
            seen.append("begin")

        def on_train_end(self, history):
            seen.append(("end", len(history)))

    def stop_at_3(record, history):
        assert history[-1] is record
        return record["epoch"] == 3

    calls = []
    result = train(X, y, TrainConfig(hidden=(4,), epochs=10), callbacks=[Recorder(), stop_at_3],
                   progress=lambda *a: calls.append(a))
    assert len(result.history) == 3 and result.stop_reason == "callback"
    assert seen == ["begin", ("end", 3)]
    assert calls == [("train", 1, 10), ("train", 2, 10), ("train", 3, 10)]


def test_live_plot_is_throttled(tmp_path, monkeypatch):
    X, y = _data()
    writes = []
    monkeypatch.setattr("featmlp.runs.plots.plot_history", lambda h, p, log_scale=False: writes.append(len(h)))
    train(X, y, TrainConfig(hidden=(4,), epochs=5), callbacks=[LivePlot(tmp_path / "l.png", 3600)])
    assert writes == [5]  # only the final plot
    writes.clear()
    train(X, y, TrainConfig(hidden=(4,), epochs=5), callbacks=[LivePlot(tmp_path / "l.png", 0)])
    assert writes == [1, 2, 3, 4, 5, 5]


def test_validation_split_is_stratified_and_seeded():
    X, y = _data(n=100, weights=[0.8, 0.1, 0.1])
    X_tr, y_tr, X_va, y_va = _split_validation(X, y, 0.2, seed=3)
    assert len(y_va) == 20 and np.bincount(y_va).tolist() == (np.bincount(y) * 0.2).round().astype(int).tolist()
    again = _split_validation(X, y, 0.2, seed=3)
    assert np.array_equal(again[3], y_va) and np.array_equal(again[2], X_va)


@pytest.mark.parametrize("change, words", [
    ({"optimizer": "rmsprop"}, ["'rmsprop'", "gd", "sgd", "adam", "adamw"]),
    ({"schedule": "step"}, ["'step'", "cosine", "onecycle"]),
    ({"lr": -1.0}, ["lr", "-1.0"]),
    ({"epochs": 0}, ["epochs", "0"]),
    ({"class_weight": "auto"}, ["'auto'", "balanced"]),
    ({"class_weight": (1.0, 2.0)}, ["2 weights", "3 classes"]),
    ({"patience": 3}, ["patience", "val_fraction"]),
    ({"lecture_batch_size": 64}, ["lecture_batch_size", "gd"]),
    ({"val_fraction": 1.0}, ["val_fraction", "1.0"]),
    ({"device": "tpu"}, ["'tpu'", "auto", "cpu"]),
    ({"hidden": ()}, []),
])
def test_bad_settings_raise_config_error_naming_them(change, words):
    X, y = _data()
    if change == {"hidden": ()}:  # no hidden layer is a valid (linear) model
        assert train(X, y, TrainConfig(hidden=(), epochs=1)).model(torch.zeros(1, 5)).shape == (1, 3)
        return
    with pytest.raises(ConfigError) as err:
        train(X, y, dataclasses.replace(TrainConfig(epochs=1), **change))
    for word in words:
        assert word in str(err.value)


def test_bad_data_raises_data_error():
    X, y = _data()
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        train(X_nan, y, TrainConfig(epochs=1))
    with pytest.raises(DataError, match="outside"):
        train(X, y, TrainConfig(epochs=1), n_classes=2)
    with pytest.raises(DataError, match="shape"):
        train(X, y[:-1], TrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="val_fraction"):
        train(X, y, TrainConfig(epochs=1, val_fraction=0.2), X_val=X, y_val=y)


def test_config_dict_round_trip():
    import json

    for config in (dataclasses.replace(PRESETS["lecture"], hidden=(6, 6)),
                   TrainConfig(class_weight=(1.0, 2.0, 0.5))):
        assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert dataclasses.asdict(PRESETS["lecture"])["hidden"] == (6,)
    with pytest.raises(ConfigError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})


def test_spec_comes_from_config_and_data():
    X, y = _data()
    result = train(X, y, TrainConfig(hidden=(4, 3), epochs=1), n_classes=5)
    assert result.spec == MLPSpec(5, 5, (4, 3))
    assert result.predict_proba(X).shape == (60, 5)


def test_thread_count_is_restored_after_training():
    X, y = _data()
    before = torch.get_num_threads()
    seen = []
    train(X, y, TrainConfig(hidden=(4,), epochs=2),
          callbacks=[lambda record, history: seen.append(torch.get_num_threads())])
    assert torch.get_num_threads() == before
    assert seen == [1, 1]  # a network this small trains on one thread


@pytest.mark.parametrize("engine", ["fast", "autograd"])
def test_label_smoothing_equals_torch_cross_entropy_with_label_smoothing(engine):
    X, y = _data(n=70)
    extra = {} if engine == "fast" else {"dropout": 0.25}
    config = TrainConfig(hidden=(8,), optimizer="sgd", lr=0.05, epochs=2, batch_size=16, momentum=0.9,
                         schedule="none", seed=1, label_smoothing=0.2, **extra)
    ours = train(X, y, config)
    model, xt = _reference_model(config, X, 3)
    yt = torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = torch.Generator().manual_seed(config.seed)
    losses = []
    for _ in range(config.epochs):
        epoch_loss = 0.0
        for idx in torch.randperm(len(y), generator=order).split(16):
            opt.zero_grad()
            loss = F.cross_entropy(model(xt[idx]), yt[idx], label_smoothing=0.2)
            loss.backward()
            opt.step()
            epoch_loss += loss.item() * len(idx)
        losses.append(epoch_loss / len(y))
    torch.testing.assert_close(_params(ours.model), _params(model), rtol=1e-4, atol=1e-5)
    assert [r["train_loss"] for r in ours.history] == pytest.approx(losses, rel=1e-4)
    with pytest.raises(ConfigError, match="label_smoothing applies to head 'ce'"):
        TrainConfig(head="mse", label_smoothing=0.1).validate()


def test_large_tables_train_from_per_batch_scaled_rows_as_from_a_scaled_copy(monkeypatch):
    import featmlp.training.engines.fast as train_module

    X, y = _data(n=90)
    config = TrainConfig(hidden=(8,), epochs=2, batch_size=16, seed=3)
    copy = train(X.astype(np.float32), y, config)
    monkeypatch.setattr(train_module, "FAST_ENGINE_BYTES", 0)  # as if X were GBs
    rows = train(X.astype(np.float32), y, config)
    torch.testing.assert_close(_params(rows.model), _params(copy.model), rtol=1e-4, atol=1e-5)


def test_network_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    import featmlp._memory

    X, y = make_classification(200, 9, n_classes=3, n_informative=5, random_state=0)
    monkeypatch.setattr(featmlp._memory, "available_memory", lambda device="cpu": 2**20)
    monkeypatch.setattr("featmlp.training.setup.build_mlp", lambda spec: pytest.fail("allocated"))
    with pytest.raises(ConfigError, match=r"training the network 9 -> 512 -> 3 on 200 rows \(batch 200\) needs "
                                          r"about .* MB of memory, and 1.0 MB is available"):
        train(X, y, TrainConfig(hidden=(512,), epochs=1, batch_size=256))
    with pytest.raises(ConfigError, match="9 -> 512 -> 3"):
        check_training(X, y, TrainConfig(hidden=(512,)))


def test_real_huge_network_is_refused():
    # 9 -> 10^8 -> 3 holds 1.3e9 parameters: ~36 GB of weights, gradients and optimiser state alone
    X, y = make_classification(200, 9, n_classes=3, n_informative=5, random_state=0)
    with pytest.raises(ConfigError, match="9 -> 100000000 -> 3"):
        check_training(X, y, TrainConfig(hidden=(100_000_000,)))


def test_available_memory_without_psutil(monkeypatch):
    import sys

    import featmlp._memory

    with_psutil = featmlp._memory.available_memory()
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    without = featmlp._memory.available_memory()
    meminfo = {l.split(":")[0]: int(l.split()[1]) * 1024 for l in open("/proc/meminfo")}
    assert without is not None and 0 < without <= meminfo["MemTotal"]
    assert with_psutil is not None and abs(with_psutil - without) < meminfo["MemTotal"] / 4


def test_cgroup_room_counts_reclaimable_page_cache(tmp_path):
    # A container at 7 of its 8 GiB, 3 GiB of which is inactive page cache, has 4 GiB to give.
    from featmlp._memory import _cgroup_room

    gib = 2**30
    (tmp_path / "memory.max").write_text(f"{8 * gib}\n")
    (tmp_path / "memory.current").write_text(f"{7 * gib}\n")
    (tmp_path / "memory.stat").write_text(f"anon {4 * gib}\nfile {3 * gib}\ninactive_file {3 * gib}\n")
    assert _cgroup_room(str(tmp_path)) == 4 * gib
    (tmp_path / "memory.max").write_text("max\n")
    assert _cgroup_room(str(tmp_path)) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")  # v1's "no limit"
    (v1 / "memory" / "memory.usage_in_bytes").write_text(f"{gib}\n")
    assert _cgroup_room(str(v1)) is None
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{2 * gib}\n")
    (v1 / "memory" / "memory.stat").write_text(f"total_inactive_file {gib // 2}\n")
    assert _cgroup_room(str(v1)) == gib + gib // 2


@pytest.mark.parametrize("config, message", [
    (TrainConfig(patience=2), "needs validation data"),
    (TrainConfig(val_fraction=0.999), "leaves no training"),
    pytest.param(TrainConfig(device="cuda"), "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_check_training_raises_what_train_raises(config, message):
    X, y = make_classification(50, 4, random_state=0)
    with pytest.raises(Exception, match=message) as checked:
        check_training(X, y, config)
    with pytest.raises(Exception, match=message) as trained:
        train(X, y, config)
    assert type(checked.value) is type(trained.value)


@pytest.mark.parametrize("optimizer, max_steps, epochs", [
    ("adam", 12, 2),    # 70 rows in batches of 16: 5 steps an epoch, 12 // 5 = 2 whole epochs
    ("adam", 3, 1),     # fewer steps than an epoch: one epoch all the same
    ("adam", 500, 9),   # more than the epochs take: the epochs
    ("sgd", 25, 5),
    ("gd", 4, 4),       # full batch: one step an epoch
])
def test_max_steps_trains_the_whole_epochs_that_fit_as_that_many_epochs_would(optimizer, max_steps, epochs):
    X, y = _data(n=70)
    config = TrainConfig(hidden=(8,), optimizer=optimizer, lr=0.01, epochs=9, batch_size=16, seed=2,
                         schedule="cosine", max_steps=max_steps)
    capped = train(X, y, config)
    plain = train(X, y, dataclasses.replace(config, epochs=epochs, max_steps=0))
    assert len(capped.history) == epochs and capped.stop_reason == "completed"
    # the schedule spans the epochs run: the same learning rates, the same weights
    assert [r["lr"] for r in capped.history] == [r["lr"] for r in plain.history]
    torch.testing.assert_close(_params(capped.model), _params(plain.model))
    assert capped.config.max_steps == max_steps  # the run records what it was given


def test_max_steps_counts_the_mirror_images_rows_with_flips():
    X, y = _data(n=64, f=4)
    mirror = np.array([1, 0, 3, 2])
    config = TrainConfig(hidden=(4,), epochs=5, batch_size=16, flip=True, max_steps=17)
    # 2 x 64 rows: 8 steps an epoch, 17 // 8 = 2 epochs
    assert len(train(X, y, config, mirror=mirror).history) == 2
    with pytest.raises(ConfigError, match="max_steps"):
        TrainConfig(max_steps=-1).validate()
