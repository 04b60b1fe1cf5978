"""Optional TensorBoard logging of a run: the public names of :mod:`featmlp.runs.tensorboard`, re-exported.

The code lives in ``featmlp.runs.tensorboard`` (run directories are in one package, :mod:`featmlp.runs`);
this module stays so that user code importing ``featmlp.tensorboard`` keeps working. featmlp's own
code imports from ``featmlp.runs.tensorboard``.
"""

from featmlp.runs.tensorboard import (  # noqa: F401 (re-exported)
    TEST_ACCURACY_TAG, TensorBoardLogger,
)

__all__ = [
    "TEST_ACCURACY_TAG", "TensorBoardLogger",
]
