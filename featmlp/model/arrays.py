"""A plain network's weights as numpy arrays: what the lecture's gradient descent trains without torch.

:class:`ArrayMLP` computes what :class:`featmlp.model.network.MLP` computes for a network without
dropout, batch norm or bottleneck (logits; probabilities are their softmax), with numpy. Its
:meth:`~ArrayMLP.state_dict` has the names, shapes and dtype of that MLP's, so a bundle written from
it is the same two files (safetensors + JSON) and loads as the torch network.

:func:`initial_arrays` draws, bit for bit, the weights torch draws after ``torch.manual_seed(seed)``
in :func:`featmlp.model.build_mlp` (each ``nn.Linear``: weight, then bias, both uniform in
``±1/sqrt(fan_in)``): torch's CPU generator is the 32-bit Mersenne Twister seeded as numpy's legacy
``RandomState(seed)`` is; a float32 uniform takes the low 24 bits of one 32-bit draw as
``x = bits * 2**-24`` and returns ``x * (to - from) + from`` in one fused multiply-add (computed here
exactly in float64 and rounded once to float32). The tests compare it with torch's for several
seeds and networks. Importing torch costs ~2 s; the lecture's 20 epochs, microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from featmlp.model.scaler import Scaler
from featmlp.model.spec import MLPSpec
from featmlp.tables.passes import row_blocks
from featmlp.tables.sharded import ShardedArray


# Name -> (in-place forward, backward ``f(grad, output) -> grad``): the lecture's ReLU (the others
# train with torch; the tests compare this one with it).
ARRAY_ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0, out=z), lambda g, a: np.multiply(g, a > 0, out=g)),
}


def array_network_fits(spec: MLPSpec) -> bool:
    """Whether :class:`ArrayMLP` computes this network: linear layers and an activation of
    :data:`ARRAY_ACTIVATIONS`, no dropout, batch norm or bottleneck."""
    return (spec.activation in ARRAY_ACTIVATIONS and spec.dropout == 0 and not spec.batch_norm
            and not spec.bottleneck)


def _torch_uniform(bits: np.ndarray, bound: float) -> np.ndarray:
    low, high = np.float32(-bound), np.float32(bound)
    x = (bits & np.uint64((1 << 24) - 1)).astype(np.float64) * 2.0 ** -24
    return (x * np.float64(high - low) + np.float64(low)).astype(np.float32)


def initial_arrays(spec: MLPSpec, seed: int) -> "ArrayMLP":
    """The network ``torch.manual_seed(seed); build_mlp(spec)`` builds, drawn without torch.

    Examples
    --------
    >>> model = initial_arrays(MLPSpec(9, 10, hidden=(6,)), seed=0)
    >>> [w.shape for w in model.weights], model.weights[0].dtype
    ([(6, 9), (10, 6)], dtype('float32'))
    """
    if not array_network_fits(spec) or not 0 <= seed < 2**32:
        raise ValueError(f"initial_arrays draws plain networks of seeds 0 .. 2**32 - 1, not {spec} seed {seed}")
    generator = np.random.MT19937(0)
    generator._legacy_seeding(int(seed))  # init_genrand(seed): torch.manual_seed's state
    weights, biases = [], []
    widths = spec.widths
    for fan_in, fan_out in zip(widths, widths[1:]):
        # nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) on the weight (this bound, as
        # torch computes it in float64), then uniform(+-1/sqrt(fan_in)) on the bias
        gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
        bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
        weights.append(_torch_uniform(generator.random_raw(fan_in * fan_out), bound).reshape(fan_out, fan_in))
        biases.append(_torch_uniform(generator.random_raw(fan_out), 1 / math.sqrt(fan_in)))
    return ArrayMLP(spec, weights, biases)


@dataclass
class ArrayMLP:
    """Weights ``(out, in)`` and biases ``(out,)`` of each linear layer, float32, input to output.

    Examples
    --------
    >>> model = initial_arrays(MLPSpec(3, 2, hidden=(4,)), seed=0)
    >>> model.logits(np.zeros((5, 3), np.float32)).shape
    (5, 2)
    >>> list(model.state_dict())
    ['hidden.0.0.weight', 'hidden.0.0.bias', 'output.weight', 'output.bias']
    """

    spec: MLPSpec
    weights: list
    biases: list

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Logits (N, C) of scaled features ``X`` (N, F), float32."""
        forward = ARRAY_ACTIVATIONS[self.spec.activation][0]
        a = np.asarray(X, np.float32)
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            a = a @ w.T + b
            if k < last:
                a = forward(a)
        return a

    def state_dict(self) -> dict[str, np.ndarray]:
        """The arrays under the names :class:`featmlp.model.network.MLP` gives its parameters."""
        names = [f"hidden.{k}.0" for k in range(len(self.spec.hidden))] + ["output"]
        state = {}
        for name, w, b in zip(names, self.weights, self.biases):
            state[f"{name}.weight"], state[f"{name}.bias"] = w, b
        return state

    def predict_proba(self, scaler: Scaler, X, *, batch_size: int = 65536, mirror=None,
                      mirror_features=None) -> np.ndarray:
        """``softmax(logits(scaler(X)))`` for raw features ``X``, in order, as
        :func:`featmlp.model.predict_proba` computes it for the torch network (flips included)."""
        if not isinstance(X, ShardedArray):
            X = np.asarray(X)

        def proba(rows):
            p = softmax(self.logits(scaler.transform(rows)))
            if mirror is not None:
                p = (p + softmax(self.logits(scaler.transform(rows[:, mirror])))) / 2
            return p

        with np.errstate(over="ignore", invalid="ignore"):  # diverged weights give NaN, as torch's
            out = [proba(np.asarray(rows)) for _, rows in row_blocks(X, batch_size)]
        if not out:
            return np.zeros((0, self.spec.n_classes), np.float32)
        if mirror_features is not None:
            return (np.concatenate(out) + self.predict_proba(scaler, mirror_features, batch_size=batch_size)) / 2
        return np.concatenate(out)


def softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax over ``axis``, shifted by the maximum (float32 in, float32 out)."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
