"""`hyperrec lineage`: which run, code and data produced a served model (read from MLMD)."""
from __future__ import annotations

import json

import click

from hyperrec.pipeline.cli.common import usage_errors
from hyperrec.pipeline.runners import commands as runner_commands


@click.command("lineage")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/local",
              show_default=True, help="A run's workdir (its metadata.sqlite is the default).")
@click.option("--metadata", default="",
              help="MLMD: a SQLite path or mysql://USER@HOST:PORT/DB (password: "
                   "$MLMD_MYSQL_PASSWORD).")
@click.option("--version", default=None, help="Served version (default: the newest pushed).")
@click.option("--json", "as_json", is_flag=True, help="Everything, as JSON.")
@usage_errors
def lineage_command(workdir: str, metadata: str, version: str, as_json: bool) -> None:
    """Which run, code and data produced a served model (read from MLMD)."""
    from ml_metadata.metadata_store import metadata_store
    from hyperrec.pipeline import lineage
    from hyperrec.pipeline.runners import metadata as metadata_lib
    location = runner_commands.store_location(workdir, metadata)
    try:
        store = metadata_store.MetadataStore(metadata_lib.connection_config(location))
        result = lineage.trace(store, version)
    except lineage.LineageError as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps(result.to_dict(), indent=1, sort_keys=True) if as_json
               else lineage.render(result))


GROUP = "Lineage"
COMMANDS = (lineage_command,)
