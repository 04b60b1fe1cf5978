"""A sweep directory that keeps its work: each finished configuration is saved at once, recorded
in ``progress.json``, and read back when the same sweep runs again into the same directory.

``progress.json`` names the data (a fingerprint of the table), every configuration (name and
settings, in order) and those finished. A configuration is recorded only after its run
directory is complete (config, metrics, model bundle, plots; built beside and renamed in, as
:class:`featmlp.runs.directory.RunDirectory` does), so a kill at any moment leaves it either recorded and
whole, or unrecorded and trained again.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from featmlp import __version__
from featmlp._outputs import check_output, remove_work_dir
from featmlp.errors import ConfigError, FeatmlpError
from featmlp.runs.bundle import load_bundle
from featmlp.runs.directory import RunDirectory, staging_dir
from featmlp.runs.layout import CONFIG_FILE, METRICS_FILE, PROGRESS_FILE, SUMMARY_FILES, read_json, write_json
from featmlp.runs.results import write_config, write_results
from featmlp.tables.store import FeatureTable, table_fingerprint
from featmlp.training import TrainConfig, TrainResult

# featmlp._io.atomic_write's temporary files: ".<name>.<8 random characters>.part".
_PART = re.compile(r"^\..+\.[a-z0-9_]{8}\.part$")
_NAME = re.compile(r"[A-Za-z0-9._+-]+")


class SweepDirectory:
    """The files of one sweep in ``out``: checks on opening, saves as configurations finish.

    Parameters
    ----------
    out : Path
        The sweep directory (created).
    table, configs, names
        The sweep's data and configurations.
    force : bool
        Start over in a directory holding another featmlp sweep instead of refusing; a
        directory that is not a featmlp sweep (nor empty) is refused even so
        (:func:`featmlp._outputs.check_output`).
    """

    def __init__(self, out: Path, table: FeatureTable, configs: Sequence[TrainConfig],
                 names: Sequence[str], *, force: bool = False):
        self.out, self.table, self.names = out, table, list(names)
        self.configs = list(configs)
        self.fingerprint = table_fingerprint(table)
        self.record = {
            "featmlp_version": __version__,
            "data": self.fingerprint,
            "configs": [{"name": n, "train": c.to_dict()} for n, c in zip(names, configs)],
            "finished": [],
        }
        old = self._read_record()
        same = old is not None and {k: old.get(k) for k in ("data", "configs")} == \
            {k: self.record[k] for k in ("data", "configs")}
        if not same:
            if not force:
                self._refuse(old)
            # Anything but a featmlp sweep (or an empty directory) is refused, --force or not.
            check_output(out, "sweep", force=force)
        out.mkdir(parents=True, exist_ok=True)
        if not same:
            self._clear(old)
        self._remove_parts()
        self.finished = [n for n in (old or {}).get("finished", []) if same and n in self.names]
        self._write_record()  # from now on the directory is this sweep's, even if killed at once

    def resume(self) -> dict[int, tuple[TrainResult, dict]]:
        """The finished configurations read back: index -> (TrainResult, metrics).

        One whose files cannot be read (deleted, damaged) is dropped from the record and
        trains again.
        """
        found = {}
        for i, name in enumerate(self.names):
            if name not in self.finished:
                continue
            try:
                found[i] = self._read_run(i)
            except (FeatmlpError, KeyError, TypeError, ValueError):
                self.finished.remove(name)
        return found

    def save(self, i: int, result: TrainResult, *, log_scale: bool = False) -> dict:
        """Write configuration ``i``'s run directory (its plots: :func:`._output.write_sweep`), then record
        it finished.

        Returns its metrics (those written to ``metrics.json``).
        """
        # Replaces what an interrupted attempt left; "sweep" is relative to the run (".."),
        # so a copied sweep directory stays whole.
        with RunDirectory(self.out / self.names[i], overwrite=True) as rd:
            write_config(rd.path, self.table, self.configs[i], {"sweep": "..", "name": self.names[i]},
                         fingerprint=self.fingerprint)
            # Its plots are drawn with the others' at the end, on all cores (_output.write_sweep draws
            # every missing one): drawn here, one after another, they took ~3/4 of the lecture's sweep.
            written = write_results(rd.path, self.table, result, log_scale=log_scale, plots=False)
        if self.names[i] not in self.finished:
            self.finished.append(self.names[i])
        self._write_record()
        return written.metrics

    # ----------------------------------------------------------------------------------------

    def _read_record(self) -> dict | None:
        path = self.out / PROGRESS_FILE
        if not path.is_file():
            return None
        try:
            record = read_json(path)
        except FeatmlpError:
            return {}
        return record if isinstance(record, dict) else {}

    def _write_record(self) -> None:
        write_json(self.out / PROGRESS_FILE, {**self.record, "finished": list(self.finished)})

    def _refuse(self, old: dict | None) -> None:
        if old == {}:
            what = f"an unreadable {PROGRESS_FILE}"
        elif old is not None:
            what = ("a sweep of other data" if old.get("data") != self.record["data"]
                    else "a sweep of other configurations")
        else:
            return  # nothing of a sweep's: check_output says what is there
        raise ConfigError(f"{self.out} holds {what}: choose another --out (out=) to keep it, or "
                          f"pass --force (force=True) to replace it; rerunning the very same sweep "
                          f"there resumes it")

    def _clear(self, old: dict | None) -> None:
        """Remove what a replaced sweep left: its record first, then its summary and the run
        directories of configurations the new sweep does not have (those it has are rewritten)."""
        (self.out / PROGRESS_FILE).unlink(missing_ok=True)
        for name in SUMMARY_FILES:
            if old is not None:
                (self.out / name).unlink(missing_ok=True)
        keep = set(self.names)
        for entry in (old or {}).get("configs", []):
            name = entry.get("name") if isinstance(entry, dict) else None
            # Only a plain name, as config_names makes them: never a path leading elsewhere.
            if not isinstance(name, str) or name in keep or name in (".", "..") \
                    or not _NAME.fullmatch(name):
                continue
            if (self.out / name / CONFIG_FILE).is_file():
                shutil.rmtree(self.out / name)
            remove_work_dir(staging_dir(self.out / name))

    def _remove_parts(self) -> None:
        """A kill while a file was being written leaves its temporary file beside it."""
        for folder in [self.out, *(self.out / n for n in self.names)]:
            if folder.is_dir():
                for p in folder.iterdir():
                    if _PART.match(p.name) and p.is_file():
                        p.unlink(missing_ok=True)

    def _read_run(self, i: int) -> tuple[TrainResult, dict]:
        run_dir, config = self.out / self.names[i], self.configs[i]
        if read_json(run_dir / CONFIG_FILE)["train"] != config.to_dict():
            raise ValueError("another configuration")
        metrics = read_json(run_dir / METRICS_FILE)
        bundle = load_bundle(run_dir)
        mirror = self.table.mirror() if config.flip or config.test_flip else None
        result = TrainResult(bundle.model, bundle.scaler, bundle.spec, config,
                             history=list(metrics["history"]), diverged=bool(metrics["diverged"]),
                             stop_reason=str(metrics["stop_reason"]), best_epoch=metrics["best_epoch"],
                             device=str(metrics.get("device", "cpu")),
                             mirror=None if mirror is None else mirror.astype(np.int64))
        return result, metrics
