"""Extraction on a Dask cluster: real worker processes over TCP on 127.0.0.1, killed workers, a killed client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from featmlp.tables.cluster import environment_kept
from featmlp.data import load_dataset
from featmlp.tables.extract import extract_to_shards, work_dir
from featmlp.tables.sharded import read_manifest
from featmlp.tables.store import table_fingerprint

from _files import image_folder, source_files, upload, write_folder

distributed = pytest.importorskip("distributed", reason="the Dask tests need pip install 'featmlp[dask]'")


@pytest.fixture
def folder(tmp_path):
    return image_folder(tmp_path / "images", n_per_class=20, size=(24, 20))


@pytest.fixture
def client():
    """Two single-threaded worker processes, each under a nanny that restarts it, on 127.0.0.1."""
    import logging

    with environment_kept(), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=None, silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _same(a, b):
    for split in ("train", "test"):
        np.testing.assert_array_equal(np.asarray(getattr(a, f"X_{split}")), np.asarray(getattr(b, f"X_{split}")))
        np.testing.assert_array_equal(getattr(a, f"y_{split}"), getattr(b, f"y_{split}"))
    assert table_fingerprint(a) == table_fingerprint(b)


def test_a_local_cluster_gives_the_local_table(folder, tmp_path, client):
    ds = load_dataset(folder)
    local = extract_to_shards(ds, "lecture+hog", tmp_path / "local.features", chunk_size=7)
    addresses = list(client.scheduler_info()["workers"])
    assert len(addresses) == 2 and all(a.startswith("tcp://127.0.0.1:") for a in addresses)
    on_cluster = extract_to_shards(ds, "lecture+hog", tmp_path / "dask.features", chunk_size=7, cluster=client)
    _same(on_cluster, local)
    # the tasks ran in the workers' processes, not here: each wrote its own shard
    assert client.run(os.getpid).keys() == set(addresses)


def test_local_n_starts_and_stops_its_own_cluster(folder, tmp_path):
    ds = load_dataset(folder)
    local = extract_to_shards(ds, "lecture", tmp_path / "local.features", chunk_size=9)
    table = extract_to_shards(ds, "lecture", tmp_path / "dask.features", chunk_size=9, cluster="local:2")
    _same(table, local)


def test_a_worker_killed_mid_extraction_loses_nothing(folder, tmp_path, client):
    ds = load_dataset(folder)
    local = extract_to_shards(ds, "lecture", tmp_path / "local.features", chunk_size=3)
    pids = client.run(os.getpid)
    killed = []

    def kill_one(desc, done, total):
        if desc == "extract" and done and not killed:  # the first shard is back: others are running
            victim = next(iter(pids.values()))
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    table = extract_to_shards(ds, "lecture", tmp_path / "dask.features", chunk_size=3, cluster=client,
                              progress=kill_one)
    assert killed
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # it really died
    _same(table, local)
    manifest = read_manifest(tmp_path / "dask.features")
    assert len(manifest["splits"]["train"]) == 20 and len(manifest["splits"]["test"]) == 3  # 60 / 3, 9 / 3
    for split, shards in manifest["splits"].items():
        for s in shards:
            assert (tmp_path / "dask.features" / s["file"]).is_file()


_CLIENT = """
import os, signal, sys
from featmlp.data import load_dataset
from featmlp.tables.extract import extract_to_shards

def die(desc, done, total):
    if desc == "extract" and done >= 15:
        os.kill(os.getpid(), signal.SIGKILL)  # the client, as by kill -9 or a lost ssh session

extract_to_shards(load_dataset(sys.argv[1]), "lecture", sys.argv[2], chunk_size=3, cluster="local:2",
                  progress=die)
"""


def test_a_rerun_after_the_client_was_killed_resumes(folder, tmp_path):
    out = tmp_path / "t.features"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_CLIENT), str(folder), str(out)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proc.wait(timeout=120) == -signal.SIGKILL
    finally:
        # the LocalCluster's worker processes lose their scheduler and leave; make sure of it
        time.sleep(0.5)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not out.exists()
    finished = sorted(work_dir(out).glob("*-*.json"))
    assert len(finished) >= 5  # 15 images or more, 3 a shard
    mtimes = {p.name: p.stat().st_mtime_ns for p in finished}

    ds = load_dataset(folder)
    table = extract_to_shards(ds, "lecture", out, chunk_size=3, cluster="local:2")
    assert {name: (out / name).stat().st_mtime_ns for name in mtimes} == mtimes  # kept, not redone
    _same(table, extract_to_shards(ds, "lecture", tmp_path / "clean.features", chunk_size=3))


def test_an_unreachable_scheduler_is_one_line(folder, tmp_path, run_cli):
    code, out, err = run_cli(["extract", folder, "-o", tmp_path / "t.features", "--cluster", "tcp://127.0.0.1:9"])
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert not (tmp_path / "t.features").exists()


def test_a_cluster_extracts_from_s3_as_from_the_folder(tmp_path, s3, client):
    """Workers read their own chunks from a moto S3 bucket on 127.0.0.1 (s3fs with endpoint_url)."""
    fs, options = s3
    files = source_files(True)
    upload(fs, "imgs", files)
    folder = load_dataset(write_folder(tmp_path / "folder", files))
    remote = load_dataset("s3://bucket/imgs/", storage_options=options)
    local = extract_to_shards(folder, "lecture+color", tmp_path / "local.features", chunk_size=2)
    on_cluster = extract_to_shards(remote, "lecture+color", tmp_path / "s3.features", chunk_size=2, cluster=client)
    for split in ("train", "test"):
        np.testing.assert_array_equal(np.asarray(getattr(on_cluster, f"X_{split}")),
                                      np.asarray(getattr(local, f"X_{split}")))
        np.testing.assert_array_equal(getattr(on_cluster, f"y_{split}"), getattr(local, f"y_{split}"))


def test_a_local_cluster_leaves_this_process_environment_as_it_was(folder, tmp_path):
    before = dict(os.environ)
    extract_to_shards(load_dataset(folder), "lecture", tmp_path / "t.features", chunk_size=30, cluster="local:1")
    assert dict(os.environ) == before  # the nannies set OMP_NUM_THREADS=1 & co. here to spawn the workers


def test_tasks_are_submitted_a_window_at_a_time(client):
    # A generator of tasks is not drained up front: the scheduler holds only those in flight.
    from featmlp.tables.cluster import run_on_cluster

    pulled = []

    def tasks():
        for i in range(40):
            pulled.append(i)
            yield (i, i)

    window = 2 * sum(client.nthreads().values())  # 2 workers of one thread: 4
    ahead = []
    results = []
    for r in run_on_cluster(client, max, tasks(), 0):  # max(0, i, i) == i, run on a worker
        results.append(r)
        ahead.append(len(pulled) - len(results))
    assert sorted(results) == list(range(40))
    assert max(ahead) <= window - 1 and len(pulled) == 40
