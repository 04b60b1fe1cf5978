"""Tar shards (the WebDataset layout): a folder or URL prefix of ``*.tar`` files of labelled members.

``ROOT/shard-000.tar, ROOT/shard-001.tar, ...`` (or the same in ``ROOT/train/`` and
``ROOT/test/`` for a split), each member named ``<key>.<class>.<ext>`` (``000123.cat.jpg``)
or ``<class>/<file>`` (``cat/000123.jpg``). Shards are listed from their tar headers only;
images keep the order of the shards (by name) and of their members, so a chunk of
consecutive images is a sequential read of one shard.
"""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._archive import FileStore, TarMembers, list_tar
from ._manifest import ManifestBuilder
from ._names import TextNames, is_junk

SHARDS_HELP = ("tar shards are ROOT/*.tar, or ROOT/train/*.tar + ROOT/test/*.tar, each member named "
               "<key>.<class>.<ext> (000123.cat.jpg) or <class>/<file> (cat/000123.jpg)")
_SPLITS = ("train", "test")


def shard_layout(names, where: str) -> dict | None:
    """``{split: [index into names]}`` when every file is a ``.tar`` in ROOT or ROOT/train|test; else None.

    ``names`` are the files' relative paths (``"train/shard-000.tar"``), read until the first
    that is not a tar. The split key is None without train/ and test/. Shards come in the
    order of their names.
    """
    parts_of = []
    for name in names:
        if not name.lower().endswith(".tar"):
            return None
        parts_of.append(tuple(name.split("/")))
    if not parts_of:
        return None
    depths = {len(parts) for parts in parts_of}
    order = sorted(range(len(parts_of)), key=lambda i: parts_of[i])
    if depths == {1}:
        return {None: order}
    if depths == {2} and all(parts[0] in _SPLITS for parts in parts_of):
        layout = {s: [i for i in order if parts_of[i][0] == s] for s in _SPLITS}
        missing = [s for s in _SPLITS if not layout[s]]
        if missing:
            raise DataError(f"{where} has tar shards in {[s for s in _SPLITS if s not in missing][0]}/ but "
                            f"none in {missing[0]}/; {SHARDS_HELP}")
        return layout
    return None


def member_class(parts: tuple[str, ...]) -> str | None:
    """The class of a shard member: its folder, else the middle of ``<key>.<class>.<ext>``.

    Examples
    --------
    >>> member_class(("000123.cat.jpg",)), member_class(("cat", "000123.jpg")), member_class(("1.jpg",))
    ('cat', 'cat', None)
    """
    if len(parts) >= 2:
        return parts[-2]
    name = parts[-1]
    first, last = name.find("."), name.rfind(".")
    return name[first + 1:last] or None if 0 < first < last else None


def list_local_shard(path: Path, name: str, shown: str, *, max_file_bytes: int):
    """A tar shard on disk: ``(container, members)``, its members listed from its headers as they are iterated.

    Its images are named ``<name>:<member>``; messages name it ``shown``. ``members`` yields
    what :func:`~featmlp.data._archive.list_tar` does.
    """
    return TarMembers(FileStore(path), f"{shown}:", f"{name}:"), _members(path, shown, max_file_bytes)


def _members(path: Path, shown: str, max_file_bytes: int):
    try:
        st = path.stat()
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read tar shard {shown}: {e.strerror or e}") from None
    with f:
        yield from list_tar(f, st.st_size, shown, TextNames(shown), is_junk=is_junk,
                            max_file_bytes=max_file_bytes, listed=repr((st.st_size, st.st_mtime_ns)).encode())


def shard_splits(listed: dict, where: str, *, skip_bad: bool = False):
    """Labelled images of tar shards: ``({split: (files, labels, digests)}, class names, skipped)``.

    ``listed`` is ``{split: [(container, members)]}`` as :func:`list_local_shard` gives them
    (members are listed here, shard after shard, and packed as they come: a Manifest ``files``
    and the SHA-256 ``digests`` of their listing); an image is named ``<shard>:<member>``.
    Class names are sorted, taken from the training shards when split. A member whose name
    holds no class is an error, or (``skip_bad``) left out and listed.
    """
    ids: dict[str, int] = {}  # class -> its number, in the order found
    built, skipped = {}, []
    for split, shards in listed.items():
        files, classes, digests = ManifestBuilder(), array("i"), bytearray()
        for container, members in shards:
            c = files.add(container)
            for parts, offset, size, digest in members:
                key = "/".join(parts)
                cls = member_class(parts)
                if cls is None:
                    name = container.name_prefix + key
                    if skip_bad:
                        skipped.append((name, "no class in its name"))
                        continue
                    raise DataError(f"{where}: cannot tell the class of {name}; {SHARDS_HELP}")
                files.append(c, key, offset, size)
                classes.append(ids.setdefault(cls, len(ids)))
                digests += digest
        built[split] = (files.build(), np.array(classes, np.intp),
                        np.frombuffer(digests, np.uint8).reshape(-1, 32))
    names = list(ids)
    present = {split: {names[k] for k in np.unique(found).tolist()} for split, (_, found, _) in built.items()}
    classes = sorted(present["train" if "train" in present else None])
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no images"
        raise DataError(f"{where}: found {found} in the tar shards; a classifier needs at least two "
                        f"classes. {SHARDS_HELP}")
    if "test" in present:
        extra = sorted(present["test"] - set(classes))
        if extra:
            raise DataError(f"{where}: the test shards have classes that the train shards lack: {extra}")
    label = {c: k for k, c in enumerate(classes)}
    label_of = np.array([label.get(c, -1) for c in names], np.int64)
    splits = {split: (files, label_of[found], digests) for split, (files, found, digests) in built.items()}
    return splits, tuple(classes), tuple(skipped)
