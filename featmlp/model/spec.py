"""What a network is, without torch: :class:`MLPSpec` and its constraint table :data:`NETWORK_FIELDS`.

:data:`NETWORK_FIELDS` is the network's share of the settings (``hidden``, ``activation``,
``head``, ``dropout``, ``batch_norm``, ``bottleneck``): :meth:`MLPSpec.validate` checks them, and
:data:`featmlp.training.config.FIELDS` starts with them. The choices are the names of the
registries in :mod:`featmlp.model.network` (``ACTIVATIONS``, ``HEADS``), repeated as plain names
so that checking one needs no torch; a test holds the two lists equal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from featmlp._validation import Field, check, settings_from_dict

ACTIVATION_NAMES = ("relu", "tanh", "sigmoid", "gelu")
HEAD_NAMES = ("ce", "mse")

# The network's fields, in the order validate() checks them (TrainConfig.validate too: FIELDS
# starts with these).
NETWORK_FIELDS: dict[str, Field] = {
    "hidden": Field("widths", "width of each hidden layer, e.g. 6 (the lecture) or 512,256"),
    "activation": Field("choice", "activation after each hidden layer", choices=ACTIVATION_NAMES),
    "head": Field("choice", "output and loss: softmax cross-entropy, or the lecture's softmax + MSE against "
                  "one-hot labels", choices=HEAD_NAMES),
    "dropout": Field("probability", "dropout probability after each hidden activation, in [0, 1)"),
    "batch_norm": Field("bool", "batch normalisation after each hidden linear layer"),
    "bottleneck": Field("width0", "width of a linear layer between the input and the first hidden layer; "
                        "0: none"),
}

# Every field of MLPSpec: the sizes the data gives, then the network's own.
SPEC_FIELDS: dict[str, Field] = {
    "n_features": Field("int", "input size: the number of features", low=1),
    "n_classes": Field("int", "output size: the number of classes", low=1),
    **NETWORK_FIELDS,
}


@dataclass(frozen=True)
class MLPSpec:
    """The shape of a multilayer perceptron.

    Parameters
    ----------
    n_features, n_classes : int
        Input and output sizes.
    hidden : tuple of int
        Width of each hidden layer, e.g. ``(6,)`` (the lecture) or ``(512, 256)``.
    activation : str
        A key of :data:`ACTIVATIONS`.
    dropout : float
        Dropout probability after each hidden activation, in [0, 1).
    batch_norm : bool
        Batch normalisation after each hidden linear layer (before the activation).
    head : str
        A key of :data:`HEADS`: ``"ce"`` or the lecture's ``"mse"``.
    bottleneck : int
        Width of a linear layer (no activation, no dropout) between the input and the first
        hidden layer; 0: none. For thousands of features it is a low-rank first layer: 14,400
        learned features -> 128 -> 1024 costs a ninth of 14,400 -> 1024.

    Examples
    --------
    >>> spec = MLPSpec(9, 10, hidden=(6,), head="mse")
    >>> spec.validate()
    >>> MLPSpec.from_dict(spec.to_dict()) == spec
    True
    """

    n_features: int
    n_classes: int
    hidden: tuple[int, ...] = (64,)
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    head: str = "ce"
    bottleneck: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field and what is accepted."""
        check(vars(self), SPEC_FIELDS)

    @property
    def widths(self) -> tuple[int, ...]:
        """The width of every layer's input and of the output: features, bottleneck, hidden, classes.

        >>> MLPSpec(9, 10, hidden=(6,), bottleneck=4).widths
        (9, 4, 6, 10)
        """
        return (self.n_features, *([self.bottleneck] if self.bottleneck else []), *self.hidden, self.n_classes)

    def to_dict(self) -> dict:
        """JSON-ready dict (``hidden`` as a list)."""
        d = dataclasses.asdict(self)
        d["hidden"] = [int(w) for w in self.hidden]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MLPSpec":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return settings_from_dict(cls, d, "model spec field")


def parameter_count(spec: MLPSpec) -> int:
    """Number of learned values of the network ``spec`` describes, without building it.

    Examples
    --------
    >>> parameter_count(MLPSpec(9, 10, hidden=(6,)))  # 9*6 + 6 + 6*10 + 10
    130
    >>> from featmlp.model import build_mlp
    >>> sum(p.numel() for p in build_mlp(MLPSpec(9, 10, hidden=(6,))).parameters())
    130
    """
    widths = spec.widths
    linear = sum(int(a) * int(b) + int(b) for a, b in zip(widths, widths[1:]))
    return linear + (2 * sum(int(w) for w in spec.hidden) if spec.batch_norm else 0)


# Copies of the parameters a run holds at once (float32): the weights, their gradient, Adam's
# two moments, and the epoch-start, previous-epoch and best-epoch snapshots training keeps to
# step back from a divergence or restore the best epoch.
_PARAMETER_COPIES = 7
# Per sample of a batch and unit of a layer: its output, the pre-activation and its gradient.
_ACTIVATION_COPIES = 3


def training_bytes(spec: MLPSpec, batch_size: int, n_rows: int, *, copies: bool = True) -> int:
    """Rough bytes training ``spec`` needs beyond the feature table itself.

    The parameters and their optimiser state and snapshots, the activations of one batch of
    ``batch_size`` rows (all ``n_rows`` for full-batch gradient descent) forward and back, the
    scaled copies of the ``n_rows`` training rows the hand-written engine keeps (when they fit
    its 1 GB limit), and the epoch's logits. An estimate to refuse what cannot fit (a
    ``--hidden 100000000``), not an accounting: torch's own workspace comes on top.
    ``copies=False``: no scaled copies of the rows, only of a batch (rows streamed from disk).

    Examples
    --------
    >>> training_bytes(MLPSpec(9, 10, hidden=(6,)), 64, 1000) < 2**20
    True
    """
    widths = spec.widths[1:]
    batch = min(int(batch_size), int(n_rows))
    data = int(n_rows) * int(spec.n_features) * 4
    scaled = 3 * data if copies and data <= 1 << 30 else 2 * batch * int(spec.n_features) * 4
    return (4 * _PARAMETER_COPIES * parameter_count(spec)
            + 4 * _ACTIVATION_COPIES * batch * sum(int(w) for w in widths)
            + scaled + 2 * 4 * int(n_rows) * int(spec.n_classes))
