"""Edge cases of the command line: each one line, a non-zero exit, no traceback, nothing written.

Seeds beyond what the generators take, boolean flags in a sweep, a full disk, control
characters in names, FEATMLP_NUM_THREADS, and their neighbours.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import make_classification

from featmlp.tables.store import FeatureTable, save_features

HUGE = "99999999999999999999"


@pytest.fixture
def feats(tmp_path):
    X, y = make_classification(120, 9, n_informative=6, n_classes=3, random_state=0)
    return save_features(tmp_path / "f.npz", FeatureTable(X[:90], y[:90], X[90:], y[90:],
                                                          tuple(f"f{i}" for i in range(9)), ("a", "b", "c"),
                                                          {"features": "lecture"}))


def make_folder(root, classes=("cats", "dogs"), per_class=5, names=None):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            name = names[i] if names else f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / cls / name, format="PNG")
    return root


def assert_refused(code, out, err, *messages):
    """A non-zero exit with one error line naming ``messages``, and no traceback."""
    assert code not in (0, None), (out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.lower().startswith("error")]
    assert len(lines) == 1, err
    for message in messages:
        assert message in lines[0], err


def nothing_in(path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


# -- seeds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "sweep", "lr-find", "run", "lecture"])
@pytest.mark.parametrize("seed", [HUGE, str(2**32)])
def test_a_seed_out_of_range_is_a_usage_error(tmp_path, run_cli, feats, command, seed):
    out = tmp_path / "out"
    source = ["--data", tmp_path / "none"] if command in ("run", "lecture") else [feats]
    code, stdout, err = run_cli([command, *source, "--seed", seed, "--out", out])
    assert_refused(code, stdout, err, "--seed", seed)
    assert code == 2 and nothing_in(out)
    assert not list(tmp_path.glob(".out*"))  # no staging directory either


@pytest.mark.parametrize("command", ["extract", "run"])
@pytest.mark.parametrize("seed", [HUGE, "-1"])
def test_a_split_seed_out_of_range_is_a_usage_error(tmp_path, run_cli, command, seed):
    make_folder(tmp_path / "imgs")
    out = tmp_path / ("out.npz" if command == "extract" else "out")
    where = ["-o", out] if command == "extract" else ["--data", tmp_path / "imgs", "--out", out]
    args = [command, *([tmp_path / "imgs"] if command == "extract" else []), *where, "--split-seed", seed]
    code, stdout, err = run_cli(args)
    assert_refused(code, stdout, err, "--split-seed", seed)
    assert nothing_in(out) and not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".out*"))


def test_the_largest_seed_trains(tmp_path, run_cli, feats):
    # the validation split (scikit-learn) takes seeds up to 2**32 - 1 too
    code, _, err = run_cli(["train", feats, "--seed", str(2**32 - 1), "--val-fraction", "0.2", "--epochs", "1",
                            "-q", "--out", tmp_path / "run"])
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["seed"] == 2**32 - 1


def test_the_api_refuses_seeds_out_of_range():
    from featmlp.errors import ConfigError
    from featmlp.estimator import FeatMLPClassifier
    from featmlp.training import TrainConfig

    for seed in (2**32, int(HUGE), -1):
        with pytest.raises(ConfigError, match=rf"^seed must be an integer in \[0, 4294967295\], got {seed}$"):
            TrainConfig(seed=seed).validate()
        with pytest.raises(ConfigError, match=rf"^random_state must be .*an integer in \[0, 4294967295\], "
                                              rf"got {seed}$"):
            FeatMLPClassifier(random_state=seed).fit(np.zeros((6, 2)), [0, 1] * 3)
    TrainConfig(seed=2**32 - 1).validate()
    FeatMLPClassifier(random_state=np.random.RandomState(0), epochs=1)._config()


# -- boolean flags in a sweep -------------------------------------------------------------------


@pytest.mark.parametrize("flag, field, value", [
    ("--batch-norm", "batch_norm", True),
    ("--no-batch-norm", "batch_norm", False),
    ("--no-flip", "flip", False),
    ("--no-test-flip", "test_flip", False),
])
def test_a_flag_in_a_sweep_sets_it_for_every_configuration(tmp_path, run_cli, feats, flag, field, value):
    out = tmp_path / "sweep"
    code, stdout, err = run_cli(["sweep", feats, flag, "--lr", "0.01,0.1", "--epochs", "2", "-q", "--out", out])
    assert code == 0, err
    configs = [json.loads(p.read_text())["train"] for p in sorted(out.glob("*/config.json"))]
    assert len(configs) == 2
    assert all(c[field] is value for c in configs)


def test_sweep_flip_flags_on_features_with_a_mirror(tmp_path, run_cli):
    # --flip and --test-flip need a feature set whose mirror image is a column permutation (color)
    from featmlp.data import Dataset
    from featmlp.tables.extract import extract_dataset

    rng = np.random.default_rng(0)
    ds = Dataset(rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), np.arange(40) % 2,
                 rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), np.arange(10) % 2, ("a", "b"), "test")
    feats = tmp_path / "color.npz"
    extract_dataset(ds, "color", feats)
    out = tmp_path / "sweep"
    code, _, err = run_cli(["sweep", feats, "--flip", "--test-flip", "--lr", "0.01,0.1", "--epochs", "1", "-q",
                            "--out", out])
    assert code == 0, err
    configs = [json.loads(p.read_text())["train"] for p in sorted(out.glob("*/config.json"))]
    assert len(configs) == 2 and all(c["flip"] and c["test_flip"] for c in configs)


# -- a full disk --------------------------------------------------------------------------------

SHORT_WRITE = "1775000 requested and 593392 written"  # numpy's tofile on a full disk: no errno


def test_a_short_write_is_the_full_disk_line(tmp_path, run_cli, monkeypatch):
    import numpy.lib.format as npformat

    def short_write(fp, array, *args, **kwargs):
        fp.write(b"\x93NUMPY half")
        raise OSError(SHORT_WRITE)

    make_folder(tmp_path / "imgs")
    monkeypatch.setattr(npformat, "write_array", short_write)
    for output in ("f.npz", "f.features"):
        code, out, err = run_cli(["extract", tmp_path / "imgs", "-o", tmp_path / output, "-q"])
        assert_refused(code, out, err, "the disk is full", "593392 of 1775000 bytes")
        assert "requested and" not in err
        assert not (tmp_path / output).exists()
        assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_os_error_lines():
    import errno

    from featmlp.cli import os_error_line

    assert os_error_line(OSError(SHORT_WRITE)).startswith(
        "a write stopped after 593392 of 1775000 bytes: the disk is full; nothing half-written was kept")
    assert "the disk is full" in os_error_line(OSError(errno.ENOSPC, "No space left on device", "x.npz"))
    assert "file-size limit" in os_error_line(OSError(errno.EFBIG, "File too large"))
    assert os_error_line(OSError("something else")) == "something else"


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs POSIX resource limits")
@pytest.mark.parametrize("limit, args", [
    # 2,000 bytes: the first 5 x 355 float32 chunk stops short inside numpy's tofile (errno None)
    (2000, ["extract", "IMGS", "--features", "lecture+hog+color", "-o", "OUT/f.npz", "-q"]),
    (2000, ["extract", "IMGS", "--features", "lecture+hog+color", "-o", "OUT/f.features", "-q"]),
    (20000, ["run", "--data", "IMGS", "--epochs", "1", "-q", "--out", "OUT/run"]),
    # 100,000 bytes: the features, JSON files and plots fit, the 1 MB model.safetensors does not
    (100000, ["run", "--data", "IMGS", "--hidden", "512,512", "--epochs", "1", "-q", "--out", "OUT/run"]),
])
def test_a_real_short_write(tmp_path, limit, args):
    """Under a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) writes really stop short."""
    import resource
    import signal
    import subprocess
    import sys

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    make_folder(tmp_path / "imgs")
    (tmp_path / "out").mkdir()
    args = [str(a).replace("IMGS", str(tmp_path / "imgs")).replace("OUT", str(tmp_path / "out")) for a in args]
    r = subprocess.run([sys.executable, "-m", "featmlp.cli", *args], capture_output=True, text=True,
                       preexec_fn=limited, cwd=tmp_path, timeout=300)
    assert_refused(r.returncode, r.stdout, r.stderr, "nothing half-written was kept")
    assert "requested and" not in r.stderr
    left = [p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    # what an interrupted extraction keeps to resume from: whole chunks only
    assert all(".partial" in str(p) for p in left), left
    for p in left:
        if p.suffix == ".npy":
            np.load(tmp_path / "out" / p)
        assert not p.name.endswith(".part")


# -- FEATMLP_NUM_THREADS ------------------------------------------------------------------------


def test_threads_beyond_the_machine_are_refused(monkeypatch):
    from featmlp.errors import ConfigError
    from featmlp.training.threads import MAX_THREADS_PER_CORE, THREADS_ENV, machine_cores, threads_override

    limit = MAX_THREADS_PER_CORE * machine_cores()
    monkeypatch.setenv(THREADS_ENV, str(limit))
    assert threads_override() == limit
    for bad in (str(limit + 1), "100000", HUGE):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ConfigError, match=rf"^{THREADS_ENV}='{bad}' is more threads than this machine can use: "
                                              rf".*set it to at most {limit}"):
            threads_override()


@pytest.mark.parametrize("value", ["100000", str(2**31)])
@pytest.mark.parametrize("command", ["train", "run"])
def test_featmlp_num_threads_is_one_line(tmp_path, feats, value, command):
    # in a subprocess: before the check, 100,000 OpenMP threads crashed the interpreter (libgomp)
    import os
    import subprocess
    import sys

    make_folder(tmp_path / "imgs")
    source = [str(feats)] if command == "train" else ["--data", str(tmp_path / "imgs")]
    r = subprocess.run([sys.executable, "-m", "featmlp.cli", command, *source, "--epochs", "1", "-q",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "FEATMLP_NUM_THREADS": value}, timeout=300)
    assert_refused(r.returncode, r.stdout, r.stderr, "FEATMLP_NUM_THREADS", "more threads than this machine can use")
    assert r.returncode == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


# -- control characters in names ----------------------------------------------------------------

# What would act on a terminal: CSI and OSC escape sequences, BEL, a C1 CSI, a bidi override.
RAW = ("\x1b", "\x07", "\x9b", "\u202e")
CLASSES = ("cat\x1b[31m", "dog\u202e\x07")
FILES = ("0\x1b[2J.png", "1\x9b2J.png", "2\t\n.png", "3.png", "4.png")
BAD = "bad\x1b]0;title\x07.txt"


@pytest.fixture
def terminal(monkeypatch):
    """click writes escape sequences as it would to a terminal (it strips CSI ones from a pipe)."""
    import click.utils

    monkeypatch.setattr(click.utils, "should_strip_ansi", lambda *args, **kwargs: False)


def no_raw(*texts):
    for text in texts:
        assert not [c for c in RAW if c in text], text


def test_names_with_control_characters_reach_no_terminal_raw(tmp_path, run_cli, terminal):
    imgs = make_folder(tmp_path / "imgs", classes=CLASSES, names=FILES)
    (imgs / CLASSES[0] / BAD).write_text("not an image")
    feats, run = tmp_path / "f.npz", tmp_path / "run"

    code, out, err = run_cli(["extract", imgs, "-o", feats, "-q"])  # the bad file: an error naming it
    assert_refused(code, out, err, "bad\\x1b]0;title\\x07.txt")
    no_raw(out, err)

    code, out, err = run_cli(["extract", imgs, "-o", feats, "-q", "--skip-bad", "--test-fraction", "0.4"])
    assert code == 0, err
    assert "bad\\x1b]0;title\\x07.txt" in err  # the skipped list
    no_raw(out, err)
    with np.load(feats) as z:  # the file keeps the real names
        assert tuple(z["class_names"]) == CLASSES

    code, out, err = run_cli(["train", feats, "--epochs", "2", "--out", run])
    assert code == 0, err
    no_raw(out, err)
    assert json.loads((run / "metrics.json").read_text())["per_class"][0]["class"] == CLASSES[0]

    code, out, err = run_cli(["evaluate", run])
    assert code == 0, err
    assert "cat\\x1b[31m" in out and "dog\\u202e\\x07" in out
    no_raw(out, err)
    code, out, err = run_cli(["evaluate", run, "--json"])
    assert code == 0 and json.loads(out)["per_class"][0]["class"] == CLASSES[0]
    no_raw(out, err)

    images = [imgs / CLASSES[0] / name for name in FILES[:3]] + [imgs / CLASSES[0] / BAD, tmp_path / "gone\x1b[1m.png"]
    code, out, err = run_cli(["predict", run, *images])
    assert code == 1
    no_raw(out, err)
    lines = out.splitlines()
    assert len(lines) == 3 and all(line.count("\t") == 2 for line in lines)  # one line of three fields each
    assert lines[0].startswith(str(imgs).replace("\\", "\\\\") + "/cat\\x1b[31m/0\\x1b[2J.png\t")
    assert lines[2].split("\t")[0].endswith("/2\\t\\n.png")
    assert lines[0].split("\t")[1] in ("cat\\x1b[31m", "dog\\u202e\\x07")
    assert len(err.splitlines()) == 2 and "gone\\x1b[1m.png" in err

    code, out, err = run_cli(["run", "--data", imgs, "--skip-bad", "--epochs", "1", "--out", tmp_path / "run2"])
    assert code == 0, err
    no_raw(out, err)

    named = tmp_path / "run\x1b[1m$x^$"
    run.rename(named)
    code, out, err = run_cli(["compare", named, tmp_path / "run2", "--plot", tmp_path / "c.png"])
    assert code == 0, err
    assert "run\\x1b[1m$x^$" in out
    no_raw(out, err)


def test_errors_quoting_names_are_escaped(tmp_path, run_cli, terminal):
    for args in (["train", tmp_path / "no\x1b[2Jsuch.npz"],
                 ["extract", tmp_path / "no\x07such", "-o", tmp_path / "f.npz"],
                 ["evaluate", tmp_path / "no\u202esuch"],
                 ["train", tmp_path / "f.npz", "--activation", "\x1b[31mrelu"]):
        code, out, err = run_cli(args)
        assert code != 0 and "Traceback" not in err
        no_raw(out, err)
        assert "\\x1b" in err or "\\x07" in err or "\\u202e" in err, err


def test_warnings_of_other_libraries_are_escaped():
    import warnings

    from featmlp._text import printable_warnings

    with printable_warnings():
        text = warnings.formatwarning("Glyph 27 (\x1b) missing", UserWarning, "plots.py", 64, "fig.savefig(x)")
    assert "\x1b" not in text and "Glyph 27 (\\x1b) missing" in text
    assert text.count("\n") == 2  # still its own lines


def test_plots_draw_names_mathtext_would_refuse(tmp_path):
    # a class named "$x^$" made the confusion plot (after training) fail in matplotlib's mathtext
    from featmlp.runs.plots import plot_confusion

    assert plot_confusion([[1, 0], [0, 1]], ["$x^$", "$\\frac{$\x1b"], tmp_path / "c.png").exists()


@pytest.mark.parametrize("text, shown", [
    ("cat\x1b[31m", "cat\\x1b[31m"), ("a\tb\nc\rd", "a\\tb\\nc\\rd"), ("\x7f\x9b\x00", "\\x7f\\x9b\\x00"),
    ("\u202eevil\u2066", "\\u202eevil\\u2066"), ("caf\xe9 \u732b", "caf\xe9 \u732b"), ("a\\b", "a\\b"),
    ("\udcff.png", "\\xff.png"),
])
def test_printable(text, shown):
    from featmlp._text import printable

    assert printable(text) == shown
    assert printable(text, tsv=True) == shown.replace("a\\b", "a\\\\b")


# -- neighbours: numbers that are not numbers ---------------------------------------------------


@pytest.mark.parametrize("args", [
    ["train", "FEATS", "--lr", "nan"],
    ["train", "FEATS", "--lr", "inf"],
    ["train", "FEATS", "--dropout", "nan"],
    ["train", "FEATS", "--momentum", "nan"],
    ["train", "FEATS", "--weight-decay", "inf"],
    ["train", "FEATS", "--label-smoothing", "nan"],
    ["sweep", "FEATS", "--lr", "0.1,nan"],
    ["run", "--data", "IMGS", "--lr", "nan"],
    ["lr-find", "FEATS", "--start-lr", "nan"],
    ["lr-find", "FEATS", "--end-lr", "inf"],
    ["lr-find", "FEATS", "--smoothing", "nan"],
])
def test_nan_and_infinity_are_usage_errors(tmp_path, run_cli, feats, args):
    """Refused as the option's usage error, before any feature file or image is read."""
    make_folder(tmp_path / "imgs")
    out = tmp_path / "out"
    args = [{"FEATS": feats, "IMGS": tmp_path / "imgs"}.get(a, a) for a in args]
    code, stdout, err = run_cli([*args, "--out", out])
    assert_refused(code, stdout, err, f"Invalid value for '{args[-2]}'", "is not a finite number")
    assert code == 2 and stdout == ""
    assert nothing_in(out) and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("n_patches", [HUGE, "1000000000000"])
