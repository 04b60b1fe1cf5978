"""The CPU facts every stage's thread policy starts from, without torch: the cores this process may
run on and the user's word on the thread count (``FEATMLP_NUM_THREADS``)."""

from __future__ import annotations

import os
import time

from featmlp.errors import ConfigError

# The user's word on the thread count, above every rule of featmlp's.
THREADS_ENV = "FEATMLP_NUM_THREADS"
# The most threads FEATMLP_NUM_THREADS may ask for, per core this process may run on.
MAX_THREADS_PER_CORE = 4


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system says, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def env_threads() -> int | None:
    """``FEATMLP_NUM_THREADS`` as a number of threads, or None when unset.

    Raises
    ------
    ConfigError
        It is set to something other than a positive integer, or to more than
        ``MAX_THREADS_PER_CORE`` threads per core of the machine.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(f"{THREADS_ENV}={value!r} is not a positive number of threads: set it "
                          f"to 1, 2, ... or unset it to let featmlp choose")
    cores = machine_cores()
    if threads > MAX_THREADS_PER_CORE * cores:
        # OpenMP cannot start that many (libgomp fails, or the process crashes), and threads
        # beyond the cores only wait on each other.
        raise ConfigError(f"{THREADS_ENV}={value!r} is more threads than this machine can use: it has "
                          f"{cores} core{'s' if cores > 1 else ''}; set it to at most "
                          f"{MAX_THREADS_PER_CORE * cores}, or unset it to let featmlp choose")
    return threads


def idle_cores(seconds: float = 0.1) -> float | None:
    """Cores that other processes left idle over the next ``seconds`` (Linux ``/proc/stat``).

    This process's own CPU time in the window is not counted as busy. None where
    ``/proc/stat`` cannot be read.
    """
    def read():
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        return sum(ticks), ticks[3] + ticks[4], time.perf_counter(), time.process_time()

    try:
        total0, idle0, wall0, own0 = read()
        time.sleep(seconds)
        total1, idle1, wall1, own1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0 or wall1 <= wall0:
        return None
    cores = (total1 - total0) / (os.sysconf("SC_CLK_TCK") * (wall1 - wall0))
    busy = cores * (1 - (idle1 - idle0) / (total1 - total0)) - (own1 - own0) / (wall1 - wall0)
    return max(0.0, cores - max(0.0, busy))
