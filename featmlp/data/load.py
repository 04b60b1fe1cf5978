"""``load_dataset`` and its dispatch: "where the images are" -> a :class:`~featmlp.data.Dataset`.

:func:`load_dataset` accepts

* ``None`` or ``"sample"``: a CIFAR-10 sample bundled with the package (5,000 train and
  1,000 test images, balanced; built by ``tools/make_sample.py``);
* ``"cifar10"``: the official CIFAR-10 archive, downloaded once into a cache;
* a ``cifar-10-python.tar.gz`` archive, or its extracted ``cifar-10-batches-py/`` folder
  (or that folder's parent);
* an image folder ``ROOT/<class>/<images>`` or ``ROOT/train/<class>/<images>`` +
  ``ROOT/test/<class>/<images>``, as a directory or a .zip/.tar/.tar.gz/.tgz archive;
* tar shards (the WebDataset layout): a folder of ``*.tar`` files (or ``train/*.tar`` +
  ``test/*.tar``) whose members are ``<key>.<class>.<ext>`` or ``<class>/<file>``;
* an fsspec URL (``s3://bucket/prefix/``, ``gs://``, ``memory://``, ``file://`` ...) to any
  of those folders, to one archive, or a pattern of shards (``s3://b/shard-{000..009}.tar``),
  with the filesystem's ``storage_options`` (credentials, ``endpoint_url``).

Local image folders and archives are listed first (every tar verified to its end, each
file's header read and hashed, sizes checked). Tar shards and URLs are listed without
reading the images (names and sizes from the listing, tars from their headers; only the
first image is read, for the size), and fingerprinted from that listing. Either way images
are decoded when indexed, chunk by chunk (:class:`~featmlp.data.ImageArray`), so memory does not grow with
the number of images, and the files of a chunk are read together (one range of a tar, or
concurrent requests to object storage). Archives are never unpacked to disk.
:meth:`~featmlp.data.ImageArray.portable` prepares a chunk for another process or machine.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from .._memory import check_memory
from .._validation import Field, check
from ..errors import ConfigError, DataError
from . import _remote
from ._cifar import CIFAR10_FOLDER, is_cifar_name, read_cifar_batches
from ._files import DEFAULT_MAX_FILE_BYTES, MAX_FILE_BYTES, limit_from_env, not_regular
from ._dataset import Dataset, stratified_split
from ._download import fetch_cifar10
from ._decode import IMAGE_SIZE, image_size_pair, jpeg_decoder
from ._images import (DEFAULT_MAX_PIXELS, LAYOUT_HELP, group_by_class, is_archive, list_folder,
                      read_archive, scan_groups, scan_listed)
from ._image_array import SKIP_HINT
from ._names import ARCHIVE_SUFFIXES
from ._remote import STORAGE_OPTIONS, is_url
from ._tar_shards import list_local_shard, shard_layout, shard_splits

SAMPLE_SOURCE = "sample"
CIFAR10_SOURCE = "cifar10"
SAMPLE_FILE = "cifar10-sample.tar.gz"


def sample_resource():
    """The bundled sample's archive, as :mod:`importlib.resources` finds it in the installed package."""
    return resources.files("featmlp") / "_sample" / SAMPLE_FILE


_ACCEPTED = (f"expected one of: None or {SAMPLE_SOURCE!r} (the bundled CIFAR-10 sample); "
             f"{CIFAR10_SOURCE!r} (download the official CIFAR-10 archive); a path to "
             f"cifar-10-python.tar.gz or to a {CIFAR10_FOLDER}/ folder; a path to an image "
             f"folder ROOT/<class>/<images> or ROOT/train|test/<class>/<images>, or to a "
             f".zip/.tar/.tar.gz/.tgz archive of one, or to a folder of .tar shards; or an "
             f"fsspec URL (s3://bucket/prefix/) to any of those")

