"""What a setting accepts, checked in one place: :class:`Field`, its kinds, :func:`check`, and JSON settings read back.

scikit-learn's ``_param_validation`` in featmlp's size: each settings object or public function
declares a table of :class:`Field` (``MLPSpec``'s :data:`~featmlp.model.spec.NETWORK_FIELDS`, which
``TrainConfig``'s :data:`~featmlp.training.config.FIELDS` extends; ``load_dataset``'s, the
extraction's and ``lr_find``'s arguments), :func:`check` walks it, and every message has one form,
naming the value and what is accepted. A wrong setting is a :class:`~featmlp.errors.ConfigError`;
bad data (files, images) stays a ``DataError``, raised where the data is read. Imports nothing of
featmlp's but the errors, and no torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from featmlp.errors import ConfigError


@dataclass(frozen=True)
class Field:
    """What one setting accepts.

    ``kind`` picks the check and the wording of its error: ``"int"`` (an integer >= ``low``, and
    <= ``high`` when given),
    ``"number"`` (a finite number within ``low``/``high``, each end open or closed),
    ``"probability"`` (a plain int or float in [0, 1)), ``"choice"`` (one of ``choices``),
    ``"bool"``, ``"text"`` (a str), ``"widths"`` (a sequence of layer widths >= 1), ``"width0"`` (a width, or 0 for
    none), ``"optional_int"`` (None or an integer >= ``low``), ``"class_weight"``, ``"device"``,
    ``"image_size"`` (None or a (width, height) pair of positive integers), ``"storage_options"``
    (None or a dict of filesystem settings keyed by name).
    """

    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()

    def error(self, name: str, value) -> str | None:
        """The message naming ``value`` and what is accepted, or None when it is accepted."""
        return _CHECKS[self.kind](self, name, value)


def is_int(value) -> bool:
    """An integer, Python's or numpy's, and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _int_error(f: Field, name, value):
    if not is_int(value) or value < f.low or (f.high is not None and value > f.high):
        rng = f">= {f.low}" if f.high is None else f"in [{f.low}, {f.high}]"
        return f"{name} must be an integer {rng}, got {value!r}"


def _optional_int_error(f: Field, name, value):
    return None if value is None else _int_error(f, name, value)


def _number_error(f: Field, name, value):
    low, high = f.low, f.high
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if f.low_open else value >= low
    if ok and high is not None:
        ok = value < high if f.high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            rng = f" in {'(' if f.low_open else '['}{low}, {high}{')' if f.high_open else ']'}"
        elif low is not None:
            rng = f" > {low}" if f.low_open else f" >= {low}"
        elif high is not None:
            rng = f" < {high}" if f.high_open else f" <= {high}"
        else:
            rng = ""
        return f"{name} must be a finite number{rng}, got {value!r}"


def _probability_error(f: Field, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value < 1.0):
        return f"{name} must be a probability in [0, 1), got {value!r}"


def _choice_error(f: Field, name, value):
    if value not in f.choices:
        return f"{name} {value!r} is not one of: {', '.join(map(str, f.choices))}"


def _text_error(f: Field, name, value):
    if not isinstance(value, str):
        return f"{name} must be text, got {value!r}"


def _bool_error(f: Field, name, value):
    if not isinstance(value, (bool, np.bool_)):
        return f"{name} must be true or false, got {value!r}"


def _widths_error(f: Field, name, value):
    if not isinstance(value, (tuple, list)) or not all(is_int(w) and w >= 1 for w in value):
        return f"{name} must be a sequence of positive layer widths such as (64,) or (512, 256), got {value!r}"


def _width0_error(f: Field, name, value):
    if not is_int(value) or value < 0:
        return f"{name} must be a layer width >= 1, or 0 for none, got {value!r}"


def _class_weight_error(f: Field, name, cw):
    if not (cw is None or cw == "balanced" or (
            isinstance(cw, (tuple, list)) and cw and all(
                isinstance(w, (int, float, np.number)) and not isinstance(w, bool)
                and math.isfinite(w) and w >= 0 for w in cw) and sum(cw) > 0)):
        return (f"{name} {cw!r} is not one of: None, 'balanced', or a tuple of one "
                f"non-negative weight per class")


def _device_error(f: Field, name, value):
    if not isinstance(value, str) or not (value in ("auto", "cpu") or value.startswith("cuda")):
        return f"{name} {value!r} is not one of: auto, cpu, cuda, cuda:N"


def _image_size_error(f: Field, name, value):
    if value is None:
        return None
    try:
        w, h = value
        ok = int(w) == w and int(h) == h and w >= 1 and h >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        return f"{name} must be (width, height) with two positive integers, got {value!r}"


def _storage_options_error(f: Field, name, value):
    if value is not None and not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
        return (f"{name} must be a dict of settings for the filesystem (e.g. "
                f"{{'endpoint_url': 'http://...', 'anon': True}}), got {value!r}")


_CHECKS: dict[str, Callable[[Field, str, Any], str | None]] = {
    "int": _int_error,
    "optional_int": _optional_int_error,
    "number": _number_error,
    "probability": _probability_error,
    "choice": _choice_error,
    "bool": _bool_error,
    "text": _text_error,
    "widths": _widths_error,
    "width0": _width0_error,
    "class_weight": _class_weight_error,
    "device": _device_error,
    "image_size": _image_size_error,
    "storage_options": _storage_options_error,
}

# A rule ties settings together: (checked right after this field, f(settings) -> message or None).
Rule = tuple[str, Callable[[Mapping[str, Any]], "str | None"]]


def check(settings: Mapping[str, Any], fields: Mapping[str, Field], rules: tuple[Rule, ...] = (),
          what: str = "") -> None:
    """Raise :class:`ConfigError` naming the first setting its :class:`Field` refuses.

    The settings are checked in the order of ``fields``, and each rule of ``rules`` right after
    the field it names (so the first bad value is the one named). A rule is called with
    ``settings`` and returns its message, or None. ``what`` starts every message (``"kmeans
    option "``: where the setting was given).

    Examples
    --------
    >>> fields = {"epochs": Field("int", "passes", low=1), "lr": Field("number", "step", low=0, low_open=True)}
    >>> check({"epochs": 3, "lr": 0.1}, fields)
    >>> check({"epochs": 3, "lr": 0}, fields)
    Traceback (most recent call last):
    ...
    featmlp.errors.ConfigError: lr must be a finite number > 0, got 0
    """
    for name, field in fields.items():
        message = field.error(name, settings[name])
        if message is None:
            message = next((m for after, rule in rules if after == name
                            for m in [rule(settings)] if m is not None), None)
        if message is not None:
            raise ConfigError(what + message)


def settings_from_dict(cls, d: dict, what: str):
    """Rebuild a frozen settings dataclass from its JSON form (a run's ``config.json``, a bundle).

    JSON lists come back as the tuples the dataclasses hold; an unknown key is a
    :class:`ConfigError` naming it and the known ones.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(d) - set(names)
    if unknown:
        raise ConfigError(f"unknown {what}(s): {', '.join(sorted(unknown))}; known: {', '.join(names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
