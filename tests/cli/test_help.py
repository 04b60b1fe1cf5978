"""What --help tells: each training option's default read from the presets, and no option a
command would ignore."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner
from sklearn.datasets import make_classification

from featmlp.cli.experiments import lr_find, sweep
from featmlp.cli.training import lecture, run, train
from featmlp.errors import ConfigError
from featmlp.tables.store import FeatureTable, save_features
from featmlp.training import PRESETS, TrainConfig

COMMANDS = {"train": train, "run": run, "lecture": lecture, "sweep": sweep, "lr-find": lr_find}
NOT_OPTIONS = {"lecture_batch_size"}  # the notebook's gradient scale: Python API only
LR_FIND_IGNORES = ["--lr", "--epochs", "--max-steps", "--schedule", "--patience", "--flip", "--no-flip", "--test-flip",
                   "--no-test-flip", "--log-scale", "--tensorboard"]


def help_lines(command) -> dict[str, str]:
    """Option declarations -> that option's help, as --help shows them (click's help records)."""
    # wide enough that no line is wrapped (wrapping may break "--no-flip" at its hyphens)
    result = CliRunner().invoke(command, ["--help"], terminal_width=10_000, max_content_width=10_000)
    assert result.exit_code == 0, result.output
    ctx = command.make_context(command.name or "command", [], resilient_parsing=True)
    records = (p.get_help_record(ctx) for p in command.get_params(ctx))
    lines = {decl.split(" ")[0] if "/" not in decl else decl: text for decl, text in filter(None, records)}
    shown = " ".join(result.output.split())
    for text in lines.values():
        assert " ".join(text.split()) in shown  # what --help printed
    return lines


def typed(field: str, value) -> str:
    """A preset's value as typed on the command line (written here independently of the CLI)."""
    if field in ("batch_norm", "flip", "test_flip"):
        return ("--" if value else "--no-") + field.replace("_", "-")
    if field == "hidden":
        return ",".join(str(v) for v in value)
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def starting_presets(name: str) -> dict:
    """The presets as command ``name`` starts from them (issue 18): train, run, sweep and lr-find hold
    out 10 % for validation except with the lecture's preset; lecture offers the presets without flips."""
    if name == "lecture":
        return {k: c for k, c in PRESETS.items() if not (c.flip or c.test_flip)}
    return {k: c if k == "lecture" else dataclasses.replace(c, val_fraction=0.1) for k, c in PRESETS.items()}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_training_option_states_the_presets_values(name):
    base = "lecture" if name == "lecture" else "default"
    presets = starting_presets(name)
    lines = help_lines(COMMANDS[name])
    offered = 0
    for field in (f.name for f in dataclasses.fields(TrainConfig)):
        flag = "--" + field.replace("_", "-")
        decl = next((d for d in lines if d == flag or d.startswith(flag + " /")), None)
        if decl is None:
            assert field in NOT_OPTIONS or (name == "lr-find" and flag in LR_FIND_IGNORES) or (
                name == "lecture" and field in ("flip", "test_flip")), (name, field)
            continue
        offered += 1
        value = getattr(presets[base], field)
        text = lines[decl]
        assert f"[default: {typed(field, value)} (preset '{base}')" in text, (name, field, text)
        for other, config in presets.items():
            if other != base and getattr(config, field) != value:
                assert f"{other} {typed(field, getattr(config, field))}" in text, (name, field, other, text)
        if all(getattr(c, field) == value for c in presets.values()):
            assert "the same in every preset" in text
    assert offered >= 15


def _all_commands():
    from featmlp.cli import COMMANDS, cli

    return {name: cli.get_command(None, name) for name in COMMANDS}


@pytest.mark.parametrize("name", sorted(_all_commands()))
def test_every_default_is_shown_one_way(name):
    # click's "[default: X]" only: no "Default: X" nor "(default: X)" written into a help text
    for decl, text in help_lines(_all_commands()[name]).items():
        body = text.split("  [default:")[0]
        assert "default:" not in body.lower(), (name, decl, text)