# What each setting of load_dataset accepts, in the order they are checked (the first bad one is
# named; each rule right after its field). The source itself is data: a DataError when unreadable.
FIELDS: dict[str, Field] = {
    "test_fraction": Field("number", "sources without a train/test split: the fraction of each class held out "
                           "for test (1: every image is a test image)", low=0, low_open=True, high=1),
    "image_size": IMAGE_SIZE,
    "mixed_size": Field("image_size", "where images have different sizes and image_size is not given: resize "
                        "every image to this (width, height)"),
    "seed": Field("int", "seed of the stratified train/test split", low=0),
    "skip_bad": Field("bool", "leave out files that are not readable images, listed in Dataset.skipped"),
    "storage_options": STORAGE_OPTIONS,
    "max_file_bytes": MAX_FILE_BYTES,
    "max_image_pixels": Field("optional_int", "largest image (width x height); None: "
                              "$FEATMLP_MAX_IMAGE_PIXELS, else 89.5 Mpx", low=1),
}


def _cifar10_only_rule(s) -> str | None:
    if (s["url"] is not None or s["md5"] is not None) and s["source"] != CIFAR10_SOURCE:
        return f"url and md5 only apply to source={CIFAR10_SOURCE!r}, not to {s['source']!r}"


def _url_only_rule(s) -> str | None:
    if s["storage_options"] and not is_url(s["source"]):
        return (f"storage_options only apply to a URL (s3://bucket/prefix/ ...), not to "
                f"{s['source']!r}; leave them out")


RULES = (("storage_options", _cifar10_only_rule), ("storage_options", _url_only_rule))


