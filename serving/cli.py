"""Click commands for serving: `serve` (the model server), the clients `recommend`/`predict`,
and `promote`/`rollback` (move the `stable`/`canary` labels in models.config).

`serve` takes tensorflow_model_server's flag names (`--port=8500`, `--enable_batching=true`,
`--model_config_file=...`), so the same command lines and config files work with the stock
binary and with this server. `register(group)` adds the commands to a click group (the
`hyperrec` command); `python -m hyperrec.serving` runs `serve` alone and
`python -m hyperrec.serving.cli` offers all of them.
"""
from __future__ import annotations

import hyperrec.serving  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

import gc
import json
import logging
import signal
import sys
from typing import Optional

import click

from hyperrec.serving import http_limits
from hyperrec.serving.client import DEFAULT_MODEL_NAME, ServingClientError, make_client

_LOOPBACK = "127.0.0.1"
_GIL_SWITCH_INTERVAL_S = 0.0005


class _FlagBool(click.ParamType):
    """A bool flag also accepting tensorflow_model_server's `--flag=true|false` spelling."""
    name = "bool"

    def convert(self, value, param, ctx):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "t", "yes", "y", "on"):
            return True
        if text in ("0", "false", "f", "no", "n", "off"):
            return False
        self.fail(f"{value!r} is not a boolean", param, ctx)


def _bool_flag(name: str, default: bool, help_text: str):
    return click.option(name, type=_FlagBool(), is_flag=False, flag_value="true",
                        default="true" if default else "false", show_default=True,
                        help=help_text)


def _int_flag(*names: str, default: int, help_text: str):
    return click.option(*names, type=int, default=default, show_default=True, help=help_text)


def _ms_flag(name: str, default_s: float, help_text: str):
    """A duration flag in milliseconds, its default given in seconds."""
    return _int_flag(name, default=int(default_s * 1000), help_text=help_text)


def _configure_tensorflow(session_config, intra_op: int, inter_op: int) -> None:
    """TensorFlow's runtime as tensorflow_model_server's flags of the same names set it: the
    session ConfigProto first, then the thread flags, which override its thread counts. Must
    run before TensorFlow's eager context exists (its thread pools are made with it)."""
    if session_config is None and not (intra_op or inter_op):
        return
    import tensorflow as tf
    if session_config is not None:
        # TF 2 has no public setter for the whole ConfigProto: tf.compat.v1's
        # enable_eager_execution is a no-op once eager is the default, so this is the
        # function it would call, which makes the eager context from the config.
        from tensorflow.python.framework import ops
        try:
            ops.enable_eager_execution_internal(config=session_config)
        except ValueError as err:  # only if something already made the context
            raise click.UsageError(f"--tensorflow_session_config_file applied too late: {err}")
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s")


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model_name", default=DEFAULT_MODEL_NAME, show_default=True,
              help="Name of the model (ignored with --model_config_file).")
@click.option("--model_base_path", type=click.Path(file_okay=False), default=None,
              help="Directory of integer version sub-directories (the pusher's output).")
@click.option("--port", type=int, default=8500, show_default=True,
              help="gRPC port (0: any free port).")
@click.option("--rest_api_port", type=int, default=8501, show_default=True,
              help="REST port (0 disables REST, as in tensorflow_model_server).")
@click.option("--host", default=_LOOPBACK, show_default=True,
              help="Address to bind; loopback unless you mean to expose the server.")
@click.option("--model_config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Text ModelServerConfig: models, version policy, version labels.")
@click.option("--model_config_file_poll_wait_seconds", type=float, default=0.0,
              show_default=True, help="Re-read --model_config_file this often (0: never).")
@_bool_flag("--enable_batching", False, "Batch concurrent requests per signature.")
@click.option("--batching_parameters_file", type=click.Path(dir_okay=False, exists=True),
              default=None, help="Text BatchingParameters (needs --enable_batching).")
@click.option("--file_system_poll_wait_seconds", type=float, default=1.0, show_default=True,
              help="Seconds between scans of the base paths for new versions (0: only at start).")
