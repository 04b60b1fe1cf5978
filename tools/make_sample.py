"""Build featmlp's bundled CIFAR-10 sample from the full JPEG archive.

Picks, per split and class, a fixed number of images (500 train and 100 test by default)
and writes their original JPEG bytes, unchanged, into one .tar.gz in the same
``train|test/<class>/<file>.jpg`` layout, so ``featmlp.data`` reads it like any image
archive. The choice and the output bytes depend only on the input and ``--seed``: each
file is ranked by the SHA-256 of ``"<seed>:<member name>"`` (stable across Python and
numpy versions), and tar headers and the gzip header carry no time or owner.

Usage::

    python tools/make_sample.py ../shared/data/cifar10-jpg.tar.gz \\
        -o featmlp/_sample/cifar10-sample.tar.gz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"
DEFAULT_OUTPUT = REPO / "featmlp" / "_sample" / "cifar10-sample.tar.gz"
MAX_BYTES = 8 * 1024 * 1024


def _rank(seed: int, name: str) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def select(names: list[str], per_class: dict[str, int], seed: int) -> list[str]:
    """Member names to keep: ``per_class[split]`` per (split, class), sorted."""
    groups = defaultdict(list)
    for name in names:
        parts = name.split("/")
        if len(parts) == 3 and parts[0] in per_class:
            groups[parts[0], parts[1]].append(name)
    chosen = []
    for (split, cls), members in sorted(groups.items()):
        if len(members) < per_class[split]:
            raise SystemExit(f"{split}/{cls} has only {len(members)} images, "
                             f"need {per_class[split]}")
        chosen += sorted(members, key=lambda n: _rank(seed, n))[:per_class[split]]
    return sorted(chosen)


def build(source: Path, output: Path, n_train: int, n_test: int, seed: int) -> int:
    """Write the sample; return its size in bytes."""
    with tarfile.open(source, "r:*") as tf:
        data = {m.name.removeprefix("./"): tf.extractfile(m).read() for m in tf if m.isfile()}
    chosen = select(list(data), {"train": n_train, "test": n_test}, seed)
    buf = io.BytesIO()
    # mtime=0 and no file name in the gzip header: rebuilding gives identical bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as out:
        for name in chosen:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data[name]), 0o644, 0
            out.addfile(info, io.BytesIO(data[name]))
    if buf.tell() > MAX_BYTES:
        raise SystemExit(f"sample is {buf.tell()} bytes, over the {MAX_BYTES} limit")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(buf.getvalue())
    return buf.tell()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_INPUT,
                        help="cifar10-jpg.tar.gz (default: %(default)s)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--train", type=int, default=500, help="train images per class")
    parser.add_argument("--test", type=int, default=100, help="test images per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    size = build(args.source, args.output, args.train, args.test, args.seed)
    print(f"wrote {args.output} ({size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
