"""Tasks on a Dask cluster (``pip install featmlp[dask]``): connect, submit, follow, retry.

featmlp runs on an existing distributed engine rather than a home-made one: Dask's
``distributed`` scheduler places the tasks, reschedules those of a worker that died (up to
``retries`` more times each), and its futures report as each task ends. The tasks are
extraction chunks (:func:`featmlp.tables.extract.extract_shard`): each reads its own images and
writes its own shard, so pixels never travel through the scheduler, only file names and the
shard records that come back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid

from featmlp.errors import ConfigError, DataError

# Each task is tried this many more times when its worker dies or it fails; the scheduler's
# own limit on tasks that were running on dying workers (distributed.scheduler.allowed-failures,
# 3 by default) applies as well.
RETRIES = 3
_LOCAL = re.compile(r"^local(?::(\d+))?$")
CLUSTER_HELP = ("'local:N' (a Dask LocalCluster of N worker processes on this machine) or a scheduler "
                "address such as 'tcp://10.0.0.5:8786'")


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError("a Dask cluster needs the distributed package: pip install 'featmlp[dask]'") from None
    return distributed


@contextlib.contextmanager
def environment_kept():
    """Restore ``os.environ`` afterwards: a LocalCluster's nannies set OMP_NUM_THREADS=1 (and
    MKL_, OPENBLAS_, MALLOC_TRIM_) in *this* process's environment to pass them to the workers
    they spawn, and leave them there; training later in the same session would take them for
    the user's own setting and give up its thread policy."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check_cluster(spec) -> None:
    """ConfigError unless ``spec`` names a cluster (``local:N``, an address) or is a ``Client``."""
    if spec is None or not isinstance(spec, str):
        return
    m = _LOCAL.match(spec)
    if m:
        if m.group(1) is not None and int(m.group(1)) < 1:
            raise ConfigError(f"cluster {spec!r} asks for no workers: use local:1 or more")
        return
    if "://" not in spec and not re.match(r"^[\w.\-\[\]:]+:\d+$", spec):
        raise ConfigError(f"cluster {spec!r} is not {CLUSTER_HELP}")


@contextlib.contextmanager
def connect(spec):
    """A connected ``distributed.Client`` for ``spec`` (see :func:`check_cluster`), closed after.

    ``local:N`` starts a LocalCluster of N single-threaded worker processes listening on
    127.0.0.1 only, without a dashboard, and stops it afterwards; ``local`` alone takes one
    worker per core. A ``Client`` passed in is used as it is and left open.
    """
    distributed = _distributed()
    if not isinstance(spec, str):
        yield spec
        return
    check_cluster(spec)
    m = _LOCAL.match(spec)
    if m:
        n = int(m.group(1)) if m.group(1) else (os.cpu_count() or 1)
        from distributed.deploy.spec import SpecCluster

        before = set(SpecCluster._instances)
        with environment_kept():
            try:
                cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                                   dashboard_address=None, silence_logs=logging.ERROR)
                client = distributed.Client(cluster)
                yield client
            except BaseException:  # Ctrl-C, SIGTERM, an error: the workers stop now, without a word
                for started in set(SpecCluster._instances) - before:  # the cluster, even half-started
                    _kill_workers(started)
                raise
            client.close()
            cluster.close()
        return
    address = spec if "://" in spec else f"tcp://{spec}"
    try:
        client = distributed.Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise DataError(f"cannot reach the Dask scheduler at {address} ({type(e).__name__}: {e}): start one "
                        f"(`dask scheduler`, then `dask worker {address}` on each machine), or use "
                        f"--cluster local:N on this machine") from None
    with client:
        yield client


def _kill_workers(cluster) -> None:
    """End a LocalCluster at once: its worker processes killed (SIGKILL), its nannies told not to
    restart them, and no close at exit.

    A graceful close lets each worker finish its task and then log, as the scheduler goes away, a
    heartbeat failure with its traceback: seconds, and tracebacks on the terminal after Ctrl-C. The
    scheduler and the nannies live in this process's event-loop thread and end with it. (Killed
    with the parent by SIGKILL, the workers exit on their own: Dask's nanny holds a pipe from the
    parent open in each.)
    """
    import signal

    from distributed.core import Status
    from distributed.deploy.spec import SpecCluster

    for name in ("distributed", "asyncio", "tornado"):  # a nanny that was starting reports its failure
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    for nanny in list(getattr(cluster, "workers", {}).values()):
        with contextlib.suppress(Exception):
            nanny.status = Status.closing  # a worker that exits is neither restarted nor reported
            pid = nanny.pid
            if pid:
                os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    with contextlib.suppress(Exception):
        SpecCluster._instances.discard(cluster)  # not closed again at exit, where it would wait for them


def run_on_cluster(spec, fn, tasks, *shared, retries: int = RETRIES):
    """Run ``fn(shared[0], *task, *shared[1:])`` for every task on the cluster; yield results as they end.

    ``tasks`` may be a generator: a few more tasks than the cluster has threads are in flight
    at once (the scheduler holds what they carry), the next submitted as each one ends.
    ``shared[1:]`` (the feature set's name, its fitted state, ...) are sent to every worker once
    (``Client.scatter(broadcast=True)``), not with each task. The first task that fails for good
    raises its error here and the others are cancelled.
    """
    distributed = _distributed()
    with connect(spec) as client:
        token = uuid.uuid4().hex[:8]
        head, rest = shared[0], list(shared[1:])
        # Large arguments (a kmeans dictionary) go to the workers once, as futures.
        rest = [client.scatter(v, broadcast=True, hash=False) if isinstance(v, dict) and v else v for v in rest]
        window = max(4, 2 * sum(client.nthreads().values()))
        todo = iter(tasks)
        running = distributed.as_completed()
        live = set()

        def submit_next() -> None:
            task = next(todo, None)
            if task is not None:
                fut = client.submit(fn, head, *task, *rest, key=f"featmlp-{task[0]}-{task[1]}-{token}",
                                    retries=retries, pure=False)
                live.add(fut)
                running.add(fut)

        try:
            for _ in range(window):
                submit_next()
            for fut in running:
                live.discard(fut)
                yield fut.result()
                submit_next()
        finally:
            client.cancel(list(live))
