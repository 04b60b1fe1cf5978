"""featmlp: image classification with multilayer perceptrons on extracted image features."""

__version__ = "0.1.0"
