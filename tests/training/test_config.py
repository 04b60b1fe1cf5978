"""featmlp.training.config: the constraint table against hand-written cases, and its torch-free import."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from featmlp.errors import ConfigError
from featmlp.model.spec import ACTIVATION_NAMES, HEAD_NAMES
from featmlp.training.config import (FIELDS, OPTIMIZER_NAMES, PRESETS, RULES, SCALER_NAMES, SCHEDULE_NAMES, TrainConfig,
                                     lecture_batch_size_applies)


def _error(**fields) -> str:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**fields).validate()
    return str(info.value)


def test_the_table_has_one_entry_per_field_each_with_help():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(f.help and f.kind for f in FIELDS.values())
    assert {after for after, _ in RULES} <= set(FIELDS)


def test_choice_names_are_those_of_the_registries_that_hold_the_implementations():
    from featmlp.model import ACTIVATIONS, HEADS, SCALERS
    from featmlp.training.optim import OPTIMIZERS, SCHEDULES

    assert OPTIMIZER_NAMES == tuple(OPTIMIZERS)
    assert SCHEDULE_NAMES == tuple(SCHEDULES)
    assert ACTIVATION_NAMES == tuple(ACTIVATIONS)
    assert HEAD_NAMES == tuple(HEADS)
    assert SCALER_NAMES == tuple(SCALERS)
    assert [n for n in OPTIMIZER_NAMES if lecture_batch_size_applies(n)] == \
        [n for n, cls in OPTIMIZERS.items() if cls.full_batch]


def test_every_preset_and_the_defaults_validate():
    for config in [TrainConfig(), *PRESETS.values()]:
        config.validate()


# (field, bad value, the whole message): written out by hand, the wording users see.
BAD = [
    ("hidden", (64, 0), "hidden must be a sequence of positive layer widths such as (64,) or (512, 256), "
                        "got (64, 0)"),
    ("hidden", (64, True), "hidden must be a sequence of positive layer widths such as (64,) or (512, 256), "
                           "got (64, True)"),
    # a bare width was a TypeError from tuple(5) before the table; now the message
    ("hidden", 5, "hidden must be a sequence of positive layer widths such as (64,) or (512, 256), got 5"),
    ("activation", "swish", "activation 'swish' is not one of: relu, tanh, sigmoid, gelu"),
    ("head", "hinge", "head 'hinge' is not one of: ce, mse"),
    ("dropout", 1.0, "dropout must be a probability in [0, 1), got 1.0"),
    ("dropout", True, "dropout must be a probability in [0, 1), got True"),
    ("batch_norm", 1, "batch_norm must be true or false, got 1"),
    ("bottleneck", -1, "bottleneck must be a layer width >= 1, or 0 for none, got -1"),
    ("optimizer", "lbfgs", "optimizer 'lbfgs' is not one of: gd, sgd, adam, adamw"),
    ("schedule", "step", "schedule 'step' is not one of: none, cosine, onecycle"),
    ("scaler", "robust", "scaler 'robust' is not one of: standard, minmax, global, none"),
    ("class_weight", (1.0, -1.0), "class_weight (1.0, -1.0) is not one of: None, 'balanced', or a tuple of "
                                  "one non-negative weight per class"),
    ("class_weight", (0.0, 0.0), "class_weight (0.0, 0.0) is not one of: None, 'balanced', or a tuple of "
                                 "one non-negative weight per class"),
    ("lr", 0.0, "lr must be a finite number in (0, 3.4028234663852886e+38], got 0.0"),
    ("lr", 1e39, "lr must be a finite number in (0, 3.4028234663852886e+38], got 1e+39"),
    ("lr", float("nan"), "lr must be a finite number in (0, 3.4028234663852886e+38], got nan"),
    ("epochs", 0, "epochs must be an integer >= 1, got 0"),
    ("epochs", 2.0, "epochs must be an integer >= 1, got 2.0"),
    ("batch_size", True, "batch_size must be an integer >= 1, got True"),
    ("momentum", 1.0, "momentum must be a finite number in [0, 1), got 1.0"),
    ("weight_decay", -0.1, "weight_decay must be a finite number >= 0, got -0.1"),
    ("val_fraction", 1, "val_fraction must be a finite number in [0, 1), got 1"),
    ("patience", -1, "patience must be an integer >= 0, got -1"),
    ("seed", -1, "seed must be an integer in [0, 4294967295], got -1"),
    ("seed", 2**32, "seed must be an integer in [0, 4294967295], got 4294967296"),
    ("label_smoothing", 1.5, "label_smoothing must be a finite number in [0, 1), got 1.5"),
    ("flip", "yes", "flip must be true or false, got 'yes'"),
    ("test_flip", None, "test_flip must be true or false, got None"),
    ("device", "tpu", "device 'tpu' is not one of: auto, cpu, cuda, cuda:N"),
    ("device", 0, "device 0 is not one of: auto, cpu, cuda, cuda:N"),
]


@pytest.mark.parametrize("name, value, message", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_a_bad_value_is_refused_with_a_message_naming_it_and_what_is_accepted(name, value, message):
    assert _error(**{name: value}) == message
    assert FIELDS[name].error(name, value) == message


GOOD = [
    ("hidden", [6]), ("hidden", (np.int64(4), 3)), ("dropout", 0), ("batch_norm", np.bool_(True)),
    ("bottleneck", 0), ("class_weight", "balanced"), ("class_weight", (0.0, 2)), ("lr", 3.4e38),
    ("lr", np.float32(0.5)), ("epochs", np.int64(3)), ("momentum", 0), ("val_fraction", 0.999),
    ("device", "cuda:1"), ("lecture_batch_size", None),
]


@pytest.mark.parametrize("name, value", GOOD, ids=[f"{n}={v!r}" for n, v in GOOD])
def test_accepted_values(name, value):
    assert FIELDS[name].error(name, value) is None


def test_the_first_bad_value_in_the_table_order_is_named():
    assert _error(optimizer="x", lr=-1.0).startswith("optimizer 'x'")
    assert _error(hidden=(0,), device="tpu").startswith("hidden must")


def test_rules_tying_two_settings_are_checked_right_after_their_field():
    assert _error(optimizer="adam", lecture_batch_size=64) == \
        "lecture_batch_size applies to optimizer 'gd' only, not 'adam': set it to None"
    assert _error(optimizer="gd", lecture_batch_size=0) == "lecture_batch_size must be an integer >= 1, got 0"
    TrainConfig(optimizer="gd", lecture_batch_size=64).validate()
    assert _error(head="mse", label_smoothing=0.1) == \
        "label_smoothing applies to head 'ce' only, not 'mse': set it to 0"
    # the lecture_batch_size rule comes before label_smoothing's range
    assert _error(optimizer="sgd", lecture_batch_size=8, label_smoothing=2.0).startswith("lecture_batch_size")


def test_importing_the_config_and_validating_imports_no_torch():
    code = ("import sys\n"
            "from featmlp.training.config import FIELDS, PRESETS, TrainConfig\n"
            "TrainConfig().validate(); [c.validate() for c in PRESETS.values()]\n"
            "TrainConfig(lr=1.0).to_dict()\n"
            "heavy = [m for m in ('torch', 'sklearn', 'matplotlib', 'numba') if m in sys.modules]\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_network_s_fields_are_checked_by_the_same_table_in_mlpspec():
    from featmlp.model import MLPSpec
    from featmlp.model.spec import NETWORK_FIELDS

    assert set(NETWORK_FIELDS) == {f.name for f in dataclasses.fields(MLPSpec)} - {"n_features", "n_classes"}
    for name, value, message in BAD:
        if name in NETWORK_FIELDS:
            with pytest.raises(ConfigError) as info:
                MLPSpec(3, 2, **{name: value}).validate()
            assert str(info.value) == message
    # a list is a sequence of widths for both
    MLPSpec(3, 2, hidden=[4, 4]).validate()
    TrainConfig(hidden=[4, 4]).validate()
