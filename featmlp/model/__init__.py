"""What a trained model is, apart from how it was trained: the network's spec, the scaler, the network.

- :mod:`~featmlp.model.spec`: :class:`MLPSpec` and its constraint table :data:`NETWORK_FIELDS`,
  :func:`parameter_count`, :func:`training_bytes` (no torch).
- :mod:`~featmlp.model.scaler`: :class:`Scaler` and :data:`SCALERS` (no torch).
- :mod:`~featmlp.model.network`: :func:`build_mlp`, :class:`MLP`, :data:`ACTIVATIONS`,
  :data:`HEADS`, the losses, :func:`predict_proba` (torch).
- :mod:`~featmlp.model.arrays`: :class:`ArrayMLP`, a plain network's weights as numpy arrays, and
  :func:`initial_arrays`, torch's initial weights drawn without torch (no torch).

The names load lazily (:func:`featmlp._exports.lazy_exports`): ``from featmlp.model import
MLPSpec, Scaler`` imports no torch.
"""

from featmlp._exports import lazy_exports

_NAMES = {
    **dict.fromkeys(["MLPSpec", "NETWORK_FIELDS", "parameter_count", "training_bytes"], "featmlp.model.spec"),
    **dict.fromkeys(["Scaler", "SCALERS"], "featmlp.model.scaler"),
    **dict.fromkeys(["ArrayMLP", "initial_arrays"], "featmlp.model.arrays"),
    **dict.fromkeys(["MLP", "build_mlp", "ACTIVATIONS", "HEADS", "cross_entropy_loss", "softmax_mse_loss",
                     "loss_function", "predict_proba"],
                    "featmlp.model.network"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _NAMES)
