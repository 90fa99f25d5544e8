"""The ``chromoseg`` command.

Each command group is a module of this package with a ``register(subparsers)`` function; this file
only names them (``COMMANDS``: each sub-command's module and its one-line help) and imports a module
only when the command line names one of its commands: ``chromoseg predict ...`` imports
``chromoseg.cli.predict`` alone, and ``chromoseg --help`` (or no command, or an unknown one) lists every
command from ``COMMANDS`` without importing any (heavy imports such as torch happen inside the command
functions). The CLI is the top layer (ops <- models <- engine <- cli, with data and karyotype beside
models): its modules import the library, never the other way round.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Every sub-command, in the order of ``--help``: its name -> (the module whose ``register`` adds it, its
#: one-line help in ``chromoseg --help``, which the module's ``add_parser`` reads from here). A module's
#: commands stand together.
COMMANDS = {
    "demo": ("chromoseg.cli.demo", "run on the shipped example metaphase"),
    "data": ("chromoseg.cli.data", "import data sets, draw and check annotations"),
    "train": ("chromoseg.cli.train", "train mr / rmr / ermr (the paper's recipe)"),
    "train-classifier": ("chromoseg.cli.train", "train the second-stage crop classifier and attach it to a model"),
    "pretrain": ("chromoseg.cli.train", "pretrain the ResNet backbone on single-chromosome classification"),
    "export": ("chromoseg.cli.export", "write a checkpoint's weights as a compact safetensors model file"),
    "predict": ("chromoseg.cli.predict", "segment chromosomes in images with a trained model"),
    "evaluate": ("chromoseg.cli.evaluate",
                 "mask and box AP (multi-class and binary), per-class AP and a confusion matrix"),
    "benchmark": ("chromoseg.cli.benchmark", "the paper's Tables I and II on an annotated split"),
    "karyogram": ("chromoseg.cli.karyogram",
                  "karyograms, overlays, counts/ISCN summaries and an HTML report for a dataset or results"),
    "review": ("chromoseg.cli.review",
               "review and correct a predict folder in the browser (classes, delete, join, split, draw; export)"),
}

#: The modules that add sub-commands, each once, in the order of ``--help``.
COMMAND_MODULES = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))

EPILOG = """\
typical workflow:
  chromoseg data import mfish ../shared/data/adir-mfish --out datasets/mfish
  chromoseg data show datasets/mfish/train.json --out out/show --limit 8
  chromoseg train --data datasets/mfish --variant ermr --out runs/ermr
  chromoseg predict IMAGE_OR_FOLDER --out out/pred

Run `chromoseg COMMAND --help` for each command's options.
"""


#: exit statuses of every command
EXIT_OK = 0  #: everything asked for was done
EXIT_NOTHING_DONE = 1  #: nothing could be done (e.g. no input image could be used)
EXIT_USAGE = 2  #: bad command line or unusable input (one line on stderr says why)
EXIT_PARTIAL = 3  #: done, but some inputs were skipped (listed on stderr and in problems.json)


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _number(kind, text: str, *, lo=None, hi=None, lo_open=False, what=""):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what or ('an integer' if kind is int else 'a number')}") from None
    if kind is float and v != v:  # NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise argparse.ArgumentTypeError(f"{text} must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and v > hi:
        raise argparse.ArgumentTypeError(f"{text} must be <= {hi}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, text, lo=1)


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, text, lo=0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    v = _number(float, text, lo=0.0, lo_open=True)
    if v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be finite")
    return v


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    v = _number(float, text, lo=0.0)
    if v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be finite")
    return v


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1] (a probability, a score, an IoU)."""
    return _number(float, text, lo=0.0, hi=1.0)


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The ``chromoseg`` parser with the commands of ``COMMAND_MODULES`` registered: all of them, or,
    given ``commands`` (names), only the modules of those; every other command is only listed (its name
    and help), so ``--help`` and an unknown command's error read the same either way."""
    parser = argparse.ArgumentParser(
        prog="chromoseg",
        description="Chromosome instance segmentation and karyotyping (Enhanced Rotated Mask R-CNN).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from chromoseg import __version__

    parser.add_argument("--version", action="version", version=f"chromoseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:  # a module that fails to import is an error, never a silently lost command
        names = [name for name, (m, _) in COMMANDS.items() if m == module]
        if commands is None or set(names) & set(commands):
            importlib.import_module(module).register(sub)
        else:
            for name in names:  # listed in --help; its module is imported when the command is named
                sub.add_parser(name, help=COMMANDS[name][1])
    return parser


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub-)command ``args`` chose: ``chromoseg data import ...`` -> the ``import``
    parser, so that its errors show its own usage line."""
    while True:
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = getattr(args, action.dest, None) if action is not None else None
        if chosen not in (action.choices if action is not None else {}):
            return parser
        parser = action.choices[chosen]


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """'unrecognized arguments: ...', with the option meant where one is close (``--ouput`` -> ``--out``)."""
    import difflib

    known = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for e in extras:
        if e.startswith("--"):
            close = difflib.get_close_matches(e.split("=", 1)[0], known, n=1, cutoff=0.75)
            if close:
                hints.append(close[0])
    return f"unrecognized arguments: {' '.join(extras)}" + (f" (did you mean {', '.join(hints)}?)" if hints else "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the command is the first word that is no option (the top level's options take no value)
    parser = build_parser([next((a for a in argv if not a.startswith("-")), "")])
    args, extras = parser.parse_known_args(argv)
    if extras:  # the command's own usage and a hint, not the top-level usage
        sub = command_parser(parser, args)
        sub.error(_unrecognized(sub, extras))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # libraries' warnings (deprecations, decoder notes) are for developers: -v shows them
        import warnings

        warnings.simplefilter("ignore")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except CliError as err:
        print(f"chromoseg {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
