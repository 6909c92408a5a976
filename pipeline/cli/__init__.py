"""The `hyperrec` command, one module per command group; each command is a thin wrapper over
the layers below it (pipeline/loop, pipeline/runners, pipeline/, components/, data/, serving/):

  run.py       generate-data, run, demo, report, schema-diff
  data.py      import online-retail | image-folder | table
  serve.py     serve, recommend, predict, promote, rollback
  loop.py      monitor, loop-demo, refresh-catalogue
  lineage.py   lineage
  export.py    export-lite, compile
  pretrain.py  pretrain image | text

The only package of the project that imports click (tests/test_layering.py).
"""
from __future__ import annotations

from hyperrec.pipeline.cli import common  # noqa: F401  (quiet logs before anything loads TF)

import click  # noqa: E402


class _GroupedCommands(click.Group):
    """`hyperrec --help` lists the commands under their group (one module here each)."""

    groups: list = []  # (title, command names)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        width = formatter.width - 6 - max(len(name) for name in self.commands)
        for title, names in self.groups:
            with formatter.section(title):
                formatter.write_dl([(name, self.commands[name].get_short_help_str(width))
                                    for name in names])


@click.group(cls=_GroupedCommands, context_settings=common.HELP)
@click.option("--verbose", is_flag=True,
              help="Keep TensorFlow's C++ and gRPC log lines (first option only).")
def main(verbose: bool) -> None:
    """hyperrec: a multimodal recommender as a TFX pipeline."""


def _register() -> None:
    from hyperrec.pipeline.cli import data, export, lineage, loop, pretrain, run, serve
    for module in (run, data, serve, loop, lineage, export, pretrain):
        for command in module.COMMANDS:
            main.add_command(command)
        main.groups.append((module.GROUP, [command.name for command in module.COMMANDS]))


_register()
