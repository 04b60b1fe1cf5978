"""Threaded and serial numba builds of one kernel (used by the feature modules)."""

from __future__ import annotations

import types


def serial_twin(py_func):
    """``py_func`` renamed ``<name>_serial``, for its serial build.

    numba's disk cache keys a function by module, name and line, not by ``parallel=``:
    two builds of one function share one cache entry, and the serial build then loads
    the threaded code (it did: ``parallel=False`` ran on all threads).
    """
    f = types.FunctionType(py_func.__code__, py_func.__globals__, py_func.__name__ + "_serial")
    f.__qualname__ = py_func.__qualname__ + "_serial"
    return f
