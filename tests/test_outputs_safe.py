"""Outputs never destroy what featmlp did not write (issue 15).

Every command that writes refuses an existing ``-o``/``--out`` without ``--force``; with it, only
an output of the same kind that featmlp wrote is replaced; an output inside its source (or holding
it, or the current directory) is refused; working directories are removed only when featmlp's.
Each refusal is one ``error:`` line, exit 1, no traceback, and the user's files byte for byte
as they were.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featmlp.errors import DataError


# ------------------------------------------------------------------------------------ helpers

def snapshot(root: Path) -> dict:
    """Every entry under ``root`` (itself included): bytes of files, targets of links, dirs."""
    root = Path(root)
    out = {}
    paths = [root, *root.rglob("*")] if root.is_dir() and not root.is_symlink() else [root]
    for p in paths:
        key = str(p.relative_to(root)) if p != root else "."
        if p.is_symlink():
            out[key] = ("link", os.readlink(p))
        elif p.is_dir():
            out[key] = ("dir",)
        elif p.exists():
            out[key] = ("file", p.read_bytes())
    return out


def make_photos(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / cls / f"{i:03d}.png")
    return root


def refused(result, *words):
    code, out, err = result
    assert code == 1, (code, out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    return err


def refused_somehow(result):
    """Refused, by featmlp's one line or by click's own check of the option (a usage error)."""
    code, out, err = result
    assert code in (1, 2), (code, out, err)
    assert "Traceback" not in err
    return err


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working directory with ``photos/`` (2 classes x 4 images) and ``mine/`` (a user's notes)."""
    monkeypatch.chdir(tmp_path)
    make_photos(tmp_path / "photos")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes\n")
    return tmp_path


EXTRACT = ["extract", "photos", "-q", "--test-fraction", "0.5"]


@pytest.fixture
def feats(place, run_cli):
    """A feature file featmlp wrote: ``f.npz``."""
    code, out, err = run_cli([*EXTRACT, "-o", "f.npz"])
    assert code == 0, err
    return place / "f.npz"


@pytest.fixture
def base_run(feats, run_cli):
    """A trained run: ``runs/base``."""
    code, out, err = run_cli(["train", feats, "--out", "runs/base", "--epochs", "1", "--hidden", "4", "-q"])
    assert code == 0, err
    return feats.parent / "runs" / "base"


# ------------------------------------------------------------------ extract into its own source

@pytest.mark.parametrize("out", ["photos", "photos/", "photos/feats.features", "photos/feats.npz",
                                 "photos/cat/000.png", "photos/cat", "."])
@pytest.mark.parametrize("force", [False, True])
def test_extract_into_its_source_is_refused(place, run_cli, out, force):
    before = snapshot(place)
    refused(run_cli([*EXTRACT, "-o", out, *(["--force"] if force else [])]))
    assert snapshot(place) == before


def test_extract_source_with_slash_into_itself(place, run_cli):
    before = snapshot(place)
    refused(run_cli(["extract", "photos/", "-o", "photos", "-q", "--force"]), "photos")
    assert snapshot(place) == before


def test_extract_output_holding_the_source_is_refused(place, run_cli):
    before = snapshot(place)
    refused(run_cli(["extract", "photos/cat", "-o", "photos", "-q", "--force"]), "holds the source")
    assert snapshot(place) == before


def test_extract_to_the_current_directory_is_refused(place, run_cli, monkeypatch):
    empty = place / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)  # even an empty one, even from the sample: never the current directory
    refused(run_cli(["extract", "-o", ".", "-q"]), "current directory")
    refused(run_cli(["extract", "-o", "./", "-q", "--force"]), "current directory")
    refused(run_cli(["extract", "-o", "..", "-q", "--force"]), "current directory")
    assert list(empty.iterdir()) == []


def test_extract_through_a_symlink_into_the_source_is_refused(place, run_cli):
    (place / "alias").symlink_to(place / "photos")
    before = snapshot(place / "photos")
    refused(run_cli([*EXTRACT, "-o", "alias/feats.features"]), "inside the source")
    refused(run_cli([*EXTRACT, "-o", "alias", "--force"]))
    assert snapshot(place / "photos") == before


