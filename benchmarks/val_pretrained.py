"""The `pretrained` preset's choice: heads trained on a 45,000 / 5,000 split of CIFAR-10's train (never the
test rows) on one extracted table of a pretrained set with mirror images (issue 16, items 5 and 6).

From a table extracted with ``mirror=true`` (each image's features, then its mirror image's), three views:

- ``image``: the image's columns only (what ``mirror=false`` extracts), no flips;
- ``mean``: the mean of the image's and its mirror image's columns (a flip-averaged feature), no flips;
- ``both``: all columns, flips for training (``--flip``) and prediction (``--test-flip``) as column
  permutations;
- ``rows``: the image's columns, the mirror images as extra training rows and each prediction the mean
  of the image's and its mirror image's probabilities (what flips are for a network);
- ``tta``: the image's columns, no extra training rows, predictions averaged with the mirror image's
  (``--test-flip`` alone).

Each head (``--heads``, names below) is trained on the 45,000 rows and scored on the 5,000 held out
(stratified, seeded: 500 a class), with test flips where the view has them. Prints one line per run:
view, head, validation accuracy, training seconds.

    featmlp extract ../shared/data/cifar10-jpg.tar.gz --features efficientnet-lite0 -o lite0.npz
    python benchmarks/val_pretrained.py lite0.npz [--heads linear,mlp1024] [--views image,both] [--epochs 15]

The resolution is chosen apart, on fewer rows (extracting all of them at each size would take an hour):
``--sizes 96,128,160 --rows 10000`` extracts ``--rows`` seeded training images and the 5,000 validation
images of the same split at each size (``mirror=false``), and trains each head on them:

    python benchmarks/val_pretrained.py ../shared/data/cifar10-jpg.tar.gz --sizes 96,128,160 --rows 10000

The head itself (issue 16's third round): ``--changes`` lists sets of training settings changed from the
preset's (``;`` between sets, ``&`` between fields), each trained with ``--seeds`` seeds on the table's
image columns (a table extracted with ``mirror=false``, such as a run's own ``features.npz``):

    python benchmarks/val_pretrained.py runs/lite0/features.npz --heads mlp1024 --views image \
        --changes "epochs=30;optimizer=adamw&weight_decay=0.05;batch_size=128" --seeds 1

The pooling likewise (issue 16's second round): ``--variants`` lists option sets separated by ``;``,
each extracted and scored with ``--seeds`` seeds of each head:

    python benchmarks/val_pretrained.py ../shared/data/cifar10-jpg.tar.gz --sizes 160 --rows 10000 \
        --heads mlp1024 --seeds 3 --variants "pool=mean,head=post;pool=mean,head=pre;pool=mean+max,head=pre"
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

HEADS = {
    # a linear probe (softmax regression on standardised features): the honest baseline
    "linear": dict(hidden=(), dropout=0.0, lr=1e-3, label_smoothing=0.0),
    "mlp1024": dict(hidden=(1024,), dropout=0.5, lr=1e-3, label_smoothing=0.1),
    "mlp2048": dict(hidden=(2048,), dropout=0.5, lr=1e-3, label_smoothing=0.1),
    "b256-1024": dict(hidden=(1024,), bottleneck=256, dropout=0.5, lr=1e-3, label_smoothing=0.1),
    "b512-1024": dict(hidden=(1024,), bottleneck=512, dropout=0.5, lr=1e-3, label_smoothing=0.1),
    "mlp1024-d0.3": dict(hidden=(1024,), dropout=0.3, lr=1e-3, label_smoothing=0.1),
}


def split(y: np.ndarray, per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    val = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)])
    train = np.setdiff1d(np.arange(len(y)), val)
    return train, np.sort(val)


def main() -> None:
    from featmlp.tables.store import load_features
    from featmlp.training import PRESETS, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("features")
    ap.add_argument("--heads", default="linear,mlp1024")
    ap.add_argument("--views", default="image,both")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--sizes", default="", help="images: compare these resolutions (see above)")
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--sets", default="efficientnet-lite0",
                    help="images: the pretrained sets compared at each size (comma-separated)")
    ap.add_argument("--variants", default="",
                    help="images: option sets compared at each size, ';' between sets, ',' between options "
                         "(e.g. 'pool=mean,head=post;pool=mean+max,head=pre')")
    ap.add_argument("--seeds", type=int, default=1, help="seeds of each head")
    ap.add_argument("--changes", default="",
                    help="a table: training settings changed from the preset's, ';' between sets, '&' between "
                         "fields (e.g. 'epochs=30;optimizer=adamw&weight_decay=0.05;hidden=(1024,1024)')")
    args = ap.parse_args()
    if args.sizes:
        return by_size(args)

    table = load_features(args.features)
    X = np.asarray(table.X_train, np.float32)
    y = np.asarray(table.y_train)
    perm = table.mirror()
    views = args.views.split(",")
    if perm is None:  # extracted without the mirror images: the image's columns are all there is
        assert views == ["image"], "extract with mirror=true for the mean and both views"
        half = X.shape[1]
    else:
        half = X.shape[1] // 2
    tr, va = split(y, args.per_class)
    print(f"{args.features}: {len(tr)} training rows, {len(va)} validation rows, {X.shape[1]} columns")
    for view in views:
        if view == "image":
            Xv, mirror = X[:, :half], None
        elif view == "mean":
            Xv, mirror = (X[:, :half] + X[:, half:]) / 2, None
        elif view in ("rows", "tta"):
            for head in args.heads.split(","):
                config = dataclasses.replace(PRESETS["pretrained"], epochs=args.epochs, flip=False, test_flip=False,
                                             **HEADS[head])
                Xtr, ytr = X[tr, :half], y[tr]
                if view == "rows":
                    Xtr, ytr = np.concatenate([Xtr, X[tr, half:]]), np.concatenate([ytr, ytr])
                start = time.perf_counter()
                result = train(Xtr, ytr, config, n_classes=len(table.class_names))
                seconds = time.perf_counter() - start
                p = result.predict_proba(X[va, :half]) + result.predict_proba(X[va, half:])
                acc = float(np.mean(p.argmax(1) == y[va]))
                print(f"  {view:5s} {head:13s} flips=on  epochs={args.epochs}  val {acc:.4f}  {seconds:6.1f} s",
                      flush=True)
            continue
        else:
            Xv, mirror = X, perm
        for head in args.heads.split(","):
            for changes in parse_changes(args.changes):
                for seed in range(args.seeds):
                    flips = mirror is not None
                    config = dataclasses.replace(PRESETS["pretrained"], **{
                        "epochs": args.epochs, "flip": flips, "test_flip": flips, "seed": seed, **HEADS[head],
                        **changes})
                    start = time.perf_counter()
                    result = train(Xv[tr], y[tr], config, n_classes=len(table.class_names), mirror=mirror)
                    seconds = time.perf_counter() - start
                    acc = float(np.mean(result.predict(Xv[va]) == y[va]))
                    said = " ".join(f"{k}={v}" for k, v in changes.items()) or "as the preset"
                    print(f"  {view:5s} {head:13s} {said} seed={seed} flips={'on ' if flips else 'off'} "
                          f"epochs={config.epochs}  val {acc:.4f}  {seconds:6.1f} s", flush=True)


def parse_changes(text: str) -> list[dict]:
    """``"epochs=30;optimizer=adamw&weight_decay=0.05"`` as ``[{"epochs": 30}, {"optimizer": "adamw",
    "weight_decay": 0.05}]`` (Python literals, else text); ``""`` as ``[{}]`` (the preset itself)."""
    import ast

    sets = []
    for part in text.split(";"):
        changes = {}
        for pair in filter(None, part.split("&")):
            key, _, value = pair.partition("=")
            try:
                changes[key.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                changes[key.strip()] = value.strip()
        sets.append(changes)
    return sets or [{}]


def by_size(args) -> None:
    from featmlp.data import load_dataset
    from featmlp.features import extract_features, fit_features
    from featmlp.training import PRESETS, train

    ds = load_dataset(args.features)
    y = np.asarray(ds.train_labels)
    tr, va = split(y, args.per_class)
    tr = np.sort(np.random.default_rng(1).choice(tr, min(args.rows, len(tr)), replace=False))
    train_images, val_images = np.asarray(ds.train_images[tr]), np.asarray(ds.train_images[va])
    print(f"{args.features}: {len(tr)} training rows, {len(va)} validation rows (of train), mirror=false")
    variants = [dict(kv.split("=", 1) for kv in v.split(",")) for v in args.variants.split(";")] if args.variants \
        else [{}]
    for fset in args.sets.split(","):
        for size in (int(v) for v in args.sizes.split(",")):
            for variant in variants:
                options = {"size": size, "mirror": False, **variant}
                state = fit_features(fset, None, options)
                start = time.perf_counter()
                Xt = extract_features(train_images, fset, state=state)
                rate = len(tr) / (time.perf_counter() - start)
                Xv = extract_features(val_images, fset, state=state)
                label = ",".join(f"{k}={v}" for k, v in variant.items())
                for head in args.heads.split(","):
                    accs = []
                    for seed in range(args.seeds):
                        config = dataclasses.replace(PRESETS["pretrained"], epochs=args.epochs, flip=False,
                                                     test_flip=False, seed=seed, **HEADS[head])
                        result = train(Xt, y[tr], config, n_classes=len(ds.class_names))
                        accs.append(float(np.mean(result.predict(Xv) == y[va])))
                    each = " ".join(f"{a:.4f}" for a in accs)
                    print(f"  {fset} size {size:3d} {label} {Xt.shape[1]} columns {head:13s} val "
                          f"{np.mean(accs):.4f} ({each})   extraction {rate:.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
