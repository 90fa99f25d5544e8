"""The command line imports only the module of the command it is given (issue 28); ``--help`` and an
unknown command still list every command, from ``chromoseg.cli.COMMANDS``."""
import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from chromoseg import cli

LISTED = ("demo", "data", "train", "train-classifier", "pretrain", "export", "predict", "evaluate", "benchmark",
          "karyogram", "review")  # chromoseg --help before the commands were registered lazily


def test_each_module_registers_the_commands_the_table_gives_it():
    """``COMMANDS`` names each module's commands, and their one-line help is written there only."""
    assert tuple(cli.COMMANDS) == LISTED
    for module in cli.COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        mod = importlib.import_module(module)
        mod.register(sub)
        table = {n: text for n, (m, text) in cli.COMMANDS.items() if m == module}
        assert {a.dest: a.help for a in sub._choices_actions} == table and list(sub.choices) == list(table), module
        assert not any(text in Path(mod.__file__).read_text() for text in table.values()), f"{module} repeats a help"


def test_help_lists_every_command_as_the_full_parser_does(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out == cli.build_parser().format_help()
    for name, (_, text) in cli.COMMANDS.items():
        assert f"    {name}" in out and text in " ".join(out.split()), name
    assert cli.main([]) == 1 and capsys.readouterr().out == out


def test_unknown_command_is_a_usage_error_naming_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate", "x"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "invalid choice: 'frobnicate'" in err
    assert "(choose from " + ", ".join(f"'{n}'" for n in LISTED) + ")" in err


def _cli_modules(tmp_path, *argv) -> tuple:
    """A fresh process's exit status and the chromoseg.cli modules it imported for ``chromoseg ARGV``."""
    code = ("import json, sys\nfrom chromoseg.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    code = e.code\n"
            "print(json.dumps([code, sorted(m for m in sys.modules if m.startswith('chromoseg.cli'))]))")
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path)
    return tuple(json.loads(run.stdout.strip().splitlines()[-1]))


def test_a_command_imports_only_its_own_module(tmp_path):
    predict = _cli_modules(tmp_path, "predict", "nowhere.tif", "--out", "o")  # a usage error after the parse
    assert predict == (2, ["chromoseg.cli", "chromoseg.cli.predict"])
    assert _cli_modules(tmp_path, "-v", "pretrain", "--help") == (0, ["chromoseg.cli", "chromoseg.cli.train"])
    assert _cli_modules(tmp_path, "--help") == (0, ["chromoseg.cli"])