@click.option("--rest_api_max_request_bytes", type=int, default=0, show_default=True,
              help="Largest request body accepted (413 above it; also caps gRPC). 0: no limit.")
@_int_flag("--rest_api_max_decompressed_bytes",
           default=http_limits.DEFAULT_MAX_DECOMPRESSED_BYTES,
           help_text="Largest gzip request body once inflated (413 above it; checked while "
           "inflating). 0: no limit.")
@_ms_flag("--rest_api_header_timeout_in_ms", http_limits.DEFAULT_HEADER_TIMEOUT_S,
          "A request's line and headers must arrive within this of its first byte, and its "
          "body may not pause longer (408).")
@_ms_flag("--rest_api_idle_timeout_in_ms", http_limits.DEFAULT_IDLE_TIMEOUT_S,
          "Close a keep-alive REST connection idle this long.")
@_int_flag("--rest_api_max_connections", default=http_limits.DEFAULT_MAX_CONNECTIONS,
           help_text="Open REST connections; a new one beyond it closes the oldest idle one, "
           "or, when none is idle, is answered 503 and closed.")
@_int_flag("--rest_api_max_idle_connections", default=http_limits.DEFAULT_MAX_IDLE_CONNECTIONS,
           help_text="REST connections waiting for a request; beyond it the oldest idle one is "
           "closed, and above half of it the idle timeout shrinks.")
@_ms_flag("--rest_api_pressure_idle_timeout_in_ms", http_limits.DEFAULT_PRESSURE_IDLE_TIMEOUT_S,
          "The idle timeout when --rest_api_max_idle_connections connections are idle (it "
          "falls to this linearly from half of them).")
@_int_flag(http_limits.REQUEST_BUDGET_FLAG, "request_budget_bytes",
           default=http_limits.DEFAULT_REQUEST_BUDGET_BYTES,
           help_text="Per-request budget, REST and gRPC: the estimated memory of decoding a "
           "request's inputs (values x bytes + its bytes), priced before decoding; over it "
           "REST answers 413 and gRPC RESOURCE_EXHAUSTED. 0: none.")
@click.option("--model_load_failure_file", default=None,
              help="JSON file remembering versions that failed to load (by content digest), "
              "so a restart serves the good ones without loading those first [default: "
              "$XDG_CACHE_HOME/hyperrec/serving_load_failures.json]; '' disables.")
@click.option("--monitoring_config_file", type=click.Path(dir_okay=False, exists=True),
              default=None, help="Text MonitoringConfig enabling the Prometheus endpoint.")
@click.option("--request_log_dir", type=click.Path(file_okay=False), default=None,
              help="Append every request and response (PredictionLog TFRecords) here.")
@_bool_flag("--enable_model_warmup", True,
            "Replay assets.extra/tf_serving_warmup_requests before serving a version.")
@click.option("--rest_api_num_threads", type=int, default=64, show_default=True,
              help="Threads running REST requests' model calls (a batch never holds more "
              "REST requests than this) and large bodies' JSON; HTTP and small requests' JSON "
              "run on one event-loop thread.")
@click.option("--grpc_max_threads", type=int, default=64, show_default=True,
              help="Threads serving gRPC calls (a batch cannot be larger than this).")
@click.option("--tensorflow_session_config_file", type=click.Path(dir_okay=False, exists=True),
              default=None, help="Text TensorFlow ConfigProto for the runtime (thread pools, "
              "spinning, ...); the two flags below override its thread counts.")
@click.option("--tensorflow_intra_op_parallelism", type=int, default=0, show_default=True,
              help="Threads inside one op (0: TensorFlow picks, about the core count).")
@click.option("--tensorflow_inter_op_parallelism", type=int, default=0, show_default=True,
              help="Ops run concurrently (0: TensorFlow picks).")
