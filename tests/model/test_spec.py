"""featmlp.model.spec: the network's settings, checked and counted against torch."""

import pytest

from featmlp.errors import ConfigError
from featmlp.model import ACTIVATIONS, MLPSpec, build_mlp, parameter_count


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_builds(name):
    model = build_mlp(MLPSpec(3, 2, hidden=(4,), activation=name))
    assert isinstance(model.hidden[0][1], ACTIVATIONS[name])


@pytest.mark.parametrize("field, value, words", [
    ("activation", "swish", ["'swish'", "relu", "gelu"]),
    ("head", "hinge", ["'hinge'", "ce", "mse"]),
    ("hidden", (0,), ["hidden", "(0,)"]),
    ("dropout", 1.0, ["dropout", "1.0"]),
    ("n_features", 0, ["n_features", "0"]),
])
def test_spec_validation_names_value_and_choices(field, value, words):
    kwargs = {"n_features": 3, "n_classes": 2, field: value}
    with pytest.raises(ConfigError) as err:
        build_mlp(MLPSpec(**kwargs))
    for word in words:
        assert word in str(err.value)


def test_spec_dict_round_trip():
    spec = MLPSpec(9, 10, hidden=(512, 256), activation="gelu", dropout=0.1, batch_norm=True)
    assert MLPSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="bogus"):
        MLPSpec.from_dict({**spec.to_dict(), "bogus": 1})


@pytest.mark.parametrize("spec", [
    MLPSpec(9, 10, hidden=(6,)),
    MLPSpec(30, 4, hidden=(16, 8), batch_norm=True, dropout=0.2),
    MLPSpec(300, 10, hidden=(64,), bottleneck=12),
    MLPSpec(5, 2, hidden=()),
])
def test_parameter_count_is_torchs(spec):
    assert parameter_count(spec) == sum(p.numel() for p in build_mlp(spec).parameters())
