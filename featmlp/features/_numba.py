"""One idiom for the feature kernels: a threaded and a serial build of one Python kernel.

A kernel is written once, as a plain Python function whose outer loop is ``numba.prange``
(over images, or over the threads' shares of them), and :func:`threaded_and_serial` compiles it
twice: with ``parallel=True`` for this process, and without it for worker processes, where
``prange`` is plain ``range``. A process forked from one whose threads run on GNU OpenMP must
not start threads (numba terminates it), and a serial build never touches the threading layer.
"""

from __future__ import annotations

import types

import numba


def serial_twin(py_func):
    """``py_func`` renamed ``<name>_serial``, for its serial build.

    numba's disk cache keys a function by module, name and line, not by ``parallel=``:
    two builds of one function share one cache entry, and the serial build then loads
    the threaded code (it did: ``parallel=False`` ran on all threads).
    """
    f = types.FunctionType(py_func.__code__, py_func.__globals__, py_func.__name__ + "_serial")
    f.__qualname__ = py_func.__qualname__ + "_serial"
    return f


def threaded_and_serial(py_func, **options):
    """``(threaded, serial)``: ``py_func`` compiled with ``parallel=True``, and its :func:`serial_twin` without.

    Both are cached on disk (``cache=True``), each under its own name; ``options`` (such as
    ``fastmath=True``) apply to both, so the two compute the same numbers.
    """
    return (numba.njit(cache=True, parallel=True, **options)(py_func),
            numba.njit(cache=True, **options)(serial_twin(py_func)))
