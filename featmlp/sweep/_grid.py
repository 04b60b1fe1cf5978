"""A sweep's configurations: the grid, their names, and which of them can train together."""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Sequence

from featmlp.errors import ConfigError
from featmlp.training.config import FULL_BATCH_OPTIMIZERS, TrainConfig

_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
# Fields holding a float: an int given in a grid (lr=[1, 10]) is stored as a float, so results
# and config.json read the same whichever way the value was typed.
_FLOAT_FIELDS = ("lr", "momentum", "weight_decay", "dropout", "val_fraction")
# How a field's value appears in a configuration's name (lr10_h6-6): a short prefix, or none
# where the value names itself (adam, cosine, tanh).
_NAME_PREFIX = {
    "lr": "lr", "hidden": "h", "weight_decay": "wd", "momentum": "mom", "epochs": "ep",
    "max_steps": "steps", "batch_size": "bs", "dropout": "do", "batch_norm": "bn", "seed": "seed",
    "lecture_batch_size": "lbs", "val_fraction": "val", "patience": "pat", "class_weight": "cw",
    "optimizer": "", "activation": "", "head": "", "schedule": "", "scaler": "", "device": "",
}


def expand_grid(base: TrainConfig, **values: Sequence) -> list[TrainConfig]:
    """Every combination of the given values, each applied to ``base`` field by field.

    Parameters
    ----------
    base : TrainConfig
        The settings shared by all configurations (a preset, for example).
    **values : list
        For each :class:`~featmlp.training.TrainConfig` field to vary, the values to try. ``hidden``
        takes tuples of layer widths (an int means one layer). The first field varies slowest.

    Returns
    -------
    list of TrainConfig
        ``len`` is the product of the numbers of values; every one is validated.

    Raises
    ------
    ConfigError
        An unknown field, an empty list, or a value the field does not accept (the message names
        the field and the value).

    Examples
    --------
    >>> from featmlp.training import PRESETS
    >>> grid = expand_grid(PRESETS["lecture"], lr=[1, 10, 50, 500, 5000], hidden=[(6,), (6, 6)])
    >>> len(grid), grid[1].lr, grid[1].hidden
    (10, 1.0, (6, 6))
    """
    if not isinstance(base, TrainConfig):
        raise ConfigError(f"base must be a TrainConfig, got {type(base).__name__}")
    axes = []
    for name, options in values.items():
        if name not in _FIELDS:
            raise ConfigError(
                f"{name!r} is not a training setting; the grid can vary: {', '.join(_FIELDS)}"
            )
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence) or not options:
            raise ConfigError(
                f"grid values for {name} must be a non-empty list, e.g. {name}=[...], "
                f"got {options!r}"
            )
        axis = [_normalise(name, v) for v in options]
        for value in axis:
            try:
                dataclasses.replace(base, **{name: value}).validate()
            except ConfigError as e:
                raise ConfigError(f"grid value {name}={value!r} is not accepted: {e}") from None
        axes.append((name, axis))
    configs = []
    for combo in itertools.product(*(axis for _, axis in axes)):
        config = dataclasses.replace(base, **dict(zip((n for n, _ in axes), combo)))
        try:
            config.validate()  # settings that are fine alone may clash together
        except ConfigError as e:
            setting = ", ".join(f"{n}={v!r}" for (n, _), v in zip(axes, combo))
            raise ConfigError(f"grid combination {setting} is not accepted: {e}") from None
        configs.append(config)
    return configs


def _normalise(name: str, value):
    if name == "hidden":
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,)
        if isinstance(value, list):
            return tuple(value)
    if name == "class_weight" and isinstance(value, list):
        return tuple(value)
    if name in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def setting_label(name: str, value) -> str:
    """A setting's value as a label, safe in file and run names and used in the sweep's legends:
    ``(6, 6)`` -> ``"6-6"`` (tables format their cells with :func:`featmlp.runs.compare.format_cell`)."""
    if name == "hidden":
        return "-".join(str(w) for w in value)
    if isinstance(value, tuple):
        return "-".join(setting_label(name, v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def varying_fields(configs: Sequence[TrainConfig]) -> list[str]:
    """The fields whose value differs between ``configs``, in :class:`TrainConfig` order."""
    return [f for f in _FIELDS if len({_key(getattr(c, f)) for c in configs}) > 1]


def config_names(configs: Sequence[TrainConfig]) -> list[str]:
    """Unique, filesystem-safe names built from ``lr``, ``hidden`` and the fields that vary.

    ``lr10_h6-6``; a second configuration with the same name gets ``_2`` appended.
    """
    shown = ["lr", "hidden"] + [f for f in varying_fields(configs) if f not in ("lr", "hidden")]
    names, seen = [], {}
    for config in configs:
        parts = [_NAME_PREFIX.get(f, f) + setting_label(f, getattr(config, f)) for f in shown]
        name = re.sub(r"[^A-Za-z0-9._+-]", "-", "_".join(parts))
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return names


def _key(value):
    return tuple(value) if isinstance(value, list) else value


def stack_key(config: TrainConfig):
    """What configurations must share to train in one stacked pass; None if this one cannot.

    They share the data as the model sees it (scaler, validation split, class weights), the
    network's shape and loss, the optimiser, and the order of minibatches: for minibatch
    optimisers the batch size and the seed (which draws the order). Learning rate, weight decay,
    momentum, schedule, epochs, ``max_steps``, ``lecture_batch_size`` and, for full-batch ``"gd"`` without a
    validation split, the seed (initial weights only) may differ. Dropout and batch norm need
    autograd per configuration, and early stopping restores per-configuration best weights:
    those configurations train alone with :func:`featmlp.training.train`.
    """
    if config.dropout or config.batch_norm or config.patience or config.bottleneck or config.flip \
            or config.label_smoothing:
        return None
    full_batch = config.optimizer in FULL_BATCH_OPTIMIZERS
    seed_matters = not full_batch or config.val_fraction > 0
    return (tuple(config.hidden), config.activation, config.head, config.optimizer,
            None if full_batch else config.batch_size, config.seed if seed_matters else None,
            config.scaler, config.val_fraction, _key(config.class_weight), config.device)