def serve(model_name: str, model_base_path: Optional[str], port: int, rest_api_port: int,
          host: str, model_config_file: Optional[str],
          model_config_file_poll_wait_seconds: float, enable_batching: bool,
          batching_parameters_file: Optional[str], file_system_poll_wait_seconds: float,
          rest_api_max_request_bytes: int, rest_api_max_decompressed_bytes: int,
          rest_api_header_timeout_in_ms: int, rest_api_idle_timeout_in_ms: int,
          rest_api_max_connections: int, rest_api_max_idle_connections: int,
          rest_api_pressure_idle_timeout_in_ms: int, request_budget_bytes: int,
          model_load_failure_file: Optional[str],
          monitoring_config_file: Optional[str],
          request_log_dir: Optional[str], enable_model_warmup: bool,
          rest_api_num_threads: int, grpc_max_threads: int,
          tensorflow_session_config_file: Optional[str],
          tensorflow_intra_op_parallelism: int, tensorflow_inter_op_parallelism: int) -> None:
    """Serves SavedModels over TF Serving's REST and gRPC APIs (tensorflow_model_server's flags)."""
    _configure_logging()
    # Request threads hand work to batch threads and back; a short GIL switch interval keeps
    # those hand-offs from waiting out CPython's default 5 ms under load.
    sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)
    from hyperrec.serving import config, load_failures
    try:
        session_config = config.read_session_config_file(tensorflow_session_config_file)
    except config.ConfigError as err:
        raise click.UsageError(str(err)) from err
    _configure_tensorflow(session_config, tensorflow_intra_op_parallelism,
                          tensorflow_inter_op_parallelism)
    from hyperrec.serving.server import ModelServer, options_from_flags
    try:
        options = options_from_flags(
            model_name, model_base_path, model_config_file, host=host,
            grpc_port=port, rest_port=rest_api_port or None,
            batching=config.batching_options(enable_batching, batching_parameters_file),
            monitoring=config.read_monitoring_config_file(monitoring_config_file),
            poll_seconds=file_system_poll_wait_seconds,
            config_poll_seconds=model_config_file_poll_wait_seconds,
            http=http_limits.HttpLimits(max_request_bytes=rest_api_max_request_bytes,
                                        max_decompressed_bytes=rest_api_max_decompressed_bytes,
                                        header_timeout_s=rest_api_header_timeout_in_ms / 1000,
                                        idle_timeout_s=rest_api_idle_timeout_in_ms / 1000,
                                        max_connections=rest_api_max_connections,
                                        max_idle_connections=rest_api_max_idle_connections,
                                        pressure_idle_timeout_s=(
                                            rest_api_pressure_idle_timeout_in_ms / 1000),
                                        request_budget_bytes=request_budget_bytes),
            load_failure_file=(load_failures.default_path() if model_load_failure_file is None
                               else model_load_failure_file or None),
            request_log_dir=request_log_dir,
            enable_warmup=enable_model_warmup, grpc_max_threads=grpc_max_threads,
            rest_api_num_threads=rest_api_num_threads)
    except config.ConfigError as err:
        raise click.UsageError(str(err)) from err
    server = ModelServer(options)

    def shut_down(signum, frame):  # SIGTERM from docker/kubernetes, SIGINT from a terminal
        logging.getLogger("serving").info("signal %d: shutting down", signum)
        server.stop()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    try:
        server.start()
    except (OSError, RuntimeError) as err:  # e.g. a port already in use
        server.stop()
        raise click.ClickException(f"cannot start the server: {err}") from err
    # Everything imported and loaded so far lives as long as the process: move it out of the
    # collector's reach, so full collections (TensorFlow's object graph is large) stay short.
    gc.freeze()
    while not server.wait(0.5):  # short waits keep the main thread responsive to signals
        pass


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


COMMANDS = (serve, recommend, predict, promote, rollback)


def register(group: click.Group) -> None:
    """Adds the serving commands to a click group (the `hyperrec` command)."""
    for command in COMMANDS:
        group.add_command(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Serving commands: serve, recommend, predict, promote, rollback."""


register(cli)

if __name__ == "__main__":
    cli()
