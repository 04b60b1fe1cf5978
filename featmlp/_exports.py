"""A package's lazy public namespace: ``__getattr__``, ``__dir__`` and ``__all__`` from a map of names.

scikit-image's ``lazy_loader.attach`` in 15 lines: each public name is imported from its module the
first time it is asked for, so a package ``__init__`` can list torch's users (``featmlp.training``,
``featmlp.runs``) while ``featmlp.training.config`` and ``featmlp.runs.report`` still load without
torch. One import path per public name: the package; no facade modules.

>>> getattr_, dir_, all_ = lazy_exports("featmlp.errors", {"DataError": "featmlp.errors"})
>>> getattr_("DataError").__name__, all_
('DataError', ['DataError'])
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__, __all__)`` for ``package``, each key of ``names`` read from its module."""

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            setattr(importlib.import_module(package), name, value)  # the next lookup skips __getattr__
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__, list(names)
