"""What featmlp may write over: the one rule every command's output goes through.

Every command that writes (``extract``, ``run``, ``lecture``, ``train``, ``sweep``,
``lr-find``, ``compare``, ``report``, ``predict -o``) and the library functions behind them call
:func:`check_output` before anything is read or written:

* a path that does not exist, or an empty directory where a directory goes, is written;
* an existing output of the same kind that featmlp wrote (a feature file, a sharded table,
  a run, a sweep, a plot, a report: :func:`identify` reads its manifest or mark) is replaced
  only with ``--force`` (``overwrite=True``), and only once the new one is complete;
* anything else (a folder of photos, a run where a table goes, a user's file, a special
  file, a broken link) is refused, ``--force`` or not;
* an output inside the source it is made from, or holding that source (or the current
  directory), is refused.

The working directories featmlp builds beside an output (``.NAME.partial``,
``.NAME.incomplete``, ``.NAME.old`` ...) are removed only when recognisably featmlp's
(:func:`remove_work_dir`).

Only the file system and the standard library: no numpy, no torch (``compare`` and
``report`` start at once).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

from featmlp._io import sibling
from featmlp.errors import DataError
from featmlp.runs.layout import (CONFIG_FILE, CONFUSION_PLOT, EVALUATION_FILE, FEATURE_STATE_FILE, FEATURES_FILE,
                                 FEATURES_PARTIAL, LOSS_PLOT, META_FILE, METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE,
                                 SWEEP_FILES, TENSORBOARD_DIR, THUMBNAILS_FILE, WEIGHTS_FILE)
from featmlp.tables.format import (FORMAT, MANIFEST, REQUIRED_KEYS,  # noqa: F401 (SPEC_FILE: an output it knows)
                                   SPEC_FILE)

# Kinds of output, and how a message names one.
KINDS = {
    "features": "a featmlp feature file",
    "table": "a featmlp sharded feature table",
    "run": "a featmlp run directory",
    "sweep": "a featmlp sweep directory",
    "plot": "a plot featmlp drew",
    "report": "a featmlp report",
    "predictions": "a featmlp predictions file",
    "evaluation": "a featmlp evaluation directory",
}
DIR_KINDS = ("table", "run", "sweep", "evaluation")

# What marks a working directory featmlp made (save_sharded's), written first when it is made;
# the others are known by their contents: an extraction's by its spec, a run's staging by its files.
WORK_MARK = ".featmlp-work"
# featmlp._io.atomic_write's temporary files: ".<name>.<8 random characters>.part".
_PART = re.compile(r"^\..+\.[a-z0-9_]{8}\.part$")
# The last line of a report (featmlp.runs.report._page).
REPORT_MARK = b"<p class=\"muted\">Written by featmlp "


def _is_featmlp_json(path: Path, key: str, value=None) -> bool:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(obj, dict) and key in obj and (value is None or obj[key] == value)


def _is_table(d: Path) -> bool:
    return _is_featmlp_json(d / MANIFEST, "format", FORMAT)


def _is_run(d: Path) -> bool:
    return (d / CONFIG_FILE).is_file() and ((d / META_FILE).is_file() or (d / METRICS_FILE).is_file())


def _is_evaluation(d: Path) -> bool:
    return _is_featmlp_json(d / EVALUATION_FILE, "evaluated_run")


def _is_run_staging(d: Path, entries) -> bool:
    """Every entry is one a run directory being built holds (featmlp.runs.layout's names)."""
    names = {CONFIG_FILE, METRICS_FILE, LOSS_PLOT, CONFUSION_PLOT, FEATURES_FILE, FEATURES_PARTIAL,
             TENSORBOARD_DIR, WEIGHTS_FILE, META_FILE, FEATURE_STATE_FILE, REPORT_FILE, PREDICTIONS_FILE,
             THUMBNAILS_FILE, EVALUATION_FILE}
    return all(e in names or _PART.match(e) for e in entries)


def _is_sweep(d: Path) -> bool:
    return any((d / name).is_file() for name in SWEEP_FILES)


def _is_feature_file(p: Path) -> bool:
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return all(f"{k}.npy" in names for k in (*REQUIRED_KEYS, "meta"))


def _ends(p: Path, size: int = 1 << 16) -> bytes:
    try:
        with open(p, "rb") as f:
            head = f.read(size)
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(len(head), end - size))
            return head + f.read(size)
    except OSError:
        return b""


def _is_plot(p: Path) -> bool:
    # matplotlib marks every format it writes: PNG's Software, SVG's comment, PDF's Creator.
    return b"matplotlib" in _ends(p).lower()


def _is_report(p: Path) -> bool:
    return REPORT_MARK in _ends(p, 4096)


# What `featmlp predict -o` writes (featmlp.cli.inference): a CSV whose header starts so, JSON
# lines of objects whose keys start so, or TSV lines of a name and (class, probability) pairs.
# The columns of a run's predictions.csv (featmlp.runs.predictions) but the true class, so that one
# reader serves both.
PREDICTIONS_HEADER = ("name", "predicted_class", "probability")
_TSV_PREDICTION = re.compile(r"^[^\t]*(\t[^\t]*\t[01]\.\d{4})+$")


