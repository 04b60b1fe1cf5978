"""How much memory is free, and one clear refusal when a job will not fit.

A network of ``--hidden 100000000`` or a bundle asking for 100000x100000 images used to be
found out by the kernel's OOM killer at ~21 GB, with no message. Callers estimate what they
need (:func:`featmlp.model.training_bytes`, :func:`featmlp.runs.predict.image_bytes`) and ask
:func:`check_memory` first.
"""

from __future__ import annotations

import os
from pathlib import Path

from featmlp.errors import ConfigError


def _cgroup_room(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes the container's cgroup still allows (v2, then v1); None without a limit."""
    for limit_file, usage_file, stat_file, cache_key in (
            (f"{root}/memory.max", f"{root}/memory.current", f"{root}/memory.stat", "inactive_file"),
            (f"{root}/memory/memory.limit_in_bytes", f"{root}/memory/memory.usage_in_bytes",
             f"{root}/memory/memory.stat", "total_inactive_file")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max":
                return None
            # The usage counts page cache the kernel gives back on demand; without its
            # inactive part (the working set, as container runtimes count it) a machine
            # that has just read a large file would look full.
            room = int(limit) - int(Path(usage_file).read_text().strip()) + _stat(stat_file, cache_key)
        except (OSError, ValueError):
            continue
        # v1 reports "no limit" as a huge number
        return room if int(limit) < 1 << 60 else None
    return None


def _stat(path: str, key: str) -> int:
    """One counter of a cgroup's memory.stat (0 when absent)."""
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def available_memory(device: str = "cpu") -> int | None:
    """Bytes that can be allocated now without swapping, or None when it cannot be told.

    CPU: psutil's ``available`` when installed, else ``MemAvailable`` of ``/proc/meminfo``,
    else the free pages ``os.sysconf`` reports; the smaller of that and the room left under
    a container's memory limit. CUDA devices: the free memory the driver reports.
    """
    if str(device).startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    free = None
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError, IndexError):
            pass
        if free is None:
            try:
                free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                free = None
    room = _cgroup_room()
    if room is not None:
        free = room if free is None else min(free, room)
    return free


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KB'``: binary multiples, one decimal.

    Examples
    --------
    >>> format_bytes(3 * 2**30)
    '3.0 GB'
    """
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"  # pragma: no cover


def check_memory(need: int, what: str, advice: str, *, device: str = "cpu") -> None:
    """Raise :class:`ConfigError` when ``need`` bytes exceed the memory available on ``device``.

    ``what`` names the job and its size (``"training 9 -> 100000000 -> 10"``), ``advice``
    what to change. Nothing is refused when the free memory cannot be told.
    """
    free = available_memory(device)
    if free is not None and need > free:
        where = "GPU memory" if str(device).startswith("cuda") else "memory"
        raise ConfigError(f"{what} needs about {format_bytes(need)} of {where}, and {format_bytes(free)} "
                          f"is available: {advice}")
