"""Fixtures shared across the test suite (small, built in code)."""

from __future__ import annotations

import io
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification

from featmlp.data import Dataset, load_dataset
from featmlp.tables.store import FeatureTable


@pytest.fixture(autouse=True, scope="session")
def _no_reuse_between_tests():
    """Each test loads and extracts its own jobs: featmlp's cache of small jobs
    (featmlp.runs.reuse, in the user's cache folder) is off unless a test turns it on."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEATMLP_REUSE", "0")
        yield


@pytest.fixture
def tiny_dataset() -> Dataset:
    """3 classes of random 8x8 images: 12 train, 6 test, balanced."""
    rng = np.random.default_rng(0)
    return Dataset(
        train_images=rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
        train_labels=np.arange(12) % 3,
        test_images=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
        test_labels=np.arange(6) % 3,
        class_names=("cat", "dog", "frog"),
        source="tiny random dataset (tests/conftest.py)",
    )


@pytest.fixture(scope="session")
def sample_dataset() -> Dataset:
    """The bundled CIFAR-10 sample (5,000 + 1,000 images), loaded once per session."""
    return load_dataset("sample")


@pytest.fixture
def run_cli(capsys):
    """Run the featmlp command in-process: ``code, stdout, stderr = run_cli([...])``."""
    from featmlp.cli import main

    def run(args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return e.value.code, out, err

    return run


CIFAR_JPG = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"


@pytest.fixture(scope="session")
def cifar_images() -> np.ndarray:
    """The first 300 images of ../shared/data/cifar10-jpg.tar.gz as (300, 32, 32, 3) uint8.

    Skips the test when the archive is absent (a clone of the project alone has no shared/).
    """
    from PIL import Image

    if not CIFAR_JPG.exists():
        pytest.skip(f"needs {CIFAR_JPG} (the shared CIFAR-10 JPEG archive)")
    images = []
    with tarfile.open(CIFAR_JPG) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                images.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")))
                if len(images) == 300:
                    break
    return np.stack(images)


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def lock_holder():
    """``hold(path)`` starts a process holding an flock on ``path`` as a running featmlp writer
    does and returns it once the lock is held; killed (if still alive) when the test ends."""
    import subprocess
    import sys

    procs = []

    def hold(path):
        proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on 127.0.0.1 for this test: ``(filesystem, storage_options)``."""
    pytest.importorskip("s3fs", reason="the S3 tests need s3fs: pip install 'featmlp[cloud]'")
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server]: pip install 'moto[server]'")
    from moto.server import ThreadedMotoServer
    import s3fs

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing"}.items():
        monkeypatch.setenv(k, v)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
        # moto keeps its buckets in this process, across servers: start from none.
        urllib.request.urlopen(urllib.request.Request(f"{options['endpoint_url']}/moto-api/reset", method="POST"))
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("bucket")
        yield fs, options
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def table():
    """A 3-class feature table of 9 columns (scikit-learn's make_classification), 450 train, 150 test rows."""
    X, y = make_classification(600, 9, n_informative=6, n_classes=3, random_state=0)
    return FeatureTable(X[:450], y[:450], X[450:], y[450:], tuple(f"f{i}" for i in range(9)),
                        ("ant", "bee", "cow"), {"features": "lecture"})
