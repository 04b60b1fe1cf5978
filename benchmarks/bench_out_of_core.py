"""Training on a sharded table larger than the memory it uses: out of core against in memory.

A synthetic sharded table (``--rows`` x ``--features`` float32 in shards of 5,000 rows, 2.5 GB
by default; ten classes, each a Gaussian around its own mean) is written once, shard by shard.
Then ``featmlp train TABLE --out-of-core`` (ours: the shards read one or two at a time) and
``featmlp train TABLE --in-memory`` (reference: the table read whole, as for an ``.npz``)
train the same network for ``--epochs`` epochs, each in its own process, as a user runs it;
the peak resident set of each is sampled every 0.1 s, and the table's size is set beside it.
Out of core runs twice: as users run it, each shard checked against the manifest's SHA-256
the first time the process touches it, and with ``FEATMLP_VERIFY_SHARDS=0`` (unchecked), so
what the checksums cost is the difference (``--no-unverified`` leaves that run out).

    python benchmarks/bench_out_of_core.py
    python benchmarks/bench_out_of_core.py --rows 200000 --epochs 1 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import ROOT  # noqa: E402
from bench_scale import measure  # noqa: E402

SHARD = 5000


def build_table(path: Path, rows: int, features: int, classes: int = 10, seed: int = 0) -> Path:
    """A sharded table written shard by shard (never whole in memory); kept for the next run."""
    from featmlp.tables.sharded import is_sharded, write_manifest, write_shard

    if is_sharded(path):
        return path
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 0.15, (classes, features)).astype(np.float32)
    records = {}
    for split, n in (("train", rows), ("test", max(rows // 10, SHARD))):
        records[split] = []
        for i, start in enumerate(range(0, n, SHARD)):
            m = min(SHARD, n - start)
            y = rng.integers(0, classes, m)
            X = means[y] + rng.standard_normal((m, features), dtype=np.float32)
            records[split].append(write_shard(path, split, i, X, y))
    write_manifest(path, records, [f"f{j}" for j in range(features)], [f"c{k}" for k in range(classes)],
                   {"features": None, "source": f"synthetic gaussian classes, seed {seed}"}, False)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_200_000)
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--no-unverified", action="store_true",
                    help="leave out the out-of-core run with FEATMLP_VERIFY_SHARDS=0 (shard checksums unchecked)")
    args = ap.parse_args()

    table = build_table(ROOT / "runs" / "bench-scale" / f"synthetic-{args.rows}x{args.features}.features",
                        args.rows, args.features)
    size = sum(f.stat().st_size for f in table.glob("train-*.npy")) / 1e6
    print(f"table: {args.rows:,} x {args.features} float32 training rows, {size:,.0f} MB on disk ({table})", flush=True)
    base = [sys.executable, "-m", "featmlp.cli", "train", str(table), "--epochs", str(args.epochs), "-q", "--force",
            "--out", str(ROOT / "runs" / "bench-scale" / "ooc-run")]
    ways = [("ours (--out-of-core)", "--out-of-core", "1")]
    if not args.no_unverified:
        ways.append(("ours, shards unverified", "--out-of-core", "0"))
    if not args.no_reference:
        ways.append(("reference (--in-memory)", "--in-memory", "1"))
    results = {}
    for r in range(args.repeat):
        for name, flag, verify in ways:
            os.environ["FEATMLP_VERIFY_SHARDS"] = verify  # the child process inherits it
            rss, secs = measure(base + [flag])
            results.setdefault(name, []).append((rss, secs))
            print(f"  {name:<24} peak RSS {rss:7,.0f} MB  {secs:6.1f} s  (table / RSS {size / rss:.2f})", flush=True)
            subprocess.run(["rm", "-rf", str(ROOT / "runs" / "bench-scale" / "ooc-run")], check=True)

    print(f"\nfeatmlp train, default preset, {args.epochs} epoch(s) on {size:,.0f} MB of features "
          f"(median of {args.repeat}):")
    print(f"{'':<26}{'peak RSS MB':>12}{'table / RSS':>12}{'seconds':>9}")
    for name in results:
        rss = statistics.median(v[0] for v in results[name])
        secs = statistics.median(v[1] for v in results[name])
        print(f"{name:<26}{rss:>12,.0f}{size / rss:>12.2f}{secs:>9.1f}")
    median = {name: (statistics.median(v[0] for v in results[name]), statistics.median(v[1] for v in results[name]))
              for name in results}
    ours, unverified, reference = (median.get(w) for w in ("ours (--out-of-core)", "ours, shards unverified",
                                                           "reference (--in-memory)"))
    if unverified:
        print(f"shard checksums verified on first read: {ours[1] - unverified[1]:+.1f} s "
              f"({(ours[1] - unverified[1]) / unverified[1]:+.0%}), peak RSS {ours[0] - unverified[0]:+,.0f} MB")
    if reference:
        print(f"reference / ours peak RSS: {reference[0] / ours[0]:.2f}x")


if __name__ == "__main__":
    main()
