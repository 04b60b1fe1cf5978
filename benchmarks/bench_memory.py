"""Peak memory of featmlp against what it is given: images, image sizes, classes.

Four cases (``--cases``, default all), each a child process whose peak resident set size comes
from ``os.wait4``:

``scale``: ``featmlp extract`` on an image folder, for 1x and 5x the images (below).

``photos``: ``featmlp extract`` of a few large photos (JPEGs of ``--photo`` WxH, 12 Mpx by
default), by default chunks (one photo at a time for the lecture's features: the chunk budget
counts their working memory) and with ``--chunk-size 1``; the reference is the chunk the
budget gave when it counted the decoded pixels only (256 MB of pixels: 7 photos of 12 Mpx).

``predict``: ``featmlp predict RUN PHOTOS --no-resize`` on the same photos (a lecture run of
9 features: the photos keep their size).

``classes``: ``featmlp train`` on a feature file of ``--classes`` classes (5 rows each; the
confusion matrix is drawn into confusion.png); the reference draws it as before, the figure
growing with the classes (0.6 inch a class, names on the axes), unless ``--old-tree`` is given.

``--old-tree DIR`` runs the photo, predict and class cases with the featmlp found in ``DIR``
too (a checkout of an earlier commit, e.g. ``git archive fd3ff5a | tar -x -C /tmp/old``):
the behaviour before issue 15, side by side. ``--per-pixel`` prints each feature set's
measured working memory per pixel (one process each, VmHWM reset after the images are
made) beside what the registry declares (featmlp.features.WorkMemory).

The ``scale`` case:

Ours: ``featmlp extract DIR --features lecture`` as a user runs it (images listed, then decoded
one chunk at a time). Reference: the behaviour before the images were decoded per chunk, which
decoded every image first and then extracted chunk by chunk; reproduced here with today's code
by decoding the dataset whole (``np.asarray``) before ``extract_dataset``. Each runs in its own
process; its peak resident set size comes from ``os.wait4``. The feature table (9 float64 per
image, 0.5 MB for 7,500 images) is negligible here, so ours should stay flat while the
reference grows with the images.

    python benchmarks/bench_memory.py            # 1,500 and 7,500 JPEGs of 256x256, chunks of 500, and the rest
    python benchmarks/bench_memory.py --n 600 --repeat 1
    python benchmarks/bench_memory.py --cases photos,predict,classes --per-pixel --old-tree /tmp/old
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
from featmlp.tables.extract import extract_dataset
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


def peak_rss_mb(cmd: list[str], *, env: dict | None = None, check: bool = True, cwd=None) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one child process, which must succeed (``check``), else
    (peak RSS, seconds, exit status, last line of its stderr). ``cwd``: where it runs (not the
    repository, for a child that must import the featmlp of ``PYTHONPATH``)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    err = proc.stderr.read().decode()  # before waiting: a child blocked on a full pipe never ends
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    rss = usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux
    if check:
        return rss, seconds
    lines = [line for line in err.splitlines() if line.strip()]
    return rss, seconds, proc.returncode, (lines[-1] if lines else "")


def build_photos(root: Path, n: int, width: int, height: int) -> Path:
    """``n`` photo-like JPEGs of width x height in 2 class folders (gradients plus noise)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= height
    xx /= width
    for i in range(n):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        a, b = rng.uniform(0, 255, 2)
        img = np.stack([a * xx + (255 - a) * yy, b * yy, 200 * (1 - xx)], axis=-1)
        img += rng.normal(0, 12, img.shape).astype(np.float32)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i:03d}.jpg", "JPEG", quality=85)
        del img
    return root


MAKE_RUN = """
import sys
import numpy as np
from featmlp.runs.bundle import save_bundle
from featmlp.model import MLPSpec, Scaler, build_mlp
X = np.random.default_rng(0).normal(size=(10, 9))
spec = MLPSpec(9, 2, hidden=(8,))
save_bundle(sys.argv[1], build_mlp(spec), spec, Scaler.fit(X), "lecture", ["c0", "c1"], {"image_size": [32, 32]})
"""

MAKE_CLASSES = """
import sys
import numpy as np
from featmlp.tables.store import FeatureTable, save_features
n, per = int(sys.argv[2]), 5
rng = np.random.default_rng(0)
y = np.repeat(np.arange(n), per)
X = rng.normal(size=(len(y), 9)) + 0.01 * y[:, None]
save_features(sys.argv[1], FeatureTable(X, y, X[::2], y[::2], tuple(f"f{i}" for i in range(9)),
                                        tuple(f"class {i:03d}" for i in range(n)), {}))
"""

