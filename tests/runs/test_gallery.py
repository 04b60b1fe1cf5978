"""featmlp.runs.gallery and the report's test images: what is chosen (against numpy), the thumbnails
(against the images), a page bounded whatever the test split, looked at with and without a browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from featmlp.runs.gallery import (GALLERY_CAPS, MAX_THUMBNAILS, gallery_html, gallery_rows, read_thumbnails,
                                  shown_rows, write_thumbnails)
from featmlp.runs.layout import PREDICTIONS_FILE, THUMBNAILS_FILE
from featmlp.runs.predictions import Predictions, top_k, write_predictions


def _predictions(n=3000, n_classes=30, seed=0) -> tuple[Predictions, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += 2.0  # mostly right
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    c, p = top_k(proba, 5)
    names = tuple(f"img<{i}>&.png" for i in range(n))
    return Predictions(names, y, c, p, tuple(f"class {k}" for k in range(n_classes))), proba


def test_the_gallery_chooses_as_numpy_does():
    preds, proba = _predictions()
    sel = gallery_rows(preds)
    pred, top = proba.argmax(axis=1), proba.max(axis=1)
    wrong = np.flatnonzero(pred != preds.y_true)
    assert sel["mistakes"].tolist() == wrong[np.argsort(-top[wrong], kind="stable")][:GALLERY_CAPS["mistakes"]].tolist()
    cm = np.zeros((30, 30), int)
    np.add.at(cm, (preds.y_true, pred), 1)
    np.fill_diagonal(cm, 0)
    counts = sorted(cm.ravel().tolist(), reverse=True)[:GALLERY_CAPS["pairs"]]
    assert [count for _, _, count, _ in sel["pairs"]] == counts
    for t, p, _, rows in sel["pairs"]:
        assert all(preds.y_true[r] == t and pred[r] == p for r in rows)
        assert list(top[rows]) == sorted(top[rows], reverse=True)
    # 30 classes, 20 shown: those of lowest recall
    recall = np.array([(pred[preds.y_true == k] == k).mean() for k in range(30)])
    shown = [c for c, _, _ in sel["classes"]]
    assert sel["classes_cut"] and len(shown) == GALLERY_CAPS["classes"]
    assert max(recall[shown]) <= min(np.delete(recall, shown))
    assert len(shown_rows(sel)) <= MAX_THUMBNAILS


def test_thumbnails_are_the_images_shown_and_the_page_is_bounded(tmp_path):
    preds, _ = _predictions()
    # each image one flat colour from its row number: its thumbnail must come back that colour
    colours = np.stack([np.arange(3000) % 251, (np.arange(3000) * 7) % 253, (np.arange(3000) * 13) % 255], 1)
    images = np.broadcast_to(colours[:, None, None, :].astype(np.uint8), (3000, 96, 80, 3))
    write_predictions(tmp_path / PREDICTIONS_FILE, preds)
    write_thumbnails(tmp_path / THUMBNAILS_FILE, images, preds)
    thumbs = read_thumbnails(tmp_path / THUMBNAILS_FILE)
    rows = shown_rows(gallery_rows(preds))
    assert sorted(thumbs) == sorted((int(r), preds.names[r]) for r in rows)
    for (r, _), jpeg in list(thumbs.items())[:20]:
        img = np.asarray(Image.open(io.BytesIO(jpeg)))
        assert max(img.shape[:2]) <= 64 and img.shape[:2] == (64, 53)  # never above 64 a side, aspect kept
        assert np.abs(img.reshape(-1, 3).mean(0) - colours[r]).max() < 4
    page = gallery_html(tmp_path)
    uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert 0 < len(uris) <= MAX_THUMBNAILS
    assert len(page) < 1_000_000  # whatever the test split's size
    assert "img&lt;" in page and "img<" not in page  # names escaped
    assert f"At most {GALLERY_CAPS['mistakes']} mistakes" in page


def test_without_thumbnails_the_gallery_names_the_images_and_says_why(tmp_path):
    preds, _ = _predictions(200, 4)
    write_predictions(tmp_path / PREDICTIONS_FILE, preds)
    page = gallery_html(tmp_path)
    assert "No thumbnails" in page and "data:image" not in page
    assert "Most confident mistakes" in page and preds.names[int(gallery_rows(preds)["mistakes"][0])].replace(
        "<", "&lt;").replace(">", "&gt;").replace("&.", "&amp;.") in page
    assert gallery_html(tmp_path / "nothing") == ""  # an old run: no section


def browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(browser() is None, reason="no headless browser installed (chromium or google-chrome)")
def test_a_headless_browser_shows_the_gallery(tmp_path):
    from featmlp.runs.report import _page  # the page as a report wraps it

    preds, _ = _predictions(300, 5)
    images = np.random.default_rng(0).integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    write_predictions(tmp_path / PREDICTIONS_FILE, preds)
    write_thumbnails(tmp_path / THUMBNAILS_FILE, images, preds)
    (tmp_path / "page.html").write_text(_page("gallery", [gallery_html(tmp_path)]), encoding="utf-8")
    shot = tmp_path / "shot.png"
    r = subprocess.run([browser(), "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
                        "--window-size=1100,2000", (tmp_path / "page.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file(), r.stderr
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 10  # the thumbnails were drawn, not a blank page
    dom = subprocess.run([browser(), "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom",
                          (tmp_path / "page.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="thumb"') == (tmp_path / "page.html").read_text(encoding="utf-8").count('class="thumb"')
    assert base64.b64decode(re.search(r'base64,([^"]+)"', dom).group(1))[:2] == b"\xff\xd8"  # a JPEG