def load_dataset(source: str | os.PathLike | None = None, *, test_fraction: float = 0.2,
                 seed: int = 0, image_size: tuple[int, int] | None = None, cache_dir=None,
                 url: str | None = None, md5: str | None = None, progress=None,
                 skip_bad: bool = False, max_file_bytes: int | None = None,
                 max_image_pixels: int | None = None, storage_options: dict | None = None,
                 mixed_size: tuple[int, int] | None = None) -> Dataset:
    """Load a train/test image dataset from the bundled sample, CIFAR-10, an image folder or a URL.

    Parameters
    ----------
    source : str, path or None
        ``None`` or ``"sample"`` (bundled CIFAR-10 sample), ``"cifar10"`` (download the
        official archive), a path to a CIFAR-10 python archive/folder, to an image
        folder/archive or to a folder of tar shards, or an fsspec URL to an image folder,
        an archive or tar shards (see the module docstring for the layouts). Pass a
        ``Path`` (or ``"./sample"``) for a folder that happens to be called ``sample`` or
        ``cifar10``.
    test_fraction : float, default 0.2
        For image folders without ``train/`` and ``test/``: the fraction of each class
        held out for test (stratified). Ignored by sources that have a split.
    seed : int, default 0
        Seed of that split; the same seed gives the same split.
    image_size : (width, height), optional
        Resize every image to this size with Pillow's bilinear filter (CLI: ``--image-size
        32x32``, WxH). Width first as in Pillow; the arrays are ``(N, height, width, 3)``.
        Default: images keep their size, and where they have different sizes each is resized
        to the most common size (on a tie the larger area, then the wider), with a
        ``UserWarning`` saying how many were. Sources listed without reading every image
        (URLs, tar shards) know the first image's size only: an image of another size is
        resized to the first image's when it is decoded.
    mixed_size : (width, height), optional
        Where images have different sizes and ``image_size`` is not given: resize every image
        to this size instead of the most common one (what ``run`` and ``extract`` pass for the
        pretrained feature sets, which resize every image to their input size themselves).
    cache_dir : path, optional
        Where ``"cifar10"`` is downloaded; default ``$FEATMLP_CACHE``, else
        ``$XDG_CACHE_HOME/featmlp``, else ``~/.cache/featmlp``. Ignored by other sources.
    url, md5 : str, optional
        For ``"cifar10"`` only: the archive's URL and MD5, default ``$FEATMLP_CIFAR10_URL``
        / ``$FEATMLP_CIFAR10_MD5``, else the official ones.
    progress : callable, optional
        Progress hook ``progress(desc, done, total)``: ``"download"`` in bytes,
        ``"read"`` in images (listing an image folder or archive).
    skip_bad : bool, default False
        Image folders and archives: leave out files that are not readable images (a
        README.txt in a class folder, a truncated JPEG) and list them in
        ``Dataset.skipped``. This decodes every image once more while listing, to find
        the files that only fail when decoded. Without it only headers are read while
        listing, and a file that fails later, when its chunk is decoded, raises a
        DataError naming it.
    max_file_bytes : int, optional
        Largest file or archive member read, default ``$FEATMLP_MAX_FILE_BYTES``, else
        256 MiB; checked on the member's header, before anything is inflated.
    max_image_pixels : int, optional
        Largest image (width x height, from its header), default
        ``$FEATMLP_MAX_IMAGE_PIXELS``, else Pillow's ``MAX_IMAGE_PIXELS`` (89.5 Mpx).
        Sources listed without reading (URLs, tar shards) check it on their first image.
    storage_options : dict, optional
        For URLs only: settings of the fsspec filesystem, e.g. ``{"endpoint_url":
        "http://minio:9000", "key": ..., "secret": ...}`` for S3 or ``{"anon": True}`` for a
        public bucket (CLI: ``--storage-option KEY=VALUE``). Never recorded anywhere.

    Returns
    -------
    Dataset
        Images ``(N, H, W, 3)`` uint8 RGB: an ndarray for CIFAR-10 batches, an
        :class:`~featmlp.data.ImageArray` (decoded when indexed) for image folders and archives; labels
        index ``class_names``, which image folders take from their class folders, sorted
        alphabetically.

    Raises
    ------
    DataError
        If the source is missing, unknown or unreadable; the message says what to do.
    ConfigError
        If a setting is out of what :data:`FIELDS` and :data:`RULES` accept.

    Examples
    --------
    >>> ds = load_dataset("sample")
    >>> ds.train_images.shape, ds.test_images.shape
    ((5000, 32, 32, 3), (1000, 32, 32, 3))
    >>> ds.class_names[:3]
    ('airplane', 'automobile', 'bird')

    Object storage (needs ``pip install 'featmlp[cloud]'``):

    >>> ds = load_dataset("s3://my-bucket/images/", storage_options={"anon": True})  # doctest: +SKIP
    """
    check(dict(source=source, url=url, md5=md5, test_fraction=test_fraction, image_size=image_size,
               mixed_size=mixed_size, seed=seed, skip_bad=skip_bad, storage_options=storage_options,
               max_file_bytes=max_file_bytes, max_image_pixels=max_image_pixels), FIELDS, RULES)
    test_fraction = float(test_fraction)
    image_size, mixed_size = image_size_pair(image_size), image_size_pair(mixed_size)
    storage_options = dict(storage_options or {})
    is_name = isinstance(source, str)
    jpeg_decoder()  # a bad $FEATMLP_JPEG_DECODER refused before anything is read
    options = dict(test_fraction=test_fraction, seed=seed, image_size=image_size, mixed_size=mixed_size,
                   progress=progress, skip_bad=bool(skip_bad),
                   max_file_bytes=limit_from_env(max_file_bytes, "FEATMLP_MAX_FILE_BYTES",
                                                 DEFAULT_MAX_FILE_BYTES, "max_file_bytes"),
                   max_pixels=limit_from_env(max_image_pixels, "FEATMLP_MAX_IMAGE_PIXELS",
                                             DEFAULT_MAX_PIXELS, "max_image_pixels"))
    check_resize(image_size, options["max_pixels"])
    if source is None or (is_name and source == SAMPLE_SOURCE):
        with resources.as_file(sample_resource()) as path:
            if not path.is_file():
                raise DataError(f"the bundled sample {SAMPLE_FILE} is missing from the "
                                f"installation; reinstall featmlp or rebuild it with "
                                f"tools/make_sample.py")
            return _load_path(path, f"bundled CIFAR-10 sample ({SAMPLE_FILE})", **options)
    if is_name and source == CIFAR10_SOURCE:
        path = fetch_cifar10(cache_dir, url, md5, progress)
        return _load_path(path, f"official CIFAR-10 (python version), cached at {path}",
                          **options)
    if is_url(source):
        return _load_url(source, storage_options, **options)
    try:
        path = Path(source).expanduser()
    except TypeError:
        raise DataError(f"unknown data source {source!r}; {_ACCEPTED}") from None
    if not path.exists():
        raise DataError(f"data source {str(source)!r} is neither a known name nor an existing "
                        f"path; {_ACCEPTED}")
    return _load_path(path.resolve(), None, **options)


