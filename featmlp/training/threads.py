"""The CPU thread policy of training: how many threads a run gets, and the user's word on it.

:func:`training_threads` is a pure function of the step's size, the override and the machine's
load; :func:`threads_for` applies it around one run and restores torch's count afterwards.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from featmlp.model import MLPSpec
from featmlp.training.config import FULL_BATCH_OPTIMIZERS, TrainConfig

if TYPE_CHECKING:
    import torch


# Below this many multiply-adds per step, train on one CPU thread. Measured on this 2-core
# machine: 9 -> 64 -> 10 at batch 256 takes 0.020 s/epoch on one thread and 0.023 s on two when
# the machine is quiet, 0.4-0.7 s on two when another process holds the second core (OpenMP
# threads wait on each other at every small op); the lecture's full-batch epoch 2.2 ms against
# 1.7-300 ms. From (256, 256) at batch 256 (18M per step) two threads are 1.6x faster.
_SINGLE_THREAD_WORK = 8_000_000
from featmlp._cpu import MAX_THREADS_PER_CORE, THREADS_ENV, env_threads, idle_cores, machine_cores  # noqa: F401 (re-exported)


def threads_override() -> int | None:
    """The thread count the user set for training, or None to let :func:`training_threads` choose.

    ``FEATMLP_NUM_THREADS=N`` trains on N CPU threads whatever the network and the machine's
    load. Without it, an ``OMP_NUM_THREADS`` the user set is honoured as torch applied it (the
    thread count torch started with is kept).

    Raises
    ------
    ConfigError
        ``FEATMLP_NUM_THREADS`` is set to something other than a positive integer, or to more than
        ``MAX_THREADS_PER_CORE`` threads per core of the machine.
    """
    threads = env_threads()
    if threads is not None:
        return threads
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        import torch  # start-up: only to read the count torch applied (the lecture's run needs no torch)

        return torch.get_num_threads()
    return None


def training_threads(work: int, available: int, *, override: int | None = None,
                     idle_cores: float | None = None) -> int:
    """How many CPU threads to train with: a pure function of the sizes, the override and the load.

    Parameters
    ----------
    work : int
        Multiply-adds of one step's forward pass (batch rows x the weights of every layer).
    available : int
        Threads torch has (its default: the cores).
    override : int, optional
        The user's choice (:func:`threads_override`): returned as it is.
    idle_cores : float, optional
        Cores other processes leave free (:func:`idle_cores`); None when not measured.

    Returns
    -------
    int
        1 below ``_SINGLE_THREAD_WORK`` (small steps: the threads would wait on each other at
        every op); else as many as there are idle cores (OpenMP's threads all wait for the
        slowest at each op, and one sharing its core with a busy process is slower than a
        single thread alone), at most ``available``.

    Examples
    --------
    >>> training_threads(9 * 6 * 50_000, 2)            # the lecture network, full batch
    1
    >>> training_threads(256 * 70_400, 2, idle_cores=1.9)  # 9 -> 256 -> 256 -> 10, quiet
    2
    >>> training_threads(256 * 70_400, 2, idle_cores=1.0)  # another process busy
    1
    >>> training_threads(100, 2, override=2)
    2
    """
    if override is not None:
        return override
    if available <= 1 or work < _SINGLE_THREAD_WORK:
        return 1
    if idle_cores is None:
        return available
    return max(1, min(available, int(idle_cores + 0.25)))


@contextlib.contextmanager
def threads_for(spec: MLPSpec, config: TrainConfig, n: int, device: torch.device):
    """Train on :func:`training_threads`'s count; torch's own is restored afterwards."""
    import torch  # start-up: loaded by torch's training only (threads_override needs none)

    widths = spec.widths
    batch = n if config.optimizer in FULL_BATCH_OPTIMIZERS else min(config.batch_size, n)
    work = batch * sum(a * b for a, b in zip(widths, widths[1:]))
    before = torch.get_num_threads()
    override = threads_override()
    # The load is measured (0.1 s) only where it can change the answer.
    measure = device.type == "cpu" and override is None and before > 1 and work >= _SINGLE_THREAD_WORK
    threads = training_threads(work, before, override=override,
                               idle_cores=idle_cores() if measure else None)
    if device.type != "cpu" or threads == before:
        yield
        return
    torch.set_num_threads(threads)  # process-wide: restored as soon as training ends
    try:
        yield
    finally:
        torch.set_num_threads(before)
