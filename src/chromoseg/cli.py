"""The ``chromoseg`` command.

Each package registers its own sub-commands through a ``register(subparsers)`` function in its
``cli`` module; this file only collects them, so that ``chromoseg --help`` stays fast (heavy imports
such as torch happen inside the command functions).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Modules that add sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES = (
    "chromoseg.demo",
    "chromoseg.data.cli",
    "chromoseg.engine.cli",
    "chromoseg.engine.predict_cli",
    "chromoseg.engine.eval_cli",
    "chromoseg.engine.benchmark_cli",
    "chromoseg.karyotype.cli",
)

EPILOG = """\
typical workflow:
  chromoseg data import mfish ../shared/data/adir-mfish --out datasets/mfish
  chromoseg data show datasets/mfish/train.json --out out/show --limit 8
  chromoseg train --data datasets/mfish --variant ermr --out runs/ermr
  chromoseg predict IMAGE_OR_FOLDER --out out/pred

Run `chromoseg COMMAND --help` for each command's options.
"""


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
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
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that part of chromoseg is not there yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except CliError as err:
        print(f"chromoseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