def _load_path(path: Path, description: str | None, shown: str | None = None, **options) -> Dataset:
    """A local folder, archive or folder of shards; messages name it ``shown`` (a URL it came from)."""
    shown = shown or str(path)
    if path.is_dir():
        cifar_dir = _find_cifar_dir(path)
        if cifar_dir is not None:
            files = {f.name: (str(f), f.read_bytes) for f in cifar_dir.iterdir()
                     if f.is_file() and is_cifar_name(f.name)}
            return _cifar_dataset(files, description or f"CIFAR-10 python batches in {cifar_dir}",
                                  options["image_size"])
        files = list_folder(path, max_file_bytes=options["max_file_bytes"])
        layout = shard_layout(files.iter_keys(), shown)
        if layout is not None:
            skipped = _special_shards(files, options["skip_bad"])
            listed = {split: [list_local_shard(Path(files.blob(i).path), files.key(i), f"{shown}/{files.key(i)}",
                                               max_file_bytes=options["max_file_bytes"])
                              for i in indices]
                      for split, indices in layout.items()}
            return _shards_dataset(listed, description or f"tar shards in {shown}", shown, listed_skipped=skipped,
                                   **options)
        skipped = []  # special files (FIFOs, devices, bad symlinks) left out by skip_bad
        groups = _group_files(files, shown, options["skip_bad"], skipped)
        del files  # the listing, once grouped: it is not held while the files are read
        return _folder_dataset(groups, description or f"image folder {shown}", listed_skipped=skipped, **options)
    reason = not_regular(path)
    if reason is not None:  # a FIFO would block the read forever, a device never end
        raise DataError(f"cannot read {shown}: it is {reason}; {_ACCEPTED}")
    if not is_archive(path):
        raise DataError(f"{shown} is a file but not a .zip/.tar/.tar.gz/.tgz archive; {_ACCEPTED}")
    files = read_archive(path, max_file_bytes=options["max_file_bytes"], shown=shown)
    batches = [(i, key) for i, key in enumerate(files.iter_keys()) if is_cifar_name(key.rsplit("/", 1)[-1])]
    if batches:
        cifar = {key.rsplit("/", 1)[-1]: (f"{shown}:{key}", files.blob(i).read) for i, key in batches}
        if len(batches) != len(cifar):
            raise DataError(f"{shown} holds several copies of the CIFAR-10 batches; keep one")
        del files  # drop references to the readme & co. before the arrays are built
        return _cifar_dataset(cifar, description or f"CIFAR-10 python batches from {shown}",
                              options["image_size"])
    skipped = []
    groups = _group_files(files, shown, options["skip_bad"], skipped)
    del files
    return _folder_dataset(groups, description or f"image archive {shown}", listed_skipped=skipped, **options)


def _load_url(url: str, storage_options: dict, **options) -> Dataset:
    """An image folder, archive or tar shards behind an fsspec URL, listed without reading the images."""
    fs, path = _remote.open_url(url, storage_options)
    limit = options["max_file_bytes"]
    if _remote.is_pattern(path):  # shard-{000..009}.tar, *.tar
        shards = _remote.match_shards(fs, path, url)
        listed = {None: [_remote.list_remote_tar(fs, p, info, fs.unstrip_protocol(p), name=name, max_file_bytes=limit)
                         for name, p, info in shards]}
        return _shards_dataset(listed, f"{len(shards)} tar shards matching {url}", url, **options)
    if path.lower().endswith(ARCHIVE_SUFFIXES):
        info = _remote.info_of(fs, path, url)
        if path.lower().endswith(".tar"):  # uncompressed: members read by byte range, nothing downloaded
            files, digests = _remote.pack_tar(*_remote.list_remote_tar(fs, path, info, url, max_file_bytes=limit))
            groups = group_by_class(files, url)
            del files
            return _listed_folder_dataset(groups, digests, f"image archive {url}", **options)
        with _remote.downloaded(fs, path, url) as local:
            return _load_path(local, None, shown=url, **options)
    files, digests, tars = _remote.list_prefix(fs, path, url, max_file_bytes=limit)
    layout = shard_layout(files.iter_keys(), url) if tars is not None else None
    if layout is not None:
        shards = {split: [(files.key(i), files.blob(i), tars[i]) for i in indices] for split, indices in layout.items()}
        listed = {split: [_remote.list_remote_tar(fs, blob.path, {"size": blob.size}, blob.where, name=name,
                                                  max_file_bytes=limit, listed=version)
                          for name, blob, version in refs]
                  for split, refs in shards.items()}
        return _shards_dataset(listed, f"tar shards in {url}", url, **options)
    skipped = []  # file:// FIFOs, devices, sockets left out by skip_bad
    groups = group_by_class(files, url, skip_bad=options["skip_bad"], skipped=skipped)
    del files
    return _listed_folder_dataset(groups, digests, f"image folder {url}", listed_skipped=skipped, **options)


