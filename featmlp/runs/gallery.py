"""The report's gallery: which test images it shows, their thumbnails, and its HTML.

What is shown is chosen from the predictions alone (:func:`gallery_rows`), the same way when a run
writes its thumbnails and when the report is drawn, and it is bounded by :data:`GALLERY_CAPS`
whatever the size of the test split or the number of classes:

- the most confident mistakes;
- for the most confused pairs of classes (the largest off-diagonal cells of the confusion
  matrix), a row of examples each;
- per class (all of them up to ``classes``, else those of lowest recall), its most confident
  correct and wrong predictions.

The thumbnails (``thumbnails.npz``, :data:`featmlp.runs.layout.THUMBNAILS_FILE`) are written by
the run while it has the images at hand (``featmlp run``, ``lecture``, ``evaluate --data``): small
JPEGs of at most :data:`THUMB_SIDE` pixels a side, kept as bytes in plain arrays (``rows``,
``names``, ``offsets``, ``jpeg``; never a pickle), so the report embeds them as they are (a
``data:image/jpeg`` URI) and needs neither the images nor their source. A run trained on a feature
table alone has no images and so no thumbnails: its gallery lists the names, and says so.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np

from featmlp._io import atomic_write, read_npz
from featmlp.errors import DataError
from featmlp.runs.layout import PREDICTIONS_FILE, THUMBNAILS_FILE
from featmlp.runs.predictions import Predictions, mistake_rows, read_predictions

# What the gallery shows at most: the page's size is bounded by these, whatever the test split.
GALLERY_CAPS = {"mistakes": 24, "pairs": 5, "per_pair": 8, "classes": 20, "per_class": 4}
# The most images the gallery shows, and so the most thumbnails a run keeps.
MAX_THUMBNAILS = (GALLERY_CAPS["mistakes"] + GALLERY_CAPS["pairs"] * GALLERY_CAPS["per_pair"]
                  + GALLERY_CAPS["classes"] * 2 * GALLERY_CAPS["per_class"])
THUMB_SIDE = 64  # pixels, the longer side (smaller images are kept as they are)
THUMB_QUALITY = 80  # JPEG


def gallery_rows(preds: Predictions) -> dict:
    """The rows of the test split the gallery shows: ``{"mistakes": rows, "pairs": [(true, predicted,
    count, rows)], "classes": [(class, correct rows, wrong rows)], "classes_cut": bool}``; each list of
    rows the most confident first (ties in row order)."""
    caps = GALLERY_CAPS
    n_classes = len(preds.class_names)
    y, pred, prob = preds.y_true, preds.y_pred, preds.probability
    by_confidence = np.argsort(-prob, kind="stable")
    cm = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    cells = np.argsort(-off.ravel(), kind="stable")[:caps["pairs"]]
    pairs = []
    for cell in cells:
        t, p = divmod(int(cell), n_classes)
        if off[t, p]:
            rows = by_confidence[(y[by_confidence] == t) & (pred[by_confidence] == p)][:caps["per_pair"]]
            pairs.append((t, p, int(off[t, p]), rows))
    support = cm.sum(axis=1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(n_classes), where=support > 0)
    classes = np.arange(n_classes)
    cut = n_classes > caps["classes"]
    if cut:  # the classes of lowest recall, shown in class order
        classes = np.sort(np.argsort(recall, kind="stable")[:caps["classes"]])
    per_class = []
    for c in classes:
        mine = by_confidence[y[by_confidence] == c]
        right = pred[mine] == c
        per_class.append((int(c), mine[right][:caps["per_class"]], mine[~right][:caps["per_class"]]))
    return {"mistakes": mistake_rows(preds)[:caps["mistakes"]], "pairs": pairs, "classes": per_class,
            "classes_cut": cut}


def shown_rows(selection: dict) -> np.ndarray:
    """Every row :func:`gallery_rows` chose, once each, sorted."""
    parts = [selection["mistakes"], *(rows for *_, rows in selection["pairs"]),
             *(r for _, right, wrong in selection["classes"] for r in (right, wrong))]
    return np.unique(np.concatenate([np.asarray(p, np.int64) for p in parts] + [np.zeros(0, np.int64)]))


def write_thumbnails(path: str | os.PathLike, images, preds: Predictions) -> Path:
    """Write the thumbnails of the test images the gallery shows (``images``: the test split, an
    array or an :class:`featmlp.data.ImageArray`, decoded only at those rows); atomically."""
    from PIL import Image  # start-up: Pillow only when thumbnails are made

    rows = shown_rows(gallery_rows(preds))
    pixels = np.asarray(images[rows]) if len(rows) else np.zeros((0, 1, 1, 3), np.uint8)
    blobs = []
    for img in pixels:
        im = Image.fromarray(np.ascontiguousarray(img, np.uint8))
        im.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)  # never enlarged
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=THUMB_QUALITY)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs], dtype=np.int64)]).astype(np.int64)
    with atomic_write(path, "wb") as f:
        np.savez(f, rows=rows, names=np.array([preds.names[i] for i in rows], dtype=str).reshape(-1),
                 offsets=offsets, jpeg=np.concatenate(blobs) if blobs else np.zeros(0, np.uint8))
    return Path(path)


def read_thumbnails(path: str | os.PathLike) -> dict[tuple[int, str], bytes]:
    """``{(row, name): JPEG bytes}`` of a thumbnails file ({} when there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    z = read_npz(path, what="thumbnails file")
    try:
        rows, names, offsets, jpeg = z["rows"], z["names"], z["offsets"], z["jpeg"]
        if not (len(rows) == len(names) == len(offsets) - 1 and offsets[-1] == len(jpeg)):
            raise ValueError("its arrays do not fit together")
    except (KeyError, ValueError, IndexError) as e:
        raise DataError(f"{path} is not a featmlp thumbnails file ({e}): run again to write it") from None
    return {(int(r), str(n)): jpeg[a:b].tobytes() for r, n, a, b in zip(rows, names, offsets[:-1], offsets[1:])}


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _caps_line() -> str:
    c = GALLERY_CAPS
    return (f"At most {c['mistakes']} mistakes, {c['pairs']} confused pairs of {c['per_pair']} images, and "
            f"{c['per_class']} correct and {c['per_class']} wrong images for each of at most {c['classes']} "
            f"classes ({MAX_THUMBNAILS} images, thumbnails of at most {THUMB_SIDE} pixels a side), whatever the "
            f"size of the test split.")


def gallery_html(directory: str | os.PathLike, level: int = 2) -> str:
    """The gallery section of a run's (or an evaluation's) report: empty when it has no ``predictions.csv``."""
    directory = Path(directory)
    if not (directory / PREDICTIONS_FILE).is_file():
        return ""
    h, h2 = f"h{level}", f"h{level + 1}"
    try:
        preds = read_predictions(directory / PREDICTIONS_FILE)
        thumbs = read_thumbnails(directory / THUMBNAILS_FILE)
    except DataError as e:
        return f'<{h}>Test images</{h}><p class="muted">{_e(e)}</p>'
    if not len(preds):
        return ""
    sel = gallery_rows(preds)
    names = preds.class_names

    def tile(i) -> str:
        i = int(i)
        jpeg = thumbs.get((i, preds.names[i]))
        img = (f'<img class="thumb" alt="{_e(preds.names[i])}" src="data:image/jpeg;base64,'
               f'{base64.b64encode(jpeg).decode("ascii")}">' if jpeg else '<div class="nothumb">no image</div>')
        right = preds.y_pred[i] == preds.y_true[i]
        verdict = (f"{_e(names[preds.y_true[i]])}" if right else
                   f"{_e(names[preds.y_true[i]])} &rarr; <b>{_e(names[preds.y_pred[i]])}</b>")
        return (f'<figure class="tile{"" if right else " wrong"}">{img}<figcaption>{verdict} '
                f'{preds.probability[i]:.2f}<br><span class="fname">{_e(preds.names[i])}</span>'
                f"</figcaption></figure>")

    def strip(rows) -> str:
        return '<div class="gallery">' + "".join(tile(i) for i in rows) + "</div>" if len(rows) else \
            '<p class="muted">none</p>'

    out = [f"<{h}>Test images</{h}>", f'<p class="muted">{_e(_caps_line())} Captions: true class &rarr; '
           f"predicted class, its probability, the image's name. Every image's prediction is in "
           f"{PREDICTIONS_FILE}.</p>"]
    if not thumbs:
        out.append('<p class="muted">No thumbnails: this run was trained on a feature table, without its '
                   "images at hand (featmlp run, lecture and evaluate --data keep thumbnails of the images shown "
                   "here); the names say which images they are.</p>")
    out += [f"<{h2}>Most confident mistakes</{h2}>", strip(sel["mistakes"])]
    out.append(f"<{h2}>Most confused pairs of classes</{h2}>")
    if not sel["pairs"]:
        out.append('<p class="muted">no mistakes</p>')
    for t, p, count, rows in sel["pairs"]:
        out.append(f"<p>{_e(names[t])} taken for {_e(names[p])}: {count} image{'s' if count != 1 else ''}</p>")
        out.append(strip(rows))
    cut = (f" (the {GALLERY_CAPS['classes']} classes of lowest recall of {len(names)})" if sel["classes_cut"]
           else "")
    out.append(f"<{h2}>Each class: most confident correct and wrong predictions{cut}</{h2}>")
    for c, right, wrong in sel["classes"]:
        out.append(f"<p><b>{_e(names[c])}</b></p>" + strip(np.concatenate([right, wrong])))
    return "\n".join(out)


GALLERY_CSS = """
div.gallery { display: flex; flex-wrap: wrap; gap: .4em; margin: .3em 0 1em; }
figure.tile { margin: 0; width: 96px; font-size: .7em; border: 1px solid #ddd; padding: 2px; }
figure.tile.wrong { border-color: #d88; background: #fff6f6; }
img.thumb { width: 92px; height: 92px; object-fit: contain; image-rendering: pixelated; border: 0; }
div.nothumb { width: 92px; height: 24px; color: #999; }
span.fname { color: #777; overflow-wrap: anywhere; }
"""
