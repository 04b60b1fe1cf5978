"""What the commands that do not train leave unimported: torch, numba's kernels, matplotlib.

Each check runs the command in a fresh interpreter (the test process has imported everything
already) and reads ``sys.modules`` there after the command ran. How long it takes is measured by
benchmarks/bench_startup.py, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from featmlp.cli import COMMANDS, cli

HEAVY = ("torch", "numba", "matplotlib", "sklearn")

# Runs the featmlp command given as arguments, then prints which HEAVY modules it imported.
_PROBE = """
import json, sys
from featmlp.cli import main
code = None
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
sys.stdout.flush()
print("\\nPROBE " + json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def _loaded_by(args, cwd) -> list[str]:
    """The HEAVY modules a fresh ``featmlp ARGS`` imported (the command must succeed)."""
    r = subprocess.run([sys.executable, "-c", _PROBE, *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, timeout=120)
    probe = json.loads(r.stdout.rsplit("PROBE ", 1)[-1])
    assert probe["code"] in (0, None), r.stdout + r.stderr
    return probe["loaded"]


def _loaded_after(code: str, cwd) -> list[str]:
    """The HEAVY modules a fresh interpreter imported running ``code``."""
    report = f"\nimport json, sys; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    r = subprocess.run([sys.executable, "-c", code + report], capture_output=True, text=True, cwd=cwd,
                       timeout=120, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the command list

def test_listed_short_help_is_each_commands_own():
    # COMMANDS repeats each command's short help so --help need not import it: the real one decides.
    for name, (_, short) in COMMANDS.items():
        real = cli.get_command(None, name)
        assert real.get_short_help_str(10**6) == short, f"COMMANDS[{name!r}]: update its short help"
        for limit in (20, 45, 80):
            assert click.Command(name, help=short).get_short_help_str(limit) == real.get_short_help_str(limit)


class _InOrder(click.Group):
    def list_commands(self, ctx):
        return list(self.commands)


def test_help_lists_what_click_would_list_with_the_commands_loaded():
    reference = _InOrder("featmlp", help=cli.help, params=cli.params,
                            context_settings=cli.context_settings,
                            commands=[cli.get_command(None, name) for name in COMMANDS])
    lazy = CliRunner().invoke(cli, ["--help"], prog_name="featmlp")
    assert lazy.exit_code == 0
    assert lazy.output == CliRunner().invoke(reference, ["--help"], prog_name="featmlp").output
    assert all(f"  {name} " in lazy.output for name in COMMANDS)


def test_commands_still_run_and_show_their_help():
    for name in COMMANDS:
        r = CliRunner().invoke(cli, [name, "--help"], prog_name="featmlp")
        assert r.exit_code == 0 and f"Usage: featmlp {name}" in r.output


def test_fitted_set_options_are_the_transformers_own():
    # The registry lists KMeansFeatures' settings so that --help need not import it (sklearn, numba).
    from featmlp.features import FEATURE_SETS, KMeansFeatures, feature_options

    assert feature_options("kmeans") == KMeansFeatures().get_params()
    assert list(feature_options("kmeans+color")) == list(KMeansFeatures().get_params())
    assert all(fset.options == () for fset in FEATURE_SETS.values() if fset.fitted is None)


# ---------------------------------------------------------------------------- what is imported

def test_help_imports_nothing_heavy(tmp_path):
    assert _loaded_by(["--help"], tmp_path) == []
    assert _loaded_by(["--version"], tmp_path) == []
    assert _loaded_by(["extract", "--help"], tmp_path) == []
    assert _loaded_by(["compare", "--help"], tmp_path) == []


@pytest.mark.parametrize("command", ["train", "run", "lecture", "sweep", "lr-find", "evaluate", "predict"])
def test_training_commands_help_imports_no_torch(tmp_path, command):
    # Their options come from the torch-free featmlp.training.config (PRESETS and the constraint table).
    assert "torch" not in _loaded_by([command, "--help"], tmp_path)


def test_feature_registry_loads_kernels_only_when_computing(tmp_path):
    names = ("from featmlp.features import FEATURE_SETS, feature_names, get_feature_set\n"
             "assert len(get_feature_set('lecture+hog+color').names) == 355\n"
             "assert len(feature_names('hog', image_shape=(64, 48))) == 1260\n")
    assert _loaded_after(names, tmp_path) == []
    assert _loaded_after("import featmlp; featmlp.FEATURE_SETS", tmp_path) == []
    compute = ("import numpy as np; from featmlp.features import extract_features\n"
               "assert extract_features(np.zeros((2, 32, 32, 3), np.uint8), 'lecture+hog+color').shape == (2, 355)")
    assert _loaded_after(compute, tmp_path) == ["numba"]


def test_extract_imports_no_torch(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    loaded = _loaded_by(["extract", tmp_path / "imgs", "--features", "lecture+color", "-o", tmp_path / "f.npz",
                         "--test-fraction", "0.5", "-q"], tmp_path)
    assert (tmp_path / "f.npz").is_file()
    assert loaded == ["numba"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished run directories (train_run on a small random table), differing in lr."""
    from featmlp.runs import train_run
    from featmlp.tables.store import FeatureTable
    from featmlp.training import TrainConfig

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), np.arange(60) % 3
    table = FeatureTable(X[:40], y[:40], X[40:], y[40:], ("a", "b", "c", "d"), ("x", "y", "z"),
                         {"features": "lecture"})
    root = tmp_path_factory.mktemp("runs")
    return [train_run(table, TrainConfig(hidden=(4,), epochs=2, lr=lr), root / f"lr{lr}").out for lr in (1e-3, 1e-2)]


def test_report_of_a_run_imports_no_torch(two_runs, tmp_path):
    # the run's own plots are embedded as they are: nothing is drawn, so no matplotlib either
    assert _loaded_by(["report", two_runs[0]], tmp_path) == []
    assert (two_runs[0] / "report.html").is_file()


def test_compare_imports_no_torch(two_runs, tmp_path):
    loaded = _loaded_by(["compare", *two_runs], tmp_path)
    assert "torch" not in loaded and "numba" not in loaded
    assert loaded == ["matplotlib"]  # it draws the loss curves


def test_dir_lists_the_public_names_without_importing_them(tmp_path):
    code = ("import featmlp, featmlp.training, featmlp.runs, featmlp.model, featmlp.tables, featmlp.features\n"
            "names = {m.__name__: (dir(m), m.__all__) for m in (featmlp, featmlp.training, featmlp.runs, "
            "featmlp.model, featmlp.tables, featmlp.features)}\n"
            "print(json.dumps(names))")
    r = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120, check=True)
    names = json.loads(r.stdout)
    for module, (listed, public) in names.items():
        assert listed == sorted(public), module  # dir() is __all__, sorted
    assert "FeatMLPClassifier" in names["featmlp"][0] and "__version__" in names["featmlp"][0]
    assert _loaded_after("import featmlp; dir(featmlp)", tmp_path) == []