def test_kmeans_patches_beyond_memory_are_one_line(tmp_path, run_cli, n_patches):
    # numpy refused to draw 1e20 patch positions with a traceback; 1e12 patches would not fit either
    make_folder(tmp_path / "imgs")
    out = tmp_path / "f.npz"
    code, stdout, err = run_cli(["extract", tmp_path / "imgs", "--features", "kmeans", "--feature-option",
                                 f"n_patches={n_patches}", "-o", out, "-q"])
    assert_refused(code, stdout, err, "fitting kmeans features on", "n_patches=N")
    assert code == 1 and not out.exists()


def test_a_run_trained_with_a_seed_above_the_bound_still_loads(tmp_path, run_cli, feats):
    # before seeds were bounded, torch took seeds up to 2**64 - 1 when no validation split was drawn
    run = tmp_path / "run"
    assert run_cli(["train", feats, "--epochs", "1", "-q", "--out", run])[0] == 0
    for name in ("model.json", "config.json"):
        meta = json.loads((run / name).read_text())
        (meta["extra"] if name == "model.json" else meta)["train"]["seed"] = 2**40
        (run / name).write_text(json.dumps(meta))
    code, out, err = run_cli(["evaluate", run])
    assert code == 0, err


def test_featmlp_alone_still_shows_its_help_on_lines(run_cli):
    # click's message for no command is the help: escaping is per line, its lines stay lines
    code, out, err = run_cli([])
    assert "\\n" not in out + err and "Commands:" in (out + err).splitlines()


@pytest.mark.parametrize("command", ["extract", "predict"])
def test_an_unknown_jpeg_decoder_is_one_line(tmp_path, run_cli, feats, monkeypatch, command):
    # FEATMLP_JPEG_DECODER=pilow (a typo) silently decoded with simplejpeg
    imgs = make_folder(tmp_path / "imgs")
    run = tmp_path / "run"
    if command == "predict":
        assert run_cli(["train", feats, "--epochs", "1", "-q", "--out", run])[0] == 0
    monkeypatch.setenv("FEATMLP_JPEG_DECODER", "pilow")
    out = tmp_path / "extracted.npz"
    args = (["extract", imgs, "-o", out, "-q"] if command == "extract"
            else ["predict", run, *sorted((imgs / "cats").iterdir())])
    code, stdout, err = run_cli(args)
    assert_refused(code, stdout, err, "FEATMLP_JPEG_DECODER='pilow' is not one of: pillow")
    assert stdout == "" and not out.exists()
    monkeypatch.setenv("FEATMLP_JPEG_DECODER", " Pillow ")
    assert run_cli(["extract", imgs, "-o", out, "-q"])[0] == 0
