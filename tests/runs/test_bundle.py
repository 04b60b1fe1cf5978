"""featmlp.runs.bundle: save and load a model as safetensors + JSON, and refuse bad files clearly."""

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from featmlp import __version__
from featmlp.runs import META_FILE, WEIGHTS_FILE, load_bundle, save_bundle
from featmlp.errors import DataError
from featmlp.model import MLPSpec, Scaler, build_mlp


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(2, 3, size=(20, 4))
    spec = MLPSpec(4, 3, hidden=(5, 6), activation="gelu", batch_norm=True)
    torch.manual_seed(0)
    model = build_mlp(spec)
    with torch.no_grad():  # non-trivial batch-norm statistics, which must travel too
        model.train()
        model(torch.randn(16, 4) * 3)
    model.eval()
    scaler = Scaler.fit(X, "minmax")
    save_bundle(tmp_path, model, spec, scaler, "lecture", ["a", "b", "c"], {"test_accuracy": 0.5})
    return tmp_path, model, spec, scaler, X


def test_round_trip_predicts_the_same(saved):
    directory, model, spec, scaler, X = saved
    bundle = load_bundle(directory)
    assert bundle.spec == spec and bundle.feature_set == "lecture"
    assert bundle.class_names == ("a", "b", "c") and bundle.extra == {"test_accuracy": 0.5}
    assert bundle.version == __version__ and not bundle.model.training
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(scaler.transform(X))), 1).numpy()
    np.testing.assert_allclose(bundle.predict_proba(X), expected, rtol=1e-6)
    assert np.array_equal(bundle.predict(X), expected.argmax(1))


def test_files_are_plain_safetensors_and_json(saved):
    directory, model, spec, scaler, _ = saved
    assert sorted(p.name for p in directory.iterdir()) == [META_FILE, WEIGHTS_FILE]  # no temp files
    tensors = load_file(directory / WEIGHTS_FILE)
    assert set(tensors) == set(model.state_dict())
    meta = json.loads((directory / META_FILE).read_text())
    assert meta["spec"]["hidden"] == [5, 6] and meta["scaler"]["kind"] == "minmax"
    assert meta["scaler"]["offset"] == pytest.approx(scaler.offset.tolist())
    assert meta["class_names"] == ["a", "b", "c"] and meta["featmlp_version"] == __version__