def test_lecture_offers_only_the_presets_that_run_on_its_features(run_cli):
    text = " ".join(CliRunner().invoke(lecture, ["--help"]).output.split())
    flipped = [k for k, c in PRESETS.items() if c.flip or c.test_flip]
    assert flipped and all(f"'{k}'" not in text for k in flipped) and "--flip" not in text
    code, _, err = run_cli(["lecture", "--preset", flipped[0]])
    assert code == 2 and "Invalid value for '--preset'" in err and "--features" not in err
    code, _, err = run_cli(["lecture", "--flip"])
    assert code == 2 and "No such option" in err


def test_lr_find_val_fraction_speaks_of_no_early_stopping():
    text = help_lines(lr_find)["--val-fraction"]
    assert "stopping" not in text and "held out" in text
    assert "early stopping" in help_lines(train)["--val-fraction"]


def test_run_extracts_with_extracts_options():
    from featmlp.cli.extract import extract

    ours, theirs = help_lines(run), help_lines(extract)
    for option in ("--workers", "--chunk-size"):
        assert ours[option] == theirs[option]


def test_lecture_help_names_its_preset_and_values():
    result = CliRunner().invoke(lecture, ["--help"])
    text = " ".join(result.output.split())
    lec = PRESETS["lecture"]
    assert "preset 'lecture'" in text and "Named configuration to start from" in text and "[default: 'lecture']" in text
    assert (f"9 -> {lec.hidden[0]} -> 10, {lec.head}, {lec.optimizer} lr {lec.lr:g}, {lec.epochs} epochs"
            in text)
    assert f"{lec.scaler} scaling" in text


def test_a_default_in_help_follows_the_preset(monkeypatch):
    # the help is generated when the options are built: a changed preset changes it
    from featmlp.cli.training import train_options

    monkeypatch.setitem(PRESETS, "default", dataclasses.replace(PRESETS["default"], lr=0.25))

    @train_options
    def command(**opts):
        pass

    import click

    lines = help_lines(click.command()(command))
    assert "[default: 0.25 (preset 'default')" in lines["--lr"]


@pytest.fixture
def feats(tmp_path):
    X, y = make_classification(300, 9, n_informative=6, n_classes=3, random_state=0)
    return save_features(tmp_path / "f.npz", FeatureTable(X[:200], y[:200], X[200:], y[200:],
                                                          tuple(f"f{i}" for i in range(9)), ("a", "b", "c"),
                                                          {"features": "lecture"}))


@pytest.mark.parametrize("option", LR_FIND_IGNORES)
def test_lr_find_does_not_offer_what_it_ignores(tmp_path, run_cli, feats, option):
    assert not any(d.startswith(option) or f"/ {option}" in d for d in help_lines(lr_find))
    value = [] if option.startswith("--no-") or option in ("--flip", "--test-flip", "--log-scale",
                                                            "--tensorboard") else ["1"]
    code, out, err = run_cli(["lr-find", feats, option, *value, "--plot", tmp_path / "lr.png"])
    assert code == 2 and "No such option" in err and option in err
    assert not (tmp_path / "lr.png").exists()


def test_sweep_does_not_offer_tensorboard(tmp_path, run_cli, feats):
    assert "--tensorboard" not in help_lines(sweep)
    code, _, err = run_cli(["sweep", feats, "--tensorboard", "--out", tmp_path / "s"])
    assert code == 2 and "No such option '--tensorboard'" in err
    assert not (tmp_path / "s").exists()


def test_lr_find_steps_advertises_the_minimum_the_test_accepts(tmp_path, run_cli, feats):
    from featmlp.training.lr_find import lr_find as lr_find_

    assert "at least 5" in help_lines(lr_find)["--steps"]
    code, _, err = run_cli(["lr-find", feats, "--steps", "4", "-q"])
    assert code == 2 and "x>=5" in err
    # the library's own limit is the same
    X, y = make_classification(60, 4, n_informative=2, n_classes=2, random_state=0)
    with pytest.raises(ConfigError, match=">= 5"):
        lr_find_(X, y, num_steps=4)
    assert len(lr_find_(X, y, TrainConfig(hidden=(4,)), num_steps=5).lrs) <= 5