def _is_predictions(p: Path) -> bool:
    """A predictions file `featmlp predict -o` wrote, by its first 64 KiB (whole lines only)."""
    head = _ends(p, 1 << 16)[:1 << 16].decode("utf-8", "replace")
    lines = head.split("\n")[:-1] if "\n" in head else []
    if not lines:
        return False
    if lines[0].startswith(",".join(PREDICTIONS_HEADER)):
        return True
    try:
        first = json.loads(lines[0])
    except ValueError:
        first = None
    if isinstance(first, dict):
        return tuple(first)[:3] == PREDICTIONS_HEADER
    return all(_TSV_PREDICTION.match(line) for line in lines)


def identify(path: str | os.PathLike) -> tuple[str | None, str]:
    """``(kind, description)`` of what is at ``path``: kind one of :data:`KINDS`, ``"empty"``
    (an empty directory), ``"absent"``, or None (something featmlp did not write).

    Examples
    --------
    >>> import tempfile
    >>> identify(tempfile.mkdtemp())
    ('empty', 'an empty directory')
    """
    p = Path(path)
    link = f"a symbolic link to {os.path.realpath(p)}, " if p.is_symlink() else ""
    if not os.path.lexists(p):
        return "absent", "absent"
    if p.is_dir():
        try:
            entries = sorted(e.name for e in os.scandir(p))
        except OSError as e:
            return None, f"{link}a directory featmlp cannot read ({e.strerror or e})"
        if not entries:
            return "empty", f"{link}an empty directory"
        for kind, test in (("table", _is_table), ("sweep", _is_sweep), ("run", _is_run),
                           ("evaluation", _is_evaluation)):
            if test(p):
                return kind, link + KINDS[kind]
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        return None, (f"{link}a directory featmlp did not write ({len(entries)} entr"
                      f"{'y' if len(entries) == 1 else 'ies'}: {shown})")
    if p.is_file():
        for kind, test in (("features", _is_feature_file), ("report", _is_report), ("plot", _is_plot),
                           ("predictions", _is_predictions)):
            if test(p):
                return kind, link + KINDS[kind]
        return None, f"{link}a file featmlp did not write"
    if p.is_symlink():
        return None, f"a broken symbolic link (to {os.readlink(p)})"
    return None, f"{link}a special file (a device, FIFO or socket)"


def local_sources(*sources) -> list[str]:
    """The sources that are paths on this machine (not ``None``, ``sample``, ``cifar10`` or a URL)."""
    out = []
    for s in sources:
        if s is None:
            continue
        s = os.fspath(s)
        if s in ("", "sample", "cifar10") or "://" in s:
            continue
        if os.path.lexists(s):
            out.append(s)
    return out


def _within(inner: str, outer: str) -> bool:
    """Whether the resolved path ``inner`` is ``outer`` or below it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def check_output(path: str | os.PathLike, kind: str, *, force: bool = False, sources=(), carried=(),
                 option: str = "--out") -> None:
    """Raise :class:`DataError` (one line) unless an output of ``kind`` may be written at ``path``.

    Parameters
    ----------
    path : path
        Where the output goes.
    kind : str
        What is written: a key of :data:`KINDS`.
    force : bool
        Replace an existing output of the same kind (``--force``, ``overwrite=True``).
    sources : iterable of path
        What the output is made from: the output may be neither inside one nor hold one
        (those that are not local paths are skipped, see :func:`local_sources`).
    carried : iterable of path
        Sources the writer carries into the new output itself (``train DIR/features.npz --out DIR
        --force`` links the features into the new run): the output may hold them, not lie inside.
    option : str
        The option that named ``path``, for the message.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> check_output(d / "new.features", "table")
    >>> (d / "notes.txt").write_text("mine")
    4
    >>> check_output(d / "notes.txt", "features", force=True)
    Traceback (most recent call last):
    ...
    featmlp.errors.DataError: ... is a file featmlp did not write, not a featmlp feature file: ...
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind of output {kind!r}")
    shown = os.fspath(path)
    real = os.path.realpath(path)
    cwd = os.path.realpath(os.getcwd())
    if _within(cwd, real):
        what = "the current directory" if real == cwd else "a directory holding the current directory"
        raise DataError(f"{option} {shown} is {what}: featmlp never writes over it; give a new name "
                        f"({'such as feats.features/' if kind == 'table' else 'such as runs/NAME'})")
    check_sources(path, sources, option=option)
    check_sources(path, carried, option=option, may_hold=True)
    if kind in ("features", "table"):  # a run's or a table's files are theirs: never one written among them
        parent = Path(real).parent
        inside, _ = identify(parent)
        if inside in ("run", "table"):
            raise DataError(f"{option} {shown} is inside {KINDS[inside]} ({parent}), whose files are its own: "
                            f"write the features elsewhere")
    found, what = identify(path)
    if found == "absent" or (found == "empty" and kind in DIR_KINDS):
        return
    if found == kind:
        if force:
            return
        raise DataError(f"{shown} already exists ({what}): pass --force (overwrite=True) to replace it once "
                        f"the new one is complete, or choose another {option}")
    raise DataError(f"{shown} is {what}, not {KINDS[kind]}: featmlp never replaces it, even with --force; "
                    f"choose another {option}")


