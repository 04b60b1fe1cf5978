"""Extraction as the images grow: peak memory and time at 1x, 5x and 20x CIFAR-10 (60,000 to 1.2 M images).

The images are CIFAR-10's 60,000 JPEGs (../shared/data/cifar10-jpg.tar.gz) as WebDataset tar
shards of 5,000 (``train/shard-000.tar`` holding ``<key>.<class>.jpg``), built once; 5x and
20x are the same shards linked 5 and 20 times under new names, so a 1.2 M-image dataset costs
no disk. Each command runs in its own process, as a user runs it, and the peak resident set
of its whole process tree (Dask workers included) is sampled every 0.1 s.

- ours: ``featmlp extract SHARDS -o OUT.features/``: a sharded table, each chunk written as its
  shard and dropped;
- reference: ``featmlp extract SHARDS -o OUT.npz``: the same extraction into one ``.npz``,
  which holds the whole table in memory before writing it (float64, 72 bytes an image for the
  lecture's 9 features).

    python benchmarks/bench_scale.py                      # 1x, 5x, 20x; ours and the reference
    python benchmarks/bench_scale.py --scales 1,5 --repeat 2
    python benchmarks/bench_scale.py --scales 1 --cluster local:2   # ours on a Dask LocalCluster
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import ARCHIVE, ROOT  # noqa: E402

SHARD = 5000


def build_shards(base: Path) -> Path:
    """CIFAR-10 as tar shards of 5,000 ``<key>.<class>.jpg`` members under ``base/{train,test}/`` (once)."""
    done = base / ".complete"
    if done.exists():
        return base
    if not ARCHIVE.exists():
        raise SystemExit(f"{ARCHIVE} is missing: this benchmark needs the shared CIFAR-10 JPEG archive")
    members = {"train": [], "test": []}
    with tarfile.open(ARCHIVE) as src:
        for m in src:
            parts = m.name.split("/")
            if m.isfile() and len(parts) >= 3 and parts[-3] in members:
                members[parts[-3]].append((parts[-2], parts[-1], src.extractfile(m).read()))
    for split, items in members.items():
        (base / split).mkdir(parents=True, exist_ok=True)
        items.sort()
        # interleave the classes, as shards written from a shuffled list are
        items = [items[i] for i in sorted(range(len(items)), key=lambda i: (i * 7919) % len(items))]
        for s in range(0, len(items), SHARD):
            with tarfile.open(base / split / f"shard-{s // SHARD:03d}.tar", "w") as tf:
                for cls, name, data in items[s:s + SHARD]:
                    info = tarfile.TarInfo(f"{Path(name).stem}.{cls}.jpg")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    done.touch()
    return base


def scaled(base: Path, root: Path, times: int) -> Path:
    """``times`` links to every shard of ``base`` under ``root/{train,test}/`` (no copies)."""
    for split in ("train", "test"):
        shards = sorted((base / split).glob("shard-*.tar"))
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        for t in range(times):
            for s in shards:
                link = d / f"shard-{t:03d}-{s.stem[6:]}.tar"
                if not link.exists():
                    link.symlink_to(s)
    return root


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def measure(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS of the process tree in MB, seconds) of a command, which must succeed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return peak / 1e6, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1,5,20", help="multiples of CIFAR-10's 60,000 images")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--features", default="lecture")
    ap.add_argument("--cluster", default=None, help="run ours on this Dask cluster (local:N)")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--dir", type=Path, default=ROOT / "runs" / "bench-scale")
    args = ap.parse_args()
    scales = [int(s) for s in args.scales.split(",")]

    t0 = time.perf_counter()
    base = build_shards(args.dir / "base")
    print(f"CIFAR-10 as tar shards of {SHARD:,} in {base} ({time.perf_counter() - t0:.0f} s)", flush=True)
    featmlp = [sys.executable, "-m", "featmlp.cli", "extract"]
    rows = {}
    for times in scales:
        src = scaled(base, args.dir / f"x{times}", times)
        n = 60_000 * times
        rows[times] = {"ours": [], "reference": []}
        for r in range(args.repeat):
            out = args.dir / "out"
            ours = featmlp + [str(src), "--features", args.features, "-o", f"{out}.features", "-q"]
            if args.cluster:
                ours += ["--cluster", args.cluster]
            cmds = [("ours", ours)]
            if not args.no_reference:
                cmds.append(("reference", featmlp + [str(src), "--features", args.features, "-o", f"{out}.npz", "-q"]))
            for name, cmd in cmds:
                rss, secs = measure(cmd)
                rows[times][name].append((rss, secs))
                print(f"  {n:>9,} images  {name:<9}  peak RSS {rss:7.0f} MB  {secs:6.1f} s  {n / secs:7,.0f} img/s",
                      flush=True)
                subprocess.run(["rm", "-rf", f"{out}.features", f"{out}.npz"], check=True)

    def med(values, i):
        return statistics.median(v[i] for v in values)

    print(f"\npeak RSS of featmlp extract --features {args.features} (MB; median of {args.repeat}):")
    print(f"{'images':>10}  {'ours':>7}  {'reference':>9}  {'reference / ours':>16}  {'ours s':>7}  {'ref s':>7}")
    for times in scales:
        o, f = rows[times]["ours"], rows[times]["reference"]
        ref = f"{med(f, 0):9.0f}  {med(f, 0) / med(o, 0):16.2f}" if f else f"{'-':>9}  {'-':>16}"
        ref_s = f"{med(f, 1):7.1f}" if f else f"{'-':>7}"
        print(f"{60_000 * times:>10,}  {med(o, 0):7.0f}  {ref}  {med(o, 1):7.1f}  {ref_s}")
    first, last = scales[0], scales[-1]
    o1, o2 = med(rows[first]["ours"], 0), med(rows[last]["ours"], 0)
    line = f"growth from {first}x to {last}x images: ours {o2 / o1:.2f}x"
    if rows[first]["reference"]:
        f1, f2 = med(rows[first]["reference"], 0), med(rows[last]["reference"], 0)
        line += f", reference {f2 / f1:.2f}x"
    print(line)


if __name__ == "__main__":
    main()