# ------------------------------------------------------------- extract onto what is not a table

@pytest.mark.parametrize("force", [False, True])
def test_extract_onto_a_users_directory_is_refused(place, run_cli, force):
    before = snapshot(place / "mine")
    err = refused(run_cli([*EXTRACT, "-o", "mine", *(["--force"] if force else [])]), "mine",
                  "did not write")
    assert "notes.txt" in err
    assert snapshot(place / "mine") == before


def test_extract_onto_a_symlink_to_a_users_directory_is_refused(place, run_cli):
    (place / "link").symlink_to(place / "mine")
    before = snapshot(place)
    refused(run_cli([*EXTRACT, "-o", "link", "--force"]), "symbolic link")
    assert snapshot(place) == before


@pytest.mark.parametrize("name", ["mine/notes.txt", "mine/notes.features"])
def test_extract_onto_a_users_file_is_refused_even_with_force(place, run_cli, name):
    (place / "mine" / "notes.features").write_bytes(b"not a table")
    before = snapshot(place / "mine")
    refused(run_cli([*EXTRACT, "-o", name]))
    refused(run_cli([*EXTRACT, "-o", name, "--force"]), name, "did not write")
    assert snapshot(place / "mine") == before


def test_extract_onto_a_hand_made_npz_is_refused_even_with_force(place, run_cli):
    np.savez(place / "mine" / "data.npz", weights=np.arange(5))
    before = snapshot(place / "mine")
    refused(run_cli([*EXTRACT, "-o", "mine/data.npz", "--force"]), "did not write")
    assert snapshot(place / "mine") == before


def test_extract_onto_a_run_is_refused_even_with_force(base_run, run_cli):
    before = snapshot(base_run)
    for out in (base_run, base_run / "model.safetensors", base_run / "model.json"):
        refused(run_cli([*EXTRACT, "-o", out]))
        refused(run_cli([*EXTRACT, "-o", out, "--force"]))
    err = refused(run_cli([*EXTRACT, "-o", base_run, "--force"]), "run directory")
    assert "--force" in err and "never" in err
    assert snapshot(base_run) == before


def test_extract_into_a_run_or_a_table_is_refused(base_run, run_cli):
    place = base_run.parent.parent
    assert run_cli([*EXTRACT, "-o", "t.features"])[0] == 0
    assert run_cli(["run", "--data", "photos", "--test-fraction", "0.5", "--out", "runs/r1", "--epochs", "1",
                    "--hidden", "4", "-q"])[0] == 0
    before = snapshot(place / "runs"), snapshot(place / "t.features")
    for out in ("runs/r1/features.npz", "runs/base/new.npz", "runs/base/new.features", "t.features/x.npz"):
        refused(run_cli([*EXTRACT, "-o", out, "--force"]), "inside", "its own")
    assert (snapshot(place / "runs"), snapshot(place / "t.features")) == before


def test_extract_onto_a_special_file_or_broken_link_is_refused(place, run_cli):
    os.mkfifo(place / "fifo")
    (place / "dangling").symlink_to(place / "nowhere")
    refused(run_cli([*EXTRACT, "-o", "fifo", "--force"]), "special file")
    refused(run_cli([*EXTRACT, "-o", "dangling", "--force"]), "broken symbolic link")
    assert (place / "dangling").is_symlink() and not (place / "nowhere").exists()


# --------------------------------------------------------------- extract onto featmlp's own outputs

def test_extract_replaces_its_own_feature_file_only_with_force(feats, run_cli):
    before = feats.read_bytes()
    refused(run_cli([*EXTRACT, "-o", feats]), "already exists", "--force")
    assert feats.read_bytes() == before
    code, _, err = run_cli([*EXTRACT, "-o", feats, "--force", "--features", "color"])
    assert code == 0, err
    with np.load(feats) as z:
        assert json.loads(str(z["meta"]))["features"] == "color"


