"""Download of the official CIFAR-10 archive into a cache, verified before it counts."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .._io import atomic_write
from ..errors import DataError
from ..progress import null_progress
from ._cifar import CIFAR10_MD5, CIFAR10_URL

_CHUNK = 1 << 20
_TIMEOUT_S = 60


def default_cache_dir() -> Path:
    """``$FEATMLP_CACHE``, else ``$XDG_CACHE_HOME/featmlp``, else ``~/.cache/featmlp``."""
    if os.environ.get("FEATMLP_CACHE"):
        return Path(os.environ["FEATMLP_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "featmlp"
    return Path.home() / ".cache" / "featmlp"


def _md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch_cifar10(cache_dir=None, url: str | None = None, md5: str | None = None,
                  progress=None) -> Path:
    """Path of a verified CIFAR-10 archive in the cache, downloading it if needed.

    A cached file is reused when its MD5 matches. A download is written to a temporary
    file that is renamed into the cache only after its MD5 matches, so an interrupted or
    corrupt download never passes for a complete one.
    """
    url = url or os.environ.get("FEATMLP_CIFAR10_URL") or CIFAR10_URL
    md5 = (md5 or os.environ.get("FEATMLP_CIFAR10_MD5") or CIFAR10_MD5).lower()
    progress = progress or null_progress
    name = Path(urllib.parse.urlparse(url).path).name or "cifar-10-python.tar.gz"
    target = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / name
    if target.is_file() and _md5_of(target) == md5:
        return target
    unreachable = (f"could not download CIFAR-10 from {url}; check the network (or set "
                   f"FEATMLP_CIFAR10_URL to a mirror), or download cifar-10-python.tar.gz "
                   f"yourself and pass its path as the data source")
    try:
        response = urllib.request.urlopen(url, timeout=_TIMEOUT_S)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise DataError(f"{unreachable} ({e})") from e
    with response, atomic_write(target, "wb") as out:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        h, done = hashlib.md5(), 0
        progress("download", 0, total)
        try:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                progress("download", done, total)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                TimeoutError) as e:
            raise DataError(f"{unreachable} (connection lost after {done} bytes: {e})") from e
        if total is None:
            progress("download", done, done)  # lets a progress bar of unknown length finish
        # Raising inside atomic_write removes the temporary file: nothing lands in the cache.
        if total is not None and done != total:
            raise DataError(f"download of {url} stopped after {done} of {total} bytes; try again")
        if h.hexdigest() != md5:
            raise DataError(f"download of {url} has MD5 {h.hexdigest()}, expected {md5}: the file "
                            f"is corrupt or not the CIFAR-10 archive (nothing was cached)")
    return target