def test_loading_never_unpickles(saved, monkeypatch):
    directory = saved[0]

    def refuse(*args, **kwargs):
        raise AssertionError("a bundle must load without pickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert load_bundle(directory).class_names == ("a", "b", "c")


def test_missing_files(tmp_path, saved):
    with pytest.raises(DataError, match="model.json not found"):
        load_bundle(tmp_path / "nowhere")
    directory = saved[0]
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(DataError, match="model.safetensors not found"):
        load_bundle(directory)


def test_corrupt_json(saved):
    directory = saved[0]
    (directory / META_FILE).write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        load_bundle(directory)


def test_json_lacking_a_field(saved):
    directory = saved[0]
    meta = json.loads((directory / META_FILE).read_text())
    del meta["class_names"]
    (directory / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="class_names"):
        load_bundle(directory)


def test_damaged_weights(saved):
    directory = saved[0]
    data = (directory / WEIGHTS_FILE).read_bytes()
    (directory / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="does not match"):
        load_bundle(directory)


def test_weights_of_another_model_are_refused(saved, tmp_path_factory):
    directory, _, _, scaler, _ = saved
    other = tmp_path_factory.mktemp("other")
    spec = MLPSpec(4, 3, hidden=(7,))
    save_bundle(other, build_mlp(spec), spec, scaler, "lecture", ["a", "b", "c"])
    (directory / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(DataError, match="different saves"):
        load_bundle(directory)
    # Even with a matching checksum the tensors must fit the spec.
    meta = json.loads((directory / META_FILE).read_text())
    meta["weights_sha256"] = json.loads((other / META_FILE).read_text())["weights_sha256"]
    (directory / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="does not fit"):
        load_bundle(directory)


def test_inconsistent_metadata(saved):
    directory = saved[0]
    meta = json.loads((directory / META_FILE).read_text())
    (directory / META_FILE).write_text(json.dumps({**meta, "class_names": ["a", "b"]}))
    with pytest.raises(DataError, match="2 class names"):
        load_bundle(directory)
    (directory / META_FILE).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(DataError, match="upgrade"):
        load_bundle(directory)
    (directory / META_FILE).write_text(json.dumps({**meta, "spec": {**meta["spec"], "head": "x"}}))
    with pytest.raises(DataError, match="'x'"):
        load_bundle(directory)


def test_save_checks_what_it_is_given(tmp_path):
    spec = MLPSpec(4, 3)
    scaler = Scaler.fit(np.zeros((2, 4)))
    with pytest.raises(DataError, match="2 class names"):
        save_bundle(tmp_path, build_mlp(spec), spec, scaler, "lecture", ["a", "b"])
    with pytest.raises(DataError, match="JSON"):
        save_bundle(tmp_path, build_mlp(spec), spec, scaler, "lecture", "abc", {"x": object()})
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["spec"].update(n_features="4"), "n_features"),
    (lambda m: m["spec"].update(hidden=[5, 0]), "hidden"),
    (lambda m: m["spec"].update(dropout=1.5), "dropout"),
    (lambda m: m["spec"].update(batch_norm="yes"), "batch_norm"),
    (lambda m: m["spec"].update(extra_field=1), "extra_field"),
    (lambda m: m["scaler"].update(offset=[str(v) for v in m["scaler"]["offset"]]), "scaler offset"),
    (lambda m: m["scaler"].update(scale=m["scaler"]["scale"][:3]), "one length"),
    (lambda m: m["scaler"].update(scale=[float("inf")] * 4), "finite"),
    (lambda m: m["scaler"].update(kind="robust"), "robust"),
    (lambda m: m.update(class_names=[1, 2, 3]), "class_names"),
    (lambda m: m.update(class_names=["a", "a", "b"]), "distinct"),
    (lambda m: m.update(feature_set="nope"), "nope"),
    (lambda m: m.update(feature_set=7), "feature_set"),
    (lambda m: m.update(weights_sha256=123), "weights_sha256"),
    (lambda m: m.update(extra={"image_size": [32]}), "image_size"),
    (lambda m: m.update(extra={"image_size": [32, "32"]}), "image_size"),
    (lambda m: m.update(extra={"image_size": [0, 32]}), "image_size"),
    (lambda m: m.update(extra={"image_size": [100000, 100000]}), "100000x100000"),
    (lambda m: m.update(extra={"train": {"lr": -1.0}}), "lr"),
    (lambda m: m.update(extra={"train": {"bogus": 1}}), "bogus"),
    (lambda m: m.update(extra=[1]), "extra"),
])
def test_every_field_is_checked(saved, edit, message):
    directory = saved[0]
    meta = json.loads((directory / META_FILE).read_text())
    edit(meta)
    (directory / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="invalid model description") as e:
        load_bundle(directory)
    assert message in str(e.value)


def test_a_spec_larger_than_its_weights_is_not_built(saved, monkeypatch):
    # A spec of 1.3e9 parameters (4*1e8 + 1e8, batch norm 2*(1e8 + 6), 1e8*6 + 6, 6*3 + 3) for a
    # weights file of a few KB: refused before build_mlp allocates 5 GB.
    import featmlp.model

    directory = saved[0]
    meta = json.loads((directory / META_FILE).read_text())
    meta["spec"]["hidden"] = [100_000_000, 6]
    (directory / META_FILE).write_text(json.dumps(meta))
    monkeypatch.setattr(featmlp.model, "build_mlp", lambda spec: pytest.fail("built"), raising=False)
    with pytest.raises(DataError, match="describes a network of 1,300,000,039 parameters"):
        load_bundle(directory)


def test_loading_checks_memory(saved, monkeypatch):
    import featmlp._memory
    from featmlp.errors import ConfigError

    monkeypatch.setattr(featmlp._memory, "available_memory", lambda device="cpu": 100)
    with pytest.raises(ConfigError, match=r"needs about .* of memory, and 100 B is available"):
        load_bundle(saved[0])
    monkeypatch.setattr(featmlp._memory, "available_memory", lambda device="cpu": None)  # unknown: no refusal
    assert load_bundle(saved[0]).class_names == ("a", "b", "c")


def test_save_refuses_what_load_would(tmp_path):
    spec = MLPSpec(4, 3)
    scaler = Scaler.fit(np.zeros((2, 4)))
    with pytest.raises(DataError, match="distinct"):
        save_bundle(tmp_path, build_mlp(spec), spec, scaler, "lecture", ["a", "a", "b"])
    with pytest.raises(DataError, match="image_size"):
        save_bundle(tmp_path, build_mlp(spec), spec, scaler, "lecture", ["a", "b", "c"], {"image_size": [0, 4]})
    assert not any(tmp_path.iterdir())