def _shards_dataset(listed, description: str, where: str, *, test_fraction, seed, image_size, progress,
                    skip_bad, max_file_bytes, max_pixels, mixed_size=None, listed_skipped=()) -> Dataset:
    splits, class_names, skipped = shard_splits(listed, where, skip_bad=skip_bad)
    decoded, bad = scan_listed(splits, image_size, progress, skip_bad=skip_bad, max_pixels=max_pixels,
                                     mixed_size=mixed_size)
    return _assemble(decoded, class_names, tuple(listed_skipped) + skipped + bad, description, test_fraction, seed,
                     image_size)


def _special_shards(files, skip_bad: bool) -> list:
    """The special files (FIFOs, devices, bad symlinks) of a folder of shards named like a shard:
    a DataError naming the first, or with ``skip_bad`` their ``(file, reason)``."""
    taken = [(key, reason) for key, reason, _ in getattr(files, "special", ()) if key.lower().endswith(".tar")]
    if taken and not skip_bad:
        key, reason = taken[0]
        raise DataError(f"cannot read shard {key}: {reason}; only regular files are read; {SKIP_HINT}")
    return taken


def _listed_folder_dataset(groups, digests, description: str, *, test_fraction, seed, image_size,
                           progress, skip_bad, max_file_bytes, max_pixels, mixed_size=None, listed_skipped=()) -> Dataset:
    """An image folder known from a listing (``group_by_class``); ``digests`` hash each file's listing."""
    splits, class_names = groups
    splits = {key: (chosen, labels, digests[rows]) for key, (chosen, rows, labels) in splits.items()}
    del groups, digests
    decoded, skipped = scan_listed(splits, image_size, progress, skip_bad=skip_bad, max_pixels=max_pixels,
                                     mixed_size=mixed_size)
    return _assemble(decoded, class_names, tuple(listed_skipped) + skipped, description, test_fraction, seed,
                     image_size)


# Bytes a pixel of decoding and resizing one image takes: Pillow's RGB image (4 bytes a pixel)
# and the array made of it (3).
RESIZE_BYTES_PER_PIXEL = 7
# The largest side Pillow takes (a C int).
_MAX_SIDE = 2**31 - 1


