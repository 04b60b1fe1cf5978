"""Tar shards (the WebDataset layout): a folder or URL prefix of ``*.tar`` files of labelled members.

``ROOT/shard-000.tar, ROOT/shard-001.tar, ...`` (or the same in ``ROOT/train/`` and
``ROOT/test/`` for a split), each member named ``<key>.<class>.<ext>`` (``000123.cat.jpg``)
or ``<class>/<file>`` (``cat/000123.jpg``). Shards are listed from their tar headers only;
images keep the order of the shards (by name) and of their members, so a chunk of
consecutive images is a sequential read of one shard.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ._archive import FileStore, list_tar
from ._images import TextNames, is_junk

SHARDS_HELP = ("tar shards are ROOT/*.tar, or ROOT/train/*.tar + ROOT/test/*.tar, each member named "
               "<key>.<class>.<ext> (000123.cat.jpg) or <class>/<file> (cat/000123.jpg)")
_SPLITS = ("train", "test")


def shard_layout(names: list[tuple[str, ...]], where: str) -> dict | None:
    """``{split: [index into names]}`` when every file is a ``.tar`` in ROOT or ROOT/train|test; else None.

    The split key is None without train/ and test/. Shards come in the order of their names.
    """
    if not names or not all(parts[-1].lower().endswith(".tar") for parts in names):
        return None
    depths = {len(parts) for parts in names}
    order = sorted(range(len(names)), key=lambda i: names[i])
    if depths == {1}:
        return {None: order}
    if depths == {2} and all(parts[0] in _SPLITS for parts in names):
        layout = {s: [i for i in order if names[i][0] == s] for s in _SPLITS}
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


def list_local_shard(path: Path, shown: str, *, max_file_bytes: int) -> list:
    """The members of a tar shard on disk from its headers: ``(name parts, Region)``."""
    try:
        st = path.stat()
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read tar shard {shown}: {e.strerror or e}") from None
    with f:
        return list_tar(f, st.st_size, shown, FileStore(path), TextNames(shown), is_junk=is_junk,
                        max_file_bytes=max_file_bytes, listed=repr((st.st_size, st.st_mtime_ns)).encode())


def shard_splits(listed: dict, where: str, *, skip_bad: bool = False):
    """Labelled images of listed shards: ``({split: [(name, blob, label)]}, class names, skipped)``.

    ``listed`` is ``{split: [(shard name, [(member parts, blob)])]}``; an image is named
    ``<shard>:<member>``. Class names are sorted, taken from the training shards when split.
    A member whose name holds no class is an error, or (``skip_bad``) left out and listed.
    """
    named: dict = {}
    skipped = []
    for split, shards in listed.items():
        rows = named.setdefault(split, [])
        for shard, members in shards:
            for parts, blob in members:
                name = f"{shard}:{'/'.join(parts)}"
                cls = member_class(parts)
                if cls is None:
                    if skip_bad:
                        skipped.append((name, "no class in its name"))
                        continue
                    raise DataError(f"{where}: cannot tell the class of {name}; {SHARDS_HELP}")
                rows.append((name, blob, cls))
    classes = sorted({cls for _, _, cls in named["train" if "train" in named else None]})
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no images"
        raise DataError(f"{where}: found {found} in the tar shards; a classifier needs at least two "
                        f"classes. {SHARDS_HELP}")
    if "test" in named:
        extra = sorted({cls for _, _, cls in named["test"]} - set(classes))
        if extra:
            raise DataError(f"{where}: the test shards have classes that the train shards lack: {extra}")
    label = {c: k for k, c in enumerate(classes)}
    splits = {split: [(name, blob, label[cls]) for name, blob, cls in rows] for split, rows in named.items()}
    return splits, tuple(classes), tuple(skipped)