def test_extract_replaces_its_own_table_only_with_force(place, run_cli):
    assert run_cli([*EXTRACT, "-o", "t.features"])[0] == 0
    before = snapshot(place / "t.features")
    refused(run_cli([*EXTRACT, "-o", "t.features"]), "already exists", "--force")
    refused(run_cli([*EXTRACT, "-o", "t.features/"]), "already exists")
    assert snapshot(place / "t.features") == before
    code, _, err = run_cli([*EXTRACT, "-o", "t.features", "--force", "--features", "color"])
    assert code == 0, err
    manifest = json.loads((place / "t.features" / "manifest.json").read_text())
    assert manifest["meta"]["features"] == "color"
    assert not [p for p in place.iterdir() if p.name.startswith(".t.features")]


def test_extract_into_an_existing_empty_directory(place, run_cli):
    (place / "empty").mkdir()
    code, _, err = run_cli([*EXTRACT, "-o", "empty"])
    assert code == 0, err
    assert (place / "empty" / "manifest.json").is_file()


def test_extract_npz_then_table_of_other_kind_refused(place, run_cli, feats):
    # a feature file where a table goes, and a table where a feature file goes
    assert run_cli([*EXTRACT, "-o", "t.features"])[0] == 0
    before = snapshot(place)
    refused(run_cli([*EXTRACT, "-o", "f.npz/", "--force"]), "feature file")
    assert snapshot(place) == before


# ---------------------------------------------------------------------------- the library API

