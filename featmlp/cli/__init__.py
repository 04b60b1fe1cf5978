"""The ``featmlp`` command: a thin layer over the Python API.

Every choice list and its help text comes from a registry (feature sets,
optimisers, presets ...), so adding an entry there adds it here. Errors a user
can act on (:class:`featmlp.errors.FeatmlpError`) print one line and exit 1.

Commands live in submodules loaded when used (click's lazy-group pattern), and
``featmlp --help`` lists them from :data:`COMMANDS` without loading any: only the training
commands import torch (their options come from its registries); ``extract``, its worker
processes, ``compare`` and ``report`` never do (tests/test_startup.py).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import re
import sys

import click

from .. import __version__
from .._text import cli_spelling, printable
from ..errors import FeatmlpError
from ..progress import COMPILE_LOGGER

# command name -> ("module:function", its short help); listed in this order by --help.
# The short help is the first sentence of the command's docstring, repeated here so that
# `featmlp --help` lists every command without importing one (the training commands' options
# import torch); tests/test_startup.py checks that each line is still its command's.
COMMANDS = {
    "extract": ("featmlp.cli.extract:extract",
                "Extract a feature set from SOURCE's images into a feature file or a sharded table."),
    "run": ("featmlp.cli.training:run",
            "Extract features, train, evaluate, plot and save: the whole job in one run directory."),
    "lecture": ("featmlp.cli.training:lecture",
                "The lecture notebook, reproduced: its 9 texture features and preset 'lecture', "
                "9 -> 6 -> 10, mse, gd lr 10, 20 epochs (on CIFAR-10), minmax scaling."),
    "train": ("featmlp.cli.training:train",
              "Train an MLP on a feature file and evaluate it on its test split."),
    "evaluate": ("featmlp.cli.inference:evaluate",
                 "Evaluate a saved model on the test split of a feature file (default: the run's own), or on "
                 "every image of a labelled source (--data SOURCE --out DIR)."),
    "predict": ("featmlp.cli.inference:predict",
                "Classify the images of files, folders, archives or URLs with a saved model: one line per image."),
    "sweep": ("featmlp.cli.experiments:sweep",
              "Train every combination of the listed values; those that share data train together."),
    "lr-find": ("featmlp.cli.experiments:lr_find",
                "Learning-rate range test: train briefly with an exponentially growing lr, plot the loss."),
    "compare": ("featmlp.cli.runs:compare",
                "Compare run directories: overlaid loss curves and a table of differing settings and results."),
    "report": ("featmlp.cli.runs:report",
               "Write DIR/report.html: one self-contained page (plots embedded) for a run or a sweep."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use; its help lists them without importing any."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        # click.Group.format_commands, with each command's short help from COMMANDS: a stand-in
        # command carrying it shortens it to the width exactly as the real one would.
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.Command(name, help=short).get_short_help_str(limit))
                for name, (_, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="featmlp")
@click.pass_context
def cli(ctx):
    """Classify images with multilayer perceptrons trained on extracted image features."""
    # start-up: loaded when the command runs, not by `featmlp --help`
    from .._text import printable_warnings

    ctx.with_resource(printable_warnings())  # names in other libraries' warnings: escaped too


INTERRUPTED = "interrupted: nothing half-written was kept; run the same command again to resume"


class _EchoHandler(logging.Handler):
    def emit(self, record):
        click.echo(printable(record.getMessage()), err=True)


def _show_compiles() -> None:
    """The line numba's first compilation of a kernel logs (featmlp.progress.announce_compiles), on stderr."""
    logger = logging.getLogger(COMPILE_LOGGER)
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


# The commands that draw plots at the end of what may be a short run, and the plots' module.
DRAWING_COMMANDS = ("lecture", "run", "train", "sweep")
PLOT_MODULES = ("featmlp.runs.plots",)


def _draws(argv) -> bool:
    """Whether the command line ``argv`` (default: this process's) runs a command that draws."""
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    return bool(args) and args[0] in DRAWING_COMMANDS and not {"-h", "--help"} & set(args)


def main(argv=None) -> None:
    """Entry point: run the CLI, turning user errors into one line and an exit code.

    Ctrl-C (SIGINT) and ``kill`` (SIGTERM, made an interrupt here) stop the command, its worker
    processes with it, and print one line: exit status 130 for SIGINT, 143 for SIGTERM.
    """
    # start-up: loaded when the command runs, not by `featmlp --help`
    from .._figures import drawing_in_background
    from .._workers import Terminated, terminate_as_interrupt

    _show_compiles()
    # The plots of a command that draws are drawn beside the rest of its work, by processes
    # forked first (before any thread, and before the command's own modules load: their
    # matplotlib loads meanwhile): ~0.6 s of a 2-3 s lecture.
    drawing = drawing_in_background(imports=PLOT_MODULES) if _draws(argv) else contextlib.nullcontext()
    try:
        with terminate_as_interrupt(), drawing:
            rv = cli.main(args=argv, prog_name="featmlp", standalone_mode=False)
    except FeatmlpError as e:
        click.echo(f"error: {printable(cli_spelling(e))}", err=True)  # names in it may hold control characters
        sys.exit(1)
    except click.ClickException as e:
        # a path or value as typed may hold control characters; the help that `featmlp` alone
        # shows as its message keeps its lines
        e.message = "\n".join(printable(line) for line in e.message.split("\n"))
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):  # click turns an interrupt into Abort
            click.echo(INTERRUPTED, err=True)
            sys.exit(143 if isinstance(e.__cause__, Terminated) else 130)
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt as e:
        click.echo(INTERRUPTED, err=True)
        sys.exit(143 if isinstance(e, Terminated) else 130)
    except BrokenPipeError:
        sys.exit(141)
    except OSError as e:  # the disk, not featmlp: full, read-only, no permission ...
        click.echo(f"error: {printable(os_error_line(e))}", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


# numpy's tofile (np.save into a file) reports a write that stopped short without an errno:
# OSError("1775000 requested and 593392 written"). On a file that is a full disk (or a file-size limit).
_SHORT_WRITE = re.compile(r"^(\d+) requested and (\d+) written$")


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error: what failed, on which file, and what to do."""
    where = f" ({e.filename})" if e.filename else ""
    text = f"{e.strerror or e}{where}"
    short = _SHORT_WRITE.match(str(e)) if e.errno is None else None
    if short:
        text = f"a write stopped after {short[2]} of {short[1]} bytes{where}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT) or short:
        return (f"{text}: the disk is full; nothing half-written was kept. Free some space (or write "
                f"elsewhere) and run the same command again")
    if e.errno == errno.EFBIG:
        return (f"{text}: the file outgrew what this filesystem or the file-size limit (ulimit -f) allows; "
                f"nothing half-written was kept. Write elsewhere (or raise the limit) and run the same "
                f"command again")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{text}: no permission to write or read there; choose another place"
    return f"{text}"


if __name__ == "__main__":
    main()
