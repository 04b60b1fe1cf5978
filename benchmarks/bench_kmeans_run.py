"""The main job with learned features, end to end: wall time, peak memory, test accuracy.

Runs ``featmlp run --data ../shared/data/cifar10-jpg.tar.gz --features kmeans`` (or what
``--args`` says) in a child process under ``/usr/bin/time -v`` and prints its wall time, peak
resident memory, the stages' times from its run directory and its test accuracy, against the
goals of issue 7 (at most 20 minutes, under 8 GB, at least 80 %).

    python benchmarks/bench_kmeans_run.py [--out runs/bench-kmeans] [--args "--feature-option k=400"]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED))
    ap.add_argument("--out", default=str(HERE.parent / "runs" / "bench-kmeans"))
    ap.add_argument("--args", default="", help="more options for featmlp run")
    a = ap.parse_args()
    if not Path(a.data).exists():
        sys.exit(f"{a.data} not found: this benchmark needs the CIFAR-10 JPEG archive")
    shutil.rmtree(a.out, ignore_errors=True)
    featmlp = shutil.which("featmlp") or sys.exit("featmlp is not installed (pip install -e .)")
    cmd = ["/usr/bin/time", "-v", featmlp, "run", "--data", a.data, "--features", "kmeans", "--out", a.out, "-q",
           *shlex.split(a.args)]
    print("$", " ".join(cmd[2:]), flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    print(proc.stdout, end="")
    if proc.returncode:
        sys.exit(f"featmlp run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    metrics = json.loads((Path(a.out) / "metrics.json").read_text())
    acc = metrics["test_accuracy"]
    print(f"wall {wall / 60:.1f} min (goal <= 20), of it training {metrics['train_seconds'] / 60:.1f} min; "
          f"peak RSS {rss_kb / 1e6:.2f} GB (goal < 8); test accuracy {acc:.4f} (goal >= 0.80)")


if __name__ == "__main__":
    main()
