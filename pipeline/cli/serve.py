"""`hyperrec serve | recommend | predict | promote | rollback`: the model server (its flags are
tensorflow_model_server's, parsed in serving/cli.py so that `python -m hyperrec.serving`
needs nothing above serving/), its clients, and the `stable`/`canary` label moves in
models.config."""
from __future__ import annotations

import json
from typing import Optional

import click

from hyperrec.serving import cli as serving_cli
from hyperrec.serving.client import DEFAULT_MODEL_NAME, ServingClientError, make_client

_LOOPBACK = "127.0.0.1"


@click.command("serve", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("flags", nargs=-1, type=click.UNPROCESSED)
def serve(flags) -> None:
    """Serves SavedModels over TF Serving's REST and gRPC APIs (tensorflow_model_server's
    flags, parsed by serving/cli.py as `python -m hyperrec.serving` parses them; --help
    lists them)."""
    serving_cli.serve(list(flags), prog="hyperrec serve")


def _client_options(command):
    command = click.option("--model_name", default=DEFAULT_MODEL_NAME, show_default=True)(command)
    command = click.option("--port", type=int, default=None,
                           help="Server port [default: 8500 with --grpc, else 8501].")(command)
    command = click.option("--host", default=_LOOPBACK, show_default=True)(command)
    command = click.option("--grpc", "use_grpc", is_flag=True,
                           help="Use gRPC instead of REST.")(command)
    command = click.option("--label", default=None, help="Version label to query.")(command)
    command = click.option("--version", "model_version", type=int, default=None,
                           help="Model version to query (default: latest).")(command)
    return command


@click.command("recommend", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--user", "user_id", required=True, help="User id.")
@click.option("--history", default="", help="Recent item ids, most recent last: i1,i2,...")
@click.option("--device", default="", help="Request context: device.")
@click.option("--k", type=int, default=10, show_default=True)
@click.option("--timestamp", type=int, default=None,
              help="Request time, epoch seconds [default: now].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--canary-share", "canary_share", type=click.FloatRange(0.0, 1.0), default=0.0,
              show_default=True, help="Share of users (by a sha256 of the user id) sent to "
              "the `canary` label, the others to `stable`; 0: no label (the latest version).")
@_client_options
def recommend(user_id: str, history: str, device: str, k: int, timestamp: Optional[int],
              as_json: bool, canary_share: float, model_name: str, port: Optional[int],
              host: str, use_grpc: bool, label: Optional[str],
              model_version: Optional[int]) -> None:
    """Top-k items for a user from a served model's `recommend` signature."""
    if canary_share and (label is not None or model_version is not None):
        raise click.UsageError("--canary-share chooses the label: drop --label/--version")
    items = [item.strip() for item in history.split(",") if item.strip()]
    client = make_client(use_grpc, host, port, model_name, canary_share=canary_share)
    try:
        ranked = client.recommend(user_id, items, device, k, timestamp,
                                  version=model_version, label=label)
    except (ServingClientError, OSError) as err:
        raise click.ClickException(str(err)) from err
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps([{"item_id": i, "score": s} for i, s in ranked]))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"recommendations for {user_id}")
    table.add_column("rank", justify="right")
    table.add_column("item_id")
    table.add_column("score", justify="right")
    for rank, (item_id, score) in enumerate(ranked, start=1):
        table.add_row(str(rank), item_id, f"{score:.4f}")
    Console().print(table)


@click.command("predict", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--instances", default=None, help='JSON list of rows, e.g. \'[[1.0], [2.0]]\'.')
@click.option("--inputs", default=None, help="JSON columnar inputs (instead of --instances).")
@click.option("--file", "request_file", type=click.File("r"), default=None,
              help="A request body ({\"instances\": ...} or {\"inputs\": ...}) or a JSON list "
                   "of instances; '-' reads stdin.")
@click.option("--signature_name", default=None, help="Signature (default: serving_default).")
@_client_options
def predict(instances: Optional[str], inputs: Optional[str], request_file, signature_name,
            model_name: str, port: Optional[int], host: str, use_grpc: bool,
            label: Optional[str], model_version: Optional[int]) -> None:
    """Sends a predict request (TF Serving's JSON formats) and prints the JSON answer."""
    try:
        body = json.load(request_file) if request_file is not None else {}
        if isinstance(body, list):
            body = {"instances": body}
        if instances is not None:
            body["instances"] = json.loads(instances)
        if inputs is not None:
            body["inputs"] = json.loads(inputs)
    except ValueError as err:
        raise click.UsageError(f"invalid JSON: {err}") from err
    if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
        raise click.UsageError("give --instances, --inputs or --file")
    client = make_client(use_grpc, host, port, model_name)
    try:
        answer = client.predict(body.get("instances"), body.get("inputs"),
                                signature_name or body.get("signature_name"),
                                version=model_version, label=label)
    except (ServingClientError, OSError) as err:
        raise click.ClickException(str(err)) from err
    finally:
        client.close()
    click.echo(json.dumps(answer))


def _move_label(config_file: str, model_name: str, label: str, to_label: str) -> None:
    from hyperrec.serving import config
    try:
        before, after = config.move_label(config_file, model_name, label, to_label)
    except config.ConfigError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{model_name}: {label} {before or '-'} -> {after} ({config_file}; a server "
               "polling it with --model_config_file_poll_wait_seconds switches on its next read)")


def _label_options(command):
    command = click.option("--model_name", default=DEFAULT_MODEL_NAME, show_default=True)(command)
    command = click.option("--config", "config_file", required=True,
                           type=click.Path(dir_okay=False, exists=True),
                           help="The server's --model_config_file (models.config).")(command)
    return command


@click.command("promote", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--label", default="canary", show_default=True,
              help="The label whose version becomes `stable`.")
@_label_options
def promote(label: str, config_file: str, model_name: str) -> None:
    """Points `stable` at the version of `--label` (the canary) in models.config."""
    from hyperrec.serving import routing
    _move_label(config_file, model_name, routing.STABLE_LABEL, label)


@click.command("rollback", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--label", default="canary", show_default=True,
              help="The label sent back to the `stable` version.")
@_label_options
def rollback(label: str, config_file: str, model_name: str) -> None:
    """Points `--label` (the canary) back at the `stable` version in models.config, so routed
    clients keep working and every user sees stable."""
    from hyperrec.serving import routing
    _move_label(config_file, model_name, label, routing.STABLE_LABEL)


GROUP = "Serve"
COMMANDS = (serve, recommend, predict, promote, rollback)
