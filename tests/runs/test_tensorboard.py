"""featmlp.runs.tensorboard: the event files, read back with TensorBoard's own reader."""

from __future__ import annotations

import sys

import pytest
from sklearn.datasets import make_classification

from featmlp.errors import FeatmlpError
from featmlp.training import TrainConfig, train

# The missing-package test needs no tensorboard; the others read the events back with it.
try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    HAVE_TENSORBOARD = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TENSORBOARD = False
needs_tensorboard = pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboard not installed")


def _events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


@needs_tensorboard
def test_history_written_as_scalars_and_hparams(tmp_path):
    from featmlp.runs.tensorboard import TEST_ACCURACY_TAG, TensorBoardLogger

    X, y = make_classification(300, 6, n_informative=4, n_classes=3, random_state=0)
    logger = TensorBoardLogger(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()  # nothing is created before training
    config = TrainConfig(hidden=(8, 4), epochs=5, batch_size=32, val_fraction=0.2)
    result = train(X, y, config, callbacks=[logger])
    logger.log_metrics({"test_accuracy": 0.5, "diverged": False, "history": []})

    acc = _events(tmp_path / "tb")
    tags = set(acc.Tags()["scalars"])
    fields = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
    assert set(fields) <= tags and "epoch" not in tags
    for key in fields:
        events = acc.Scalars(key)
        assert [e.step for e in events] == [r["epoch"] for r in result.history]
        assert [e.value for e in events] == pytest.approx([r[key] for r in result.history],
                                                          rel=1e-6)
    last = result.history[-1]
    assert acc.Scalars("final/train_loss")[-1].value == pytest.approx(last["train_loss"], rel=1e-6)
    assert acc.Scalars("final/best_val_loss")[-1].value == pytest.approx(
        min(r["val_loss"] for r in result.history), rel=1e-6)
    assert acc.Scalars("final/epochs")[-1].value == 5
    assert acc.Scalars(TEST_ACCURACY_TAG)[-1].value == pytest.approx(0.5)
    assert acc.Scalars(TEST_ACCURACY_TAG)[-1].step == 5

    # the HParams tab: settings with their values, and the declared metrics
    content = acc.PluginTagToContent("hparams")
    session = experiment = None
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            session = data.session_start_info
        if data.HasField("experiment"):
            experiment = data.experiment
    assert session is not None and experiment is not None
    hp = session.hparams
    assert hp["hidden"].string_value == "8,4"
    assert hp["lr"].number_value == pytest.approx(config.lr)
    assert hp["optimizer"].string_value == "adam"
    assert hp["batch_norm"].bool_value is False
    assert hp["class_weight"].string_value == "none"
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"final/train_loss", "final/val_loss", TEST_ACCURACY_TAG} <= metric_tags


@needs_tensorboard
def test_diverged_run_logs_what_finished(tmp_path):
    from featmlp.runs.tensorboard import TensorBoardLogger

    X, y = make_classification(200, 6, n_informative=4, n_classes=3, random_state=0)
    config = TrainConfig(hidden=(4,), optimizer="gd", lr=1e30, epochs=3, scaler="minmax")
    result = train(X, y, config, callbacks=[TensorBoardLogger(tmp_path / "tb")])
    assert result.diverged
    acc = _events(tmp_path / "tb")
    assert acc.Scalars("final/epochs")[-1].value == len(result.history)
    if not result.history:
        assert "train_loss" not in acc.Tags()["scalars"]


def test_missing_tensorboard_is_a_clear_error(monkeypatch):
    # A None entry in sys.modules makes the import fail, as when the package is absent.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    from featmlp.runs.tensorboard import TensorBoardLogger

    with pytest.raises(FeatmlpError, match="pip install tensorboard"):
        TensorBoardLogger("unused")
