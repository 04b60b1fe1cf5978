"""JPEG decoding: images/s of featmlp's ``decode_image`` with Pillow alone vs simplejpeg (issue 10, item 5).

Two sets of files, each decoded in one thread the way ``ImageArray`` decodes a chunk (bytes
in memory, one ``decode_image`` call per file, the result copied into the batch):

- the first ``--n`` JPEGs of ``../shared/data/cifar10-jpg.tar.gz`` (32x32, 4:2:0), when it is there;
- ``--n-large`` 256x256 JPEGs made here with Pillow (quality 90, 4:2:0) from a noisy gradient.

The two decoders take turns within every repeat (Pillow forced by ``FEATMLP_JPEG_DECODER=pillow``),
so a passing load weighs on both alike; a first round warms the caches and is not counted.
Before timing, both decoders' pixels are checked identical on every file. Prints the median
images/s of ``--repeats`` rounds, the spread (min..max) and the simplejpeg/Pillow ratio.

    python benchmarks/bench_decode.py [--n 10000] [--n-large 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import statistics
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from featmlp.data._decode import decode_image

ARCHIVE = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"


def cifar_jpegs(n: int) -> list[bytes]:
    with tarfile.open(ARCHIVE) as tf:
        members = (m for m in tf if m.isfile() and m.name.endswith(".jpg"))
        return [tf.extractfile(m).read() for m in itertools.islice(members, n)]


def made_jpegs(n: int, size: int = 256) -> list[bytes]:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 127, size)[None, :, None]
    out = []
    for _ in range(n):
        x = (rng.integers(0, 128, (size, size, 3)) + ramp).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def decode_all(datas: list[bytes], decoder: str) -> np.ndarray:
    if decoder == "pillow":
        os.environ["FEATMLP_JPEG_DECODER"] = "pillow"
    else:
        os.environ.pop("FEATMLP_JPEG_DECODER", None)
    first = decode_image(datas[0], "0.jpg")
    out = np.empty((len(datas), *first.shape), np.uint8)
    for i, data in enumerate(datas):
        out[i] = decode_image(data, f"{i}.jpg")
    return out


def rate(datas, decoder) -> float:
    start = time.perf_counter()
    decode_all(datas, decoder)
    return len(datas) / (time.perf_counter() - start)


def spread(values) -> str:
    return f"{statistics.median(values):9.0f} [{min(values):.0f}..{max(values):.0f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="CIFAR-10 JPEGs (default 10000)")
    ap.add_argument("--n-large", type=int, default=500, help="256x256 JPEGs (default 500)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        import simplejpeg
    except ImportError:
        raise SystemExit("simplejpeg is not installed: pip install featmlp[fast]") from None

    sets = []
    if ARCHIVE.is_file():
        sets.append((f"CIFAR-10 32x32 ({args.n})", cifar_jpegs(args.n)))
    else:
        print(f"({ARCHIVE} not found: CIFAR-10 left out)")
    sets.append((f"made 256x256 q90 ({args.n_large})", made_jpegs(args.n_large)))

    print(f"simplejpeg {simplejpeg.__version__}, Pillow {Image.__version__}; images/s, "
          f"median [min..max] of {args.repeats}")
    print(f"{'files':28s} {'Pillow':>24s} {'simplejpeg':>24s} {'ratio':>6s}")
    for name, datas in sets:
        if not np.array_equal(decode_all(datas, "pillow"), decode_all(datas, "simplejpeg")):
            raise SystemExit(f"{name}: the two decoders' pixels differ")
        rates = {"pillow": [], "simplejpeg": []}
        for round_ in range(args.repeats + 1):  # round 0 warms up
            for decoder in rates:
                r = rate(datas, decoder)
                if round_:
                    rates[decoder].append(r)
        ratio = statistics.median(rates["simplejpeg"]) / statistics.median(rates["pillow"])
        print(f"{name:28s} {spread(rates['pillow']):>24s} {spread(rates['simplejpeg']):>24s} {ratio:5.1f}x")
    os.environ.pop("FEATMLP_JPEG_DECODER", None)


if __name__ == "__main__":
    main()