def not_a_table(path: str | os.PathLike) -> str:
    """Why the directory ``path``, given as a feature table, is none, and what to give instead
    (never a command that would write over it)."""
    kind, what = identify(path)
    if kind == "run":
        own = Path(path) / FEATURES_FILE
        features = f", or train on its features ({own})" if own.is_file() else ""
        return (f"{path} is {what}, not a feature table: evaluate its model with `featmlp evaluate {path}`"
                f"{features}")
    if kind == "sweep":
        return f"{path} is {what}, not a feature table: give the feature file it was trained on"
    return (f"{path} is {what}, not a sharded feature table (it has no manifest.json): give a feature file "
            f"(.npz) or a table that `featmlp extract SOURCE -o NEW.features/` wrote")


def check_sources(path: str | os.PathLike, sources, *, option: str = "--out", may_hold: bool = False) -> None:
    """Raise :class:`DataError` when ``path`` is inside one of ``sources`` or (unless ``may_hold``)
    holds one (resolved paths, symbolic links followed; sources that are not local paths are skipped)."""
    shown, real = os.fspath(path), os.path.realpath(path)
    for source in local_sources(*sources):
        src = os.path.realpath(source)
        if _within(real, src):
            where = "is the source" if real == src else f"is inside the source {source}"
            raise DataError(f"{option} {shown} {where}: featmlp never writes into what it reads; "
                            f"choose a place outside {source}")
        if _within(src, real) and not may_hold:
            raise DataError(f"{option} {shown} holds the source {source}: featmlp never writes over what "
                            f"it reads; choose another {option}")


def is_work_dir(path: str | os.PathLike) -> bool:
    """Whether the directory ``path`` is recognisably one featmlp works in: empty, marked
    (:data:`WORK_MARK`), an extraction's (its spec), a finished table, or a run (being built:
    only the files a run holds)."""
    p = Path(path)
    if p.is_symlink() or not p.is_dir():
        return False
    try:
        entries = [e.name for e in os.scandir(p)]
    except OSError:
        return False
    return (not entries or (p / WORK_MARK).is_file() or _is_featmlp_json(p / SPEC_FILE, "chunk_size")
            or _is_extraction_work(entries) or _is_table(p) or _is_run(p) or _is_run_staging(p, entries)
            or _is_evaluation(p))


# An extraction's chunk files (featmlp.tables.extract: "<split>-<start:09d>.npy") and fitted state.
_CHUNK = re.compile(r"^(train|test)-\d{9}\.npy$")


def _is_extraction_work(entries) -> bool:
    """Every entry is one an interrupted extraction leaves (its spec, even damaged, its chunks, its
    fitted state, atomic_write's temporary files), and one of them is its spec."""
    return SPEC_FILE in entries and all(
        e in (SPEC_FILE, "fitted.npz") or _CHUNK.match(e) or _PART.match(e) for e in entries)


def check_work_dir(path: str | os.PathLike) -> None:
    """Raise :class:`DataError` when something featmlp did not make is where it keeps a working directory."""
    if not os.path.lexists(path) or is_work_dir(path):
        return
    _, what = identify(path)
    raise DataError(f"{path} is in the way: featmlp keeps its unfinished work there, and it is {what}, "
                    f"not one featmlp left; move it elsewhere (featmlp removes only what it wrote)")


def remove_work_dir(path: str | os.PathLike) -> None:
    """Remove a working directory featmlp left at ``path`` (nothing when absent); refuse one it
    did not make (:func:`check_work_dir`)."""
    check_work_dir(path)
    if os.path.lexists(path):
        shutil.rmtree(path)


def mark_work_dir(path: str | os.PathLike) -> Path:
    """Make the working directory ``path`` (when absent) and mark it featmlp's."""
    p = Path(path)
    check_work_dir(p)
    p.mkdir(parents=True, exist_ok=True)
    (p / WORK_MARK).touch()
    return p


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename the finished directory ``src`` onto ``dst``, replacing what is there only now.

    An existing ``dst`` is first renamed aside (``.NAME.old``) and deleted after ``src`` took
    its place, so at every moment ``dst`` is either the old directory or the new one (an
    interruption between the two renames leaves the old one aside, where the next call
    removes it, when it is recognisably featmlp's: see :func:`remove_work_dir`).
    Whether ``dst`` may be replaced is the caller's to check (:func:`check_output`).
    """
    src, dst = Path(os.path.abspath(src)), Path(os.path.abspath(dst))
    aside = sibling(dst, "old")
    remove_work_dir(aside)
    if dst.is_dir() and not dst.is_symlink():
        os.replace(dst, aside)
    elif dst.exists() or dst.is_symlink():
        dst.unlink()
    os.replace(src, dst)
    shutil.rmtree(aside, ignore_errors=True)
