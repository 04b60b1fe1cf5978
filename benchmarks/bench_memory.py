"""Peak memory of ``featmlp extract`` on an image folder, for 1x and 5x the images.

Ours: ``featmlp extract DIR --features lecture`` as a user runs it (images listed, then decoded
one chunk at a time). Reference: the behaviour before the images were decoded per chunk, which
decoded every image first and then extracted chunk by chunk; reproduced here with today's code
by decoding the dataset whole (``np.asarray``) before ``extract_dataset``. Each runs in its own
process; its peak resident set size comes from ``os.wait4``. The feature table (9 float64 per
image, 0.5 MB for 7,500 images) is negligible here, so ours should stay flat while the
reference grows with the images.

    python benchmarks/bench_memory.py            # 1,500 and 7,500 JPEGs of 256x256, chunks of 500
    python benchmarks/bench_memory.py --n 600 --repeat 1
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REFERENCE = """
import sys
import numpy as np
from featmlp.data import Dataset, load_dataset
from featmlp.extraction import extract_dataset
ds = load_dataset(sys.argv[1])
ds = Dataset(np.asarray(ds.train_images), ds.train_labels, np.asarray(ds.test_images), ds.test_labels,
             ds.class_names, ds.source)  # every image decoded before the first chunk
extract_dataset(ds, "lecture", sys.argv[2], chunk_size=int(sys.argv[3]))
"""


def build_folder(root: Path, n: int, side: int, seed: int = 0) -> Path:
    """``n`` JPEGs of side x side in 10 class folders: smooth gradients plus noise, photo-like sizes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    for i in range(n):
        d = root / f"c{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0, 255, 3)
        img = np.stack([a * xx + (255 - a) * yy, b * yy, c * (1 - xx)], axis=-1)
        img += rng.normal(0, 12, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        (d / f"{i:06d}.jpg").write_bytes(buf.getvalue())
    return root


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one child process, which must succeed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1500, help="images at 1x (5x is five times as many)")
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None, help="where to build the folders (default: a temporary one)")
    args = ap.parse_args()

    featmlp = [sys.executable, "-m", "featmlp.cli"]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        sizes = (args.n, 5 * args.n)
        t0 = time.perf_counter()
        folders = {n: build_folder(tmp / f"imgs{n}", n, args.side) for n in sizes}
        mb = sum(f.stat().st_size for d in folders.values() for f in d.rglob("*.jpg")) / 1e6
        decoded = args.side * args.side * 3 / 1e6
        print(f"built {sum(sizes):,} JPEGs of {args.side}x{args.side} ({mb:.0f} MB; {decoded:.2f} MB each decoded) "
              f"in {time.perf_counter() - t0:.0f} s; chunks of {args.chunk_size} images "
              f"({args.chunk_size * decoded:.0f} MB decoded)")
        rows = {n: {"ours": [], "reference": []} for n in sizes}
        for r in range(args.repeat):
            for n in sizes:
                out = tmp / "f.npz"
                ours = featmlp + ["extract", str(folders[n]), "--features", "lecture", "-o", str(out),
                                  "--chunk-size", str(args.chunk_size), "-q"]
                ref = [sys.executable, "-c", REFERENCE, str(folders[n]), str(out), str(args.chunk_size)]
                for name, cmd in (("ours", ours), ("reference", ref)):
                    rss, secs = peak_rss_mb(cmd)
                    rows[n][name].append(rss)
                    out.unlink()
                    print(f"  repeat {r + 1}: {n:>6,} images  {name:<9} peak RSS {rss:7.0f} MB  ({secs:.1f} s)")

    def fmt(values):
        med = statistics.median(values)
        spread = (max(values) - min(values)) / 2
        return f"{med:7.0f} ± {spread:3.0f}"

    print(f"\npeak RSS of featmlp extract --features lecture (MB, median ± half range of {args.repeat}):")
    print(f"{'images':>8}  {'ours':>13}  {'reference':>13}  {'reference / ours':>16}")
    for n in sizes:
        o, f = rows[n]["ours"], rows[n]["reference"]
        print(f"{n:>8,}  {fmt(o)}  {fmt(f)}  {statistics.median(f) / statistics.median(o):16.2f}")
    o1, o5 = (statistics.median(rows[n]["ours"]) for n in sizes)
    f1, f5 = (statistics.median(rows[n]["reference"]) for n in sizes)
    print(f"growth from 1x to 5x images: ours {o5 / o1:.2f}x, reference {f5 / f1:.2f}x")


if __name__ == "__main__":
    main()