def check_resize(image_size, max_pixels: int | None = None) -> None:
    """Refuse (ConfigError, one line) an ``image_size`` (width, height) that no image may be resized to.

    Over the pixel limit of one image (``max_pixels``, default ``$FEATMLP_MAX_IMAGE_PIXELS``,
    else 89.5 Mpx: the limit on the images read applies to the images made), or one image of
    that size would not fit in the memory available (:func:`featmlp._memory.check_memory`).

    Examples
    --------
    >>> check_resize((32, 32))
    >>> check_resize((10000, 10000))
    Traceback (most recent call last):
    ...
    featmlp.errors.ConfigError: image_size 10000x10000 is 100.0 Mpx, over the limit of 89.5 Mpx per image (FEATMLP_MAX_IMAGE_PIXELS, max_image_pixels=): choose a smaller size, e.g. 32x32
    """
    if image_size is None:
        return

    if max_pixels is None:
        max_pixels = limit_from_env(None, "FEATMLP_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS, "max_image_pixels")
    w, h = (int(v) for v in image_size)
    if w * h > max_pixels or max(w, h) > _MAX_SIDE:
        mpx = f"{w * h / 1e6:.1f} Mpx" if w * h < 1e15 else "far more pixels than any image has"
        raise ConfigError(f"image_size {w}x{h} is {mpx}, over the limit of {max_pixels / 1e6:.1f} Mpx per "
                          f"image (FEATMLP_MAX_IMAGE_PIXELS, max_image_pixels=): choose a smaller size, e.g. 32x32"
                          if w * h > max_pixels else
                          f"image_size {w}x{h} has a side over {_MAX_SIDE:,} pixels, more than an image may have: "
                          f"choose a smaller size, e.g. 32x32")
    check_memory(w * h * RESIZE_BYTES_PER_PIXEL, f"resizing an image to image_size {w}x{h}",
                 "choose a smaller image_size=(W, H)")


def _find_cifar_dir(path: Path) -> Path | None:
    """``path`` or ``path/cifar-10-batches-py`` when it holds official batch files."""
    for d in (path, path / CIFAR10_FOLDER):
        if d.is_dir() and any(is_cifar_name(f.name) and f.is_file() for f in d.iterdir()):
            return d
    return None


def _cifar_dataset(files, description: str, image_size) -> Dataset:
    train_x, train_y, test_x, test_y, names, train_names, test_names = read_cifar_batches(files)
    if image_size is not None and image_size != train_x.shape[2:0:-1]:

        w, h = image_size
        n = len(train_x) + len(test_x)  # the batches are resized whole, in memory
        check_memory(3 * w * h * n, f"{n:,} CIFAR-10 images resized to {w}x{h}",
                     "choose a smaller image_size=(W, H)")
        train_x, test_x = _resize(train_x, image_size), _resize(test_x, image_size)
        description += f", resized to {image_size[0]}x{image_size[1]} (width x height)"
    return Dataset(train_x, train_y, test_x, test_y, names, description, train_names=train_names,
                   test_names=test_names)


def _resize(images: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    w, h = image_size
    out = np.empty((len(images), h, w, 3), np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
    return out


def _group_files(files, where: str, skip_bad: bool = False, skipped: list | None = None):
    """``group_by_class`` of a local folder's or archive's listing, which must not be empty; its
    special files (FIFOs, devices, bad symlinks) refused or, ``skip_bad``, added to ``skipped``."""
    if not len(files) and not getattr(files, "special", ()):
        raise DataError(f"{where} contains no files; {LAYOUT_HELP}")
    return group_by_class(files, where, skip_bad=skip_bad, skipped=skipped)


def _folder_dataset(groups, description: str, *, test_fraction, seed,
                    image_size, progress, skip_bad, max_file_bytes, max_pixels, mixed_size=None, listed_skipped=()) -> Dataset:
    """An image folder or archive (``group_by_class``), every file read once now (hashed, its header checked);
    ``listed_skipped``: the files skip_bad left out while listing."""
    splits, class_names = groups
    del groups
    decoded, skipped = scan_groups(splits, image_size, progress, skip_bad=skip_bad, max_pixels=max_pixels,
                                     mixed_size=mixed_size)
    return _assemble(decoded, class_names, tuple(listed_skipped) + skipped, description, test_fraction, seed,
                     image_size)


def _assemble(decoded, class_names, skipped, description: str, test_fraction, seed, image_size) -> Dataset:
    """The Dataset of ``{split: (images, labels)}``: as split, else by a stratified seeded split."""
    if image_size is not None:
        description += f", resized to {image_size[0]}x{image_size[1]} (width x height)"
    if "train" in decoded:
        (train_x, train_y), (test_x, test_y) = decoded["train"], decoded["test"]
    else:
        images, labels = decoded[None]
        train, test = stratified_split(labels, class_names, test_fraction, seed)
        train_x, train_y = images.take(train), labels[train]
        test_x, test_y = images.take(test), labels[test]
        description += (", no train/test split: every image a test image (test_fraction=1)" if test_fraction >= 1
                        else f", no train/test split: held out test_fraction={test_fraction} per class with "
                             f"seed={seed} (each class keeps at least one training image)")
    return Dataset(train_x, train_y, test_x, test_y, class_names, description, skipped)