# The confusion matrix drawn as before issue 15: the figure grows with the classes, names on the axes.
OLD_PLOTS = """
import sys
import featmlp._figures as figures
import featmlp.runs.plots as plots
figures.MAX_FIGURE_INCHES = plots.MAX_FIGURE_INCHES = plots.TICK_LABEL_CLASSES = float("inf")
from featmlp.cli import main
main(sys.argv[1:])
"""

PER_PIXEL = """
import sys
from pathlib import Path
import numpy as np
from featmlp.features import FEATURE_SETS, extract_features, fit_features, working_bytes

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

name, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
state = fit_features(name, images, {"k": 64, "n_patches": 2000, "n_iter": 1}) if name == "kmeans" else None
extract_features(images[:, :32, :32] if state is None else images, name, state=state, parallel=False)  # compiled
Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
before = status("VmRSS")
extract_features(images, name, state=state, parallel=False)
measured = (status("VmHWM") - before) / (h * w)
declared = (working_bytes(name, (h, w), 1, threads=1, state=state) - 3 * h * w) / (h * w)
print(f"{measured:.1f} {declared:.1f}")
"""


def child_env(tree: Path | None) -> dict:
    """The environment of a child running the featmlp of ``tree`` (None: this one)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def show(label: str, result) -> str:
    rss, secs, code, last = result
    outcome = "ok" if code == 0 else f"exit {code}: {last[:110]}"
    return f"  {label:<52} peak RSS {rss:7.0f} MB  {secs:6.1f} s  {outcome}"


CHUNKS = """
import sys
from featmlp.tables.extract import _CHUNK_BYTES, default_chunk_size
h, w = int(sys.argv[1]), int(sys.argv[2])
print(default_chunk_size((h, w), "lecture"), max(1, min(5000, _CHUNK_BYTES // (w * h * 3))))
"""


def photo_cases(tmp: Path, args, featmlp: list[str], cases: set[str]) -> None:
    # Built and planned in child processes: a child's peak RSS starts from its parent's at fork
    # (Linux carries the high-water mark over exec), so this process stays small.
    w, h = args.photo
    t0 = time.perf_counter()
    photos = tmp / "photos"
    subprocess.run([sys.executable, __file__, "--build-photos", str(photos), f"{w}x{h}", str(args.photos)],
                   check=True)
    mb = sum(f.stat().st_size for f in photos.rglob("*.jpg")) / 1e6
    print(f"\nbuilt {args.photos} JPEGs of {w}x{h} ({w * h / 1e6:.1f} Mpx, {mb:.0f} MB) in "
          f"{time.perf_counter() - t0:.0f} s")
    ours_chunk, pixel_rule = map(int, subprocess.run([sys.executable, "-c", CHUNKS, str(h), str(w)], check=True,
                                                     capture_output=True, text=True, cwd=tmp).stdout.split())
    print(f"default chunk for the lecture's features: {ours_chunk} image(s) (the pixel-only rule gave {pixel_rule})")
    trees = [("ours", None)] + ([("before (--old-tree)", args.old_tree)] if args.old_tree else [])
    if "photos" in cases:
        print("featmlp extract PHOTOS --features lecture:")
        for name, tree in trees:
            env = child_env(tree)
            for label, chunk in (("default chunk", None), ("--chunk-size 1", 1),
                                 (f"--chunk-size {pixel_rule} (the pixel-only rule)", pixel_rule)):
                if tree is not None and chunk is None:
                    continue  # the old default chunk is the pixel-only rule's
                out = tmp / "photos.npz"
                cmd = featmlp + ["extract", str(photos), "-o", str(out), "-q", "--features", "lecture"]
                cmd += [] if chunk is None else ["--chunk-size", str(chunk)]
                print(show(f"{name}, {label}", peak_rss_mb(cmd, env=env, check=False, cwd=tmp)), flush=True)
                for leftover in (out, Path(str(out) + ".lock")):
                    leftover.unlink(missing_ok=True)
    if "predict" in cases:
        print("featmlp predict RUN PHOTOS --no-resize (lecture):")
        for name, tree in trees:
            env = child_env(tree)
            run = tmp / f"run-{name[:4]}"
            subprocess.run([sys.executable, "-c", MAKE_RUN, str(run)], check=True, env=env, cwd=tmp)
            cmd = featmlp + ["predict", str(run), *map(str, sorted(photos.rglob("*.jpg"))), "--no-resize"]
            print(show(name, peak_rss_mb(cmd, env=env, check=False, cwd=tmp)), flush=True)


def class_cases(tmp: Path, args, featmlp: list[str]) -> None:
    print(f"\nfeatmlp train FEATURES --epochs 1 on {args.classes} classes x 5 rows (confusion.png drawn):")
    table = tmp / "classes.npz"
    subprocess.run([sys.executable, "-c", MAKE_CLASSES, str(table), str(args.classes)], check=True, cwd=tmp)
    trees = [("ours", None, featmlp)]
    if args.old_tree:
        trees.append(("before (--old-tree)", args.old_tree, featmlp))
    else:  # today's code drawing the figure as it was drawn
        trees.append(("as before: figure growing with the classes", None, [sys.executable, "-c", OLD_PLOTS]))
    for i, (name, tree, command) in enumerate(trees):
        out = tmp / f"classes-run{i}"
        result = peak_rss_mb(command + ["train", str(table), "--epochs", "1", "-q", "--out", str(out)],
                             env=child_env(tree), check=False, cwd=tmp)
        png = out / "confusion.png"
        size = ""
        if png.is_file():
            Image.MAX_IMAGE_PIXELS = None  # only its header is read: the old 300-class figure is 335 Mpx
            with Image.open(png) as im:
                size = f", confusion.png {im.size[0]}x{im.size[1]}"
        print(show(name + size, result), flush=True)


def per_pixel(args) -> None:
    h, w = 1500, 1500
    print(f"\nworking memory beyond the RGB input, one {w}x{h} image on one thread (bytes a pixel):")
    print(f"  {'feature set':<10} {'measured':>9} {'declared':>9}")
    for name in ("lecture", "hog", "color", "kmeans"):
        shape = (h, w) if name != "kmeans" else (200, 200)  # kmeans: k=64 here, ~1,100 bytes a pixel
        out = subprocess.run([sys.executable, "-c", PER_PIXEL, name, *map(str, shape)], check=True,
                             capture_output=True, text=True).stdout.split()
        note = {"kmeans": "  (k=64, 200x200)", "hog": "  (50 of it: the column names a table records)"}
        print(f"  {name:<10} {float(out[0]):9.1f} {float(out[1]):9.1f}{note.get(name, '')}")



def main():
    if sys.argv[1:2] == ["--build-photos"]:  # the child that builds the photos
        w, h = map(int, sys.argv[3].split("x"))
        build_photos(Path(sys.argv[2]), int(sys.argv[4]), w, h)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1500, help="images at 1x (5x is five times as many)")
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None, help="where to build the folders (default: a temporary one)")
    ap.add_argument("--cases", default="scale,photos,predict,classes",
                    help="comma-separated: scale, photos, predict, classes")
    ap.add_argument("--photo", type=lambda v: tuple(int(x) for x in v.split("x")), default=(4000, 3000),
                    metavar="WxH", help="size of the large photos")
    ap.add_argument("--photos", type=int, default=4, help="how many large photos (at least 4: 2 classes of 2)")
    ap.add_argument("--classes", type=int, default=300)
    ap.add_argument("--old-tree", type=Path, default=None,
                    help="a checkout of an earlier featmlp, run beside this one (photos, predict, classes)")
    ap.add_argument("--per-pixel", action="store_true", help="measured working memory per pixel of each set")
    args = ap.parse_args()
    cases = set(args.cases.split(",")) - {""}
    unknown = cases - {"scale", "photos", "predict", "classes"}
    if unknown:
        ap.error(f"unknown case(s) {', '.join(sorted(unknown))}")
    if args.photos < 4:
        ap.error("--photos must be at least 4 (two classes of two: a train and a test image each)")
    featmlp = [sys.executable, "-m", "featmlp.cli"]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        if cases & {"photos", "predict"}:
            photo_cases(Path(tmp), args, featmlp, cases)
        if "classes" in cases:
            class_cases(Path(tmp), args, featmlp)
    if args.per_pixel:
        per_pixel(args)
    if "scale" in cases:
        scale_case(args)


def scale_case(args):
    """Peak RSS of extracting 1x and 5x the images, ours against decoding every image first."""
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
