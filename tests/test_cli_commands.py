"""Every `hyperrec` command and flag recorded in tests/cli_commands.json still resolves.

The list was taken from click's own command objects before the CLI moved into pipeline/cli/
(hyperrec issue 27); a renamed command or a dropped flag breaks scripts and docs that use it.
A new command or flag is fine: add it to the list.
"""
import json
import pathlib

import click
from click.testing import CliRunner

from hyperrec.pipeline.cli import main
from hyperrec.serving import cli as serving_cli

RECORDED = json.loads((pathlib.Path(__file__).with_name("cli_commands.json")).read_text())


def _resolve(path: str) -> click.Command:
    command = main
    for name in path.split()[1:]:
        assert isinstance(command, click.Group), f"{path}: {command.name} is not a group"
        assert name in command.commands, f"{path}: no command {name!r}"
        command = command.commands[name]
    return command


def _names(command: click.Command) -> set:
    if command.name == "serve":  # passes its flags on to serving's own parser
        return set(serving_cli.parser()._option_string_actions)
    options = {name for param in command.params if isinstance(param, click.Option)
               for name in param.opts + param.secondary_opts}
    arguments = {f"<{param.name}>" for param in command.params
                 if isinstance(param, click.Argument)}
    return options | arguments


def test_every_recorded_command_and_flag_resolves():
    missing = {path: sorted(set(flags) - _names(_resolve(path)))
               for path, flags in RECORDED.items()}
    assert {path: flags for path, flags in missing.items() if flags} == {}


def test_the_list_is_the_whole_recorded_cli():
    # guards the check above against an empty or truncated list
    assert len(RECORDED) >= 20 and "hyperrec import table" in RECORDED
    assert "--model_base_path" in RECORDED["hyperrec serve"]


def test_help_lists_the_command_groups():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    titles = [line[:-1] for line in result.output.splitlines() if line and line[0] != " "
              and line.endswith(":") and line not in ("Options:",)]
    assert titles == ["Run the pipeline", "Import data", "Serve", "Production loop",
                      "Lineage", "Export", "Pretrain"]
    for path in RECORDED:
        if path.count(" ") == 1:
            assert f"  {path.split()[1]} " in result.output, path


def test_serve_takes_the_model_servers_own_flags():
    # `hyperrec serve` hands its flags to serving/cli.py, the parser `python -m
    # hyperrec.serving` uses; a bad value is argparse's usage error (exit 2).
    result = CliRunner().invoke(main, ["serve", "--enable_batching=maybe"])
    assert result.exit_code == 2 and "is not a boolean" in result.output
    assert serving_cli.parse_flags(["--enable_batching", "--port=9"]).enable_batching is True
