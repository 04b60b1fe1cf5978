"""Small on-disk fixtures shared by the data tests: folders and .tar.gz archives of given bytes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    """``root/<name>`` holding each file's bytes (folders in names are created)."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_tar(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    """A .tar.gz at ``path`` with one member ``prefix + name`` per file."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