def test_library_extract_dataset_needs_overwrite(tmp_path, tiny_dataset):
    from featmlp.tables.extract import extract_dataset

    out = tmp_path / "f.npz"
    extract_dataset(tiny_dataset, "color", out)
    with pytest.raises(DataError, match="already exists"):
        extract_dataset(tiny_dataset, "color", out)
    extract_dataset(tiny_dataset, "lecture", out, overwrite=True)
    (tmp_path / "mine.txt").write_text("mine")
    with pytest.raises(DataError, match="did not write"):
        extract_dataset(tiny_dataset, "color", tmp_path / "mine.txt", overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "mine"


def test_library_extract_to_shards_needs_overwrite(tmp_path, tiny_dataset):
    from featmlp.tables.extract import extract_to_shards

    out = tmp_path / "t.features"
    extract_to_shards(tiny_dataset, "color", out)
    with pytest.raises(DataError, match="already exists"):
        extract_to_shards(tiny_dataset, "color", out)
    extract_to_shards(tiny_dataset, "color", out, overwrite=True)
    mine = make_photos(tmp_path / "photos")
    before = snapshot(mine)
    with pytest.raises(DataError, match="did not write"):
        extract_to_shards(tiny_dataset, "color", mine, overwrite=True)
    assert snapshot(mine) == before


def test_library_save_sharded_and_save_features_refuse_a_users_files(tmp_path, tiny_dataset):
    from featmlp.tables.extract import extract_dataset
    from featmlp.tables.store import save_features, save_sharded

    table = extract_dataset(tiny_dataset, "color")
    mine = make_photos(tmp_path / "photos")
    before = snapshot(mine)
    with pytest.raises(DataError):
        save_sharded(mine, table, overwrite=True)
    with pytest.raises(DataError):
        save_features(mine / "cat" / "000.png", table, overwrite=True)
    assert snapshot(mine) == before
    save_sharded(tmp_path / "t.features", table)
    save_sharded(tmp_path / "t.features", table, overwrite=True)
    with pytest.raises(DataError, match="already exists"):
        save_sharded(tmp_path / "t.features", table)


# ------------------------------------------------------------------------------- working dirs

def test_a_users_directory_where_the_npz_work_goes_is_kept(place, run_cli):
    work = place / "f.npz.partial"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    before = snapshot(work)
    refused(run_cli([*EXTRACT, "-o", "f.npz"]), "f.npz.partial", "in the way")
    assert snapshot(work) == before
    assert not (place / "f.npz").exists()


def test_a_users_directory_with_a_spec_json_where_the_npz_work_goes_is_kept(place, run_cli):
    # a spec.json among files an extraction never writes (even named like its chunks) is not featmlp's
    work = place / "f.npz.partial"
    work.mkdir()
    (work / "spec.json").write_text("{}")
    (work / "train-000000000.npy").write_bytes(b"x")
    (work / "notes.md").write_text("mine")
    before = snapshot(work)
    refused(run_cli([*EXTRACT, "-o", "f.npz"]), "in the way")
    assert snapshot(work) == before


def test_a_users_file_where_the_npz_work_goes_is_kept(place, run_cli):
    (place / "f.npz.partial").write_text("mine")
    refused(run_cli([*EXTRACT, "-o", "f.npz"]), "in the way")
    assert (place / "f.npz.partial").read_text() == "mine"


def test_a_users_directory_where_the_table_work_goes_is_kept(place, run_cli):
    work = place / ".t.features.partial"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    before = snapshot(work)
    refused(run_cli([*EXTRACT, "-o", "t.features"]), "in the way")
    assert snapshot(work) == before


def test_a_users_directory_where_the_old_table_goes_aside_is_kept(place, run_cli):
    assert run_cli([*EXTRACT, "-o", "t.features"])[0] == 0
    aside = place / ".t.features.old"
    aside.mkdir()
    (aside / "keep.txt").write_text("mine")
    before = snapshot(aside)
    refused(run_cli([*EXTRACT, "-o", "t.features", "--force"]), "in the way")
    assert snapshot(aside) == before
    assert (place / "t.features" / "manifest.json").is_file()


def test_an_interrupted_extraction_still_resumes(place, run_cli, monkeypatch):
    # featmlp's own work directory, left by a killed run of another extraction, is featmlp's to remove
    import featmlp.tables.extract as extraction

    calls = []
    real = extraction.save_features

    def killed(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(extraction, "save_features", killed)
    assert run_cli([*EXTRACT, "-o", "f.npz"])[0] == 130
    assert (place / "f.npz.partial" / "spec.json").is_file() and calls
    monkeypatch.setattr(extraction, "save_features", real)
    code, _, err = run_cli([*EXTRACT, "-o", "f.npz", "--features", "color"])  # another spec: made anew
    assert code == 0, err
    assert not (place / "f.npz.partial").exists()


def test_a_users_directory_where_the_run_is_staged_is_kept(feats, run_cli):
    staging = feats.parent / "runs" / ".r.incomplete"
    staging.mkdir(parents=True)
    (staging / "keep.txt").write_text("mine")
    before = snapshot(staging)
    refused(run_cli(["train", feats, "--out", "runs/r", "--epochs", "1", "-q"]), "in the way")
    assert snapshot(staging) == before


def test_a_users_directory_where_the_old_run_goes_aside_is_kept(base_run, feats, run_cli):
    aside = base_run.parent / ".base.replaced"
    aside.mkdir()
    (aside / "keep.txt").write_text("mine")
    before = snapshot(aside)
    refused(run_cli(["train", feats, "--out", base_run, "--force", "--epochs", "1", "-q"]), "in the way")
    assert snapshot(aside) == before


# --------------------------------------------------------------------- run, train, lecture, sweep

@pytest.mark.parametrize("command", [["train", "f.npz"], ["run", "--data", "photos"],
                                     ["lecture", "--data", "photos"]])
def test_run_commands_refuse_a_users_directory_even_with_force(feats, run_cli, command):
    before = snapshot(feats.parent / "mine")
    refused(run_cli([*command, "--out", "mine", "--force", "--epochs", "1", "-q"]), "mine", "did not write")
    refused_somehow(run_cli([*command, "--out", "mine/notes.txt", "--force", "--epochs", "1", "-q"]))
    assert snapshot(feats.parent / "mine") == before


def test_train_refuses_a_table_or_a_sweep_as_its_run(place, feats, run_cli):
    assert run_cli([*EXTRACT, "-o", "t.features"])[0] == 0
    before = snapshot(place / "t.features")
    refused(run_cli(["train", feats, "--out", "t.features", "--force", "--epochs", "1", "-q"]),
            "sharded feature table")
    assert snapshot(place / "t.features") == before


def test_train_replaces_its_own_run_only_with_force(base_run, feats, run_cli):
    before = snapshot(base_run)
    refused(run_cli(["train", feats, "--out", base_run, "--epochs", "1", "-q"]), "already exists", "--force")
    assert snapshot(base_run) == before
    code, _, err = run_cli(["train", feats, "--out", base_run, "--force", "--epochs", "2", "-q"])
    assert code == 0, err
    assert json.loads((base_run / "config.json").read_text())["train"]["epochs"] == 2


def test_run_into_its_image_source_is_refused(place, run_cli):
    before = snapshot(place)
    refused(run_cli(["run", "--data", "photos", "--out", "photos/run", "--epochs", "1", "-q"]), "inside the source")
    refused(run_cli(["run", "--data", "photos/cat", "--out", "photos", "--force", "--epochs", "1", "-q"]),
            "holds the source")
    assert snapshot(place) == before


def test_train_into_its_own_table_is_refused(place, run_cli):
    # a run inside the sharded table it trains on (retraining a run on its own features.npz with
    # --force is allowed: the features are carried into the new run, tests/runs/test_run.py)
    assert run_cli([*EXTRACT, "-o", "t.features"])[0] == 0
    before = snapshot(place / "t.features")
    refused(run_cli(["train", "t.features", "--out", "t.features/run", "--epochs", "1", "-q"]), "inside the source")
    assert snapshot(place / "t.features") == before


def test_library_run_job_refuses_its_source(place):
    from featmlp.runs.job import run_job
    from featmlp.training import TrainConfig

    before = snapshot(place)
    with pytest.raises(DataError, match="inside the source"):
        run_job("photos", "color", place / "photos" / "run", config=TrainConfig(epochs=1), overwrite=True)
    assert snapshot(place) == before


def test_sweep_refuses_a_users_directory_and_a_run_even_with_force(base_run, feats, run_cli):
    place = feats.parent
    before = snapshot(place / "mine"), snapshot(base_run)
    args = ["sweep", feats, "--lr", "0.1,1", "--epochs", "1", "--hidden", "4", "-q", "--force"]
    refused(run_cli([*args, "--out", "mine"]), "did not write")
    refused(run_cli([*args, "--out", base_run]), "run directory")
    assert (snapshot(place / "mine"), snapshot(base_run)) == before


def test_sweep_with_force_keeps_a_users_directory_named_as_a_configuration(feats, run_cli):
    # a sweep directory of featmlp's, where someone put a folder named as one of the configurations
    args = ["sweep", feats, "--lr", "0.1,1", "--epochs", "1", "--hidden", "4", "-q", "--out", "s"]
    assert run_cli(args)[0] == 0
    name = json.loads((feats.parent / "s" / "progress.json").read_text())["configs"][0]["name"]
    victim = feats.parent / "s" / name
    import shutil

    shutil.rmtree(victim)
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    refused(run_cli([*args[:3], "0.1,2", *args[4:], "--force"]), "did not write")
    assert (victim / "keep.txt").read_text() == "mine"


def test_sweep_names_agree_with_the_sweep_modules():
    from featmlp._outputs import SWEEP_FILES
    from featmlp.runs.layout import PROGRESS_FILE, SWEEP_FILE

    assert set(SWEEP_FILES) == {SWEEP_FILE, PROGRESS_FILE}


# ------------------------------------------------------------------------- plots and reports

@pytest.mark.parametrize("command", [["lr-find", "f.npz", "--steps", "5"], ["compare", "runs/base"]])
def test_plots_refuse_a_users_file_even_with_force(base_run, run_cli, command):
    place = base_run.parent.parent
    np.save(place / "mine" / "data.npy", np.arange(3))
    Image.new("RGB", (4, 4)).save(place / "mine" / "photo.png")
    before = snapshot(place)
    for name in ("mine/notes.txt", "mine/photo.png", "photos/cat/000.png"):
        refused(run_cli([*command, "--plot", name, "--force"]), name, "did not write")
    refused_somehow(run_cli([*command, "--plot", "mine", "--force"]))
    assert snapshot(place) == before


@pytest.mark.parametrize("command", [["lr-find", "f.npz", "--steps", "5"], ["compare", "runs/base"]])
def test_plots_replace_their_own_only_with_force(base_run, run_cli, command):
    place = base_run.parent.parent
    code, _, err = run_cli([*command, "--plot", "p.png"])
    assert code == 0, err
    before = (place / "p.png").read_bytes()
    refused(run_cli([*command, "--plot", "p.png"]), "already exists", "--force")
    assert (place / "p.png").read_bytes() == before
    assert run_cli([*command, "--plot", "p.png", "--force"])[0] == 0
    code, _, err = run_cli([*command, "--out", "mine"])  # a folder to draw in: added to, nothing replaced
    assert code == 0, err
    assert (place / "mine" / "notes.txt").read_text() == "my notes\n"


def test_report_out_on_a_read_only_run(base_run, run_cli, monkeypatch):
    import featmlp._io as io_

    real = io_.atomic_write
    run_real = os.path.realpath(base_run)

    def read_only(path, mode="wb"):
        if os.path.realpath(path).startswith(run_real + os.sep):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, mode)

    import featmlp.runs.report as report

    monkeypatch.setattr(report, "atomic_write", read_only)
    before = snapshot(base_run)
    refused(run_cli(["report", base_run]), "--out")
    elsewhere = base_run.parent.parent / "reports"
    code, out, err = run_cli(["report", base_run, "--out", elsewhere / "base.html"])
    assert code == 0, err
    assert "Written by featmlp" in (elsewhere / "base.html").read_text()
    code, out, err = run_cli(["report", base_run, "-o", elsewhere])  # an existing folder: report.html in it
    assert code == 0, err
    assert (elsewhere / "report.html").is_file()
    refused(run_cli(["report", base_run, "-o", elsewhere / "base.html"]), "already exists", "--force")
    assert run_cli(["report", base_run, "-o", elsewhere / "base.html", "--force"])[0] == 0
    assert snapshot(base_run) == before


def test_report_out_refuses_a_users_file(base_run, run_cli):
    place = base_run.parent.parent
    before = snapshot(place / "mine")
    refused(run_cli(["report", base_run, "--out", "mine/notes.txt", "--force"]), "did not write")
    assert snapshot(place / "mine") == before
    # the run's own report.html is featmlp's to rewrite; a file of that name it did not write is not
    (base_run / "report.html").write_text("my own page")
    refused(run_cli(["report", base_run]), "did not write")
    assert (base_run / "report.html").read_text() == "my own page"


# ----------------------------------------------------------------- messages never suggest harm

def test_a_run_given_as_a_table_is_named_and_not_overwritten(base_run, run_cli):
    for command in (["train", base_run, "--epochs", "1", "-q"], ["sweep", base_run, "--lr", "1", "-q"],
                    ["lr-find", base_run, "-q"], ["evaluate", base_run, base_run]):
        err = refused(run_cli(command), "run directory", f"featmlp evaluate {base_run}")
        assert "extract" not in err and " -o " not in err and "--out" not in err


def test_a_users_directory_given_as_a_table_is_not_suggested_as_output(place, run_cli):
    err = refused(run_cli(["train", "mine", "--epochs", "1", "-q"]), "mine", "manifest.json")
    assert "-o mine" not in err


def test_every_writing_command_has_force():
    from click.testing import CliRunner

    from featmlp.cli import cli

    for command in ("extract", "run", "lecture", "train", "sweep", "lr-find", "compare", "report"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert "--force" in result.output, command
