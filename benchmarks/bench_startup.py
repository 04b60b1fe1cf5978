"""Start-up of the featmlp command, before and after issue 9's "a CLI that starts instantly".

Times, as wall clock of a fresh process each (what a user waits for), ``python -c pass`` and

- ``featmlp --help``, ``featmlp extract --help``, ``featmlp compare --help``, ``featmlp train --help``;
- ``featmlp report RUN`` (a run directory made here, its plots embedded as they are);
- ``featmlp train F.npz --preset lecture -q``: the lecture's network on the bundled sample's
  lecture features, with the training time its ``metrics.json`` records beside the wall time;
- ``featmlp lecture -q``: the whole lecture on the bundled sample (read, extract, train, plot, save;
  issue 18's goal: at most 2.0 s);
- ``featmlp sweep F.npz`` with README's lecture sweep (5 lr x 2 architectures), beside one
  ``train``: issue 18's goal is the sweep in at most 2x one run's wall;

with the code of commit ``--old`` (checked out with ``git worktree add`` into a temporary folder,
removed at the end) and with this working tree, each run as ``PYTHONPATH=<tree> python -c "from
featmlp.cli import main; main()" ARGS`` (what the ``featmlp`` script does). The two take turns
in every repeat, so a passing load weighs on both alike; the first round warms the disk cache
and numba's compiled-code cache and is not counted. Prints the median of ``--repeats`` rounds,
the spread (min..max), the before/after ratio and the after time over ``python -c pass``.

    python benchmarks/bench_startup.py [--old 5469665] [--repeats 5]
    python benchmarks/bench_startup.py --old 1b94bde --repeats 3     # issue 18's before/after
    python benchmarks/bench_startup.py --old 94e7315 --repeats 3     # issue 18 item 7: the lecture without torch
    python benchmarks/bench_startup.py --old 9a70d0a --repeats 5     # issue 18 item 7: reuse, drawing processes

After issue 18 item 7, ``train --preset lecture``, ``lecture`` and the README's sweep on the sample
import no torch (the numpy engine, featmlp.training.engines.arrays); the sweep's run directories
were still drawn in spawned plot processes.

After its last round (issue 18 item 7 again), a lecture run reads the sample's images and
features back from featmlp's cache when the same job ran before (``featmlp.runs.reuse``: the
warm-up round keeps them, in this run's own ``FEATMLP_CACHE``), ``lecture -q --no-reuse`` loads
and extracts them (before: plain ``lecture -q``), the sweep draws each run directory's plots only
with ``--run-plots`` (before: plain ``sweep``, which drew them), and the commands that draw start
their drawing processes first (``featmlp._figures.drawing_in_background``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The last commit before the start-up work of issue 9.
OLD = "546966503ae875238cd655e5013b6a7fdf064a4c"
ENTRY = "from featmlp.cli import main; main()"


def timed(args, tree: Path | None, cwd: Path) -> float:
    """Wall seconds of ``python -c ENTRY ARGS`` with featmlp from ``tree`` (None: ``python -c pass``)."""
    env = {**os.environ, "FEATMLP_CACHE": str(cwd / "cache")}  # this run's own cache: reused jobs are its own
    if tree is None:
        cmd = [sys.executable, "-c", "pass"]
    else:
        cmd = [sys.executable, "-c", ENTRY, *map(str, args)]
        env["PYTHONPATH"] = str(tree)
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed with {tree}:\n{r.stdout}{r.stderr}")
    return seconds


def spread(values) -> str:
    return f"{statistics.median(values):6.3f} [{min(values):.3f}..{max(values):.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default=OLD, help="commit to compare with (default: before the start-up work)")
    ap.add_argument("--new", default=None, help="commit to measure as 'after' (default: this working tree)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="featmlp-bench-startup-"))
    old_tree = work / "old"  # in this run's own folder: two benchmarks at once do not share a checkout
    new_tree = ROOT if args.new is None else work / "new"
    for tree, commit in ((old_tree, args.old), (new_tree, args.new)):
        if tree != ROOT:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), commit],
                           check=True, capture_output=True)
    try:
        trees = {"before": old_tree, "after": new_tree}
        features, run = work / "f.npz", work / "run"
        print(f"featmlp extract sample -> {features} (after's code) ...", file=sys.stderr)
        timed(["extract", "sample", "-o", features, "-q"], new_tree, work)
        timed(["train", features, "--preset", "lecture", "-q", "--out", run], new_tree, work)
        commands = {
            "featmlp --help": ["--help"],
            "featmlp extract --help": ["extract", "--help"],
            "featmlp compare --help": ["compare", "--help"],
            "featmlp train --help": ["train", "--help"],
            "featmlp report RUN": ["report", run],
            "featmlp train F.npz --preset lecture -q": None,  # its --out differs per tree
            "featmlp lecture -q": "lecture",
            "featmlp lecture -q --no-reuse": "lecture-fresh",
            "featmlp sweep F.npz (README's lecture sweep) -q": "sweep",
            "featmlp sweep ... --run-plots": "sweep-plots",
        }
        # what a tree knows: before issue 18's last round, no --no-reuse (nothing was reused) and
        # no --run-plots (every run directory got its plots)
        reuses = {side: (tree / "featmlp" / "runs" / "reuse.py").is_file() for side, tree in trees.items()}
        run_plots = {side: "run_plots" in (tree / "featmlp" / "sweep" / "_run.py").read_text()
                     for side, tree in trees.items()}
        times = {(name, side): [] for name in commands for side in trees}
        python, trained = [], {side: [] for side in trees}
        for round_ in range(args.repeats + 1):
            order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]
            t_python = timed([], None, work)
            for name, cmd in commands.items():
                for side in order:
                    out = work / f"lecture-{side}"
                    argv = cmd if isinstance(cmd, list) else ["train", features, "--preset", "lecture", "-q",
                                                              "--out", out, "--force"]
                    if cmd == "lecture":
                        argv = ["lecture", "-q", "--out", work / f"whole-{side}", "--force"]
                    elif cmd == "lecture-fresh":
                        argv = ["lecture", "-q", "--out", work / f"whole-{side}", "--force",
                                *(["--no-reuse"] if reuses[side] else [])]
                    elif cmd in ("sweep", "sweep-plots"):  # a fresh directory each time: the same sweep resumes
                        argv = ["sweep", features, "--preset", "lecture", "--lr", "1,10,50,500,5000", "--hidden", "6",
                                "--hidden", "6,6", "-q", "--out", work / f"{cmd}-{side}-{round_}",
                                *(["--run-plots"] if cmd == "sweep-plots" and run_plots[side] else [])]
                    seconds = timed(argv, trees[side], work)
                    if round_:
                        times[name, side].append(seconds)
                        if cmd is None:
                            metrics = json.loads((out / "metrics.json").read_text())
                            trained[side].append(metrics["train_seconds"])
            if round_:
                python.append(t_python)
            print(f"round {round_}/{args.repeats} done" + (" (warm-up)" if not round_ else ""), file=sys.stderr)

        print(f"\nwall seconds of a fresh process, median [min..max] of {args.repeats} rounds; "
              f"before = {args.old[:10]}, after = {args.new or 'this working tree'}")
        print(f"{'command':<42} {'before':>22} {'after':>22} {'before/after':>12} {'after/python':>12}")
        base = statistics.median(python)
        print(f"{'python -c pass':<42} {'':>22} {spread(python):>22} {'':>12} {1.0:>11.1f}x")
        for name in commands:
            old, new = times[name, "before"], times[name, "after"]
            print(f"{name:<42} {spread(old):>22} {spread(new):>22} "
                  f"{statistics.median(old) / statistics.median(new):>11.1f}x {statistics.median(new) / base:>11.1f}x")
        for side in trees:
            wall, train = statistics.median(times["featmlp train F.npz --preset lecture -q", side]), \
                statistics.median(trained[side])
            print(f"lecture train, {side:<6}: wall {wall:.3f} s for {train:.3f} s of training "
                  f"(metrics.json train_seconds; {wall - train:.3f} s around it)")
        for side in trees:
            one = statistics.median(times["featmlp train F.npz --preset lecture -q", side])
            ten = statistics.median(times["featmlp sweep F.npz (README's lecture sweep) -q", side])
            whole = statistics.median(times["featmlp lecture -q", side])
            fresh = statistics.median(times["featmlp lecture -q --no-reuse", side])
            print(f"{side:<6}: the lecture's sweep of 10 = {ten / one:.2f}x one train run (goal <= 2x); "
                  f"featmlp lecture {whole:.3f} s (goal <= 2.0 s), loading and extracting {fresh:.3f} s")
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes share them)")
    finally:
        for tree in {old_tree, new_tree} - {ROOT}:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
