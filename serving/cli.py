"""`serve`, the model server's command line: tensorflow_model_server's flag names
(`--port=8500`, `--enable_batching=true`, `--model_config_file=...`), so the same command
lines and config files work with the stock binary and with this server. `python -m
hyperrec.serving` runs it; `hyperrec serve` (pipeline/cli/serve.py) too.
"""
from __future__ import annotations

import hyperrec.serving  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

import argparse
import gc
import logging
import os
import signal
import sys
from typing import Optional, Sequence

from hyperrec.serving import http_limits
from hyperrec.serving.client import DEFAULT_MODEL_NAME

_LOOPBACK = "127.0.0.1"
_GIL_SWITCH_INTERVAL_S = 0.0005


def _flag_bool(value: str) -> bool:
    """A bool flag also accepting tensorflow_model_server's `--flag=true|false` spelling."""
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes", "y", "on"):
        return True
    if text in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean")


def _existing_file(value: str) -> str:
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"file {value!r} does not exist")
    return value


def parser(prog: str = "python -m hyperrec.serving") -> argparse.ArgumentParser:
    """tensorflow_model_server's flags this server takes (and a few of its own)."""
    flags = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serves SavedModels over TF Serving's REST and gRPC APIs "
                    "(tensorflow_model_server's flags).")
    add = flags.add_argument

    def add_bool(name: str, default: bool, help_text: str) -> None:
        add(name, type=_flag_bool, nargs="?", const=True, default=default, metavar="BOOL",
            help=help_text)

    def add_ms(name: str, default_s: float, help_text: str) -> None:
        """A duration flag in milliseconds, its default given in seconds."""
        add(name, type=int, default=int(default_s * 1000), help=help_text)

    add("--model_name", default=DEFAULT_MODEL_NAME,
        help="Name of the model (ignored with --model_config_file).")
    add("--model_base_path", default=None,
        help="Directory of integer version sub-directories (the pusher's output).")
    add("--port", type=int, default=8500, help="gRPC port (0: any free port).")
    add("--rest_api_port", type=int, default=8501,
        help="REST port (0 disables REST, as in tensorflow_model_server).")
    add("--host", default=_LOOPBACK,
        help="Address to bind; loopback unless you mean to expose the server.")
    add("--model_config_file", type=_existing_file, default=None,
        help="Text ModelServerConfig: models, version policy, version labels.")
    add("--model_config_file_poll_wait_seconds", type=float, default=0.0,
        help="Re-read --model_config_file this often (0: never).")
    add_bool("--enable_batching", False, "Batch concurrent requests per signature.")
    add("--batching_parameters_file", type=_existing_file, default=None,
        help="Text BatchingParameters (needs --enable_batching).")
    add("--file_system_poll_wait_seconds", type=float, default=1.0,
        help="Seconds between scans of the base paths for new versions (0: only at start).")
    add("--rest_api_max_request_bytes", type=int, default=0,
        help="Largest request body accepted (413 above it; also caps gRPC). 0: no limit.")
    add("--rest_api_max_decompressed_bytes", type=int,
        default=http_limits.DEFAULT_MAX_DECOMPRESSED_BYTES,
        help="Largest gzip request body once inflated (413 above it; checked while "
        "inflating). 0: no limit.")
    add_ms("--rest_api_header_timeout_in_ms", http_limits.DEFAULT_HEADER_TIMEOUT_S,
           "A request's line and headers must arrive within this of its first byte, and its "
           "body may not pause longer (408).")
    add_ms("--rest_api_idle_timeout_in_ms", http_limits.DEFAULT_IDLE_TIMEOUT_S,
           "Close a keep-alive REST connection idle this long.")
    add("--rest_api_max_connections", type=int, default=http_limits.DEFAULT_MAX_CONNECTIONS,
        help="Open REST connections; a new one beyond it closes the oldest idle one, "
        "or, when none is idle, is answered 503 and closed.")
    add("--rest_api_max_idle_connections", type=int,
        default=http_limits.DEFAULT_MAX_IDLE_CONNECTIONS,
        help="REST connections waiting for a request; beyond it the oldest idle one is "
        "closed, and above half of it the idle timeout shrinks.")
    add_ms("--rest_api_pressure_idle_timeout_in_ms",
           http_limits.DEFAULT_PRESSURE_IDLE_TIMEOUT_S,
           "The idle timeout when --rest_api_max_idle_connections connections are idle (it "
           "falls to this linearly from half of them).")
    add(http_limits.REQUEST_BUDGET_FLAG, dest="request_budget_bytes", type=int,
        default=http_limits.DEFAULT_REQUEST_BUDGET_BYTES,
        help="Per-request budget, REST and gRPC: the estimated memory of decoding a "
        "request's inputs (values x bytes + its bytes), priced before decoding; over it "
        "REST answers 413 and gRPC RESOURCE_EXHAUSTED. 0: none.")
    add("--model_load_failure_file", default=None,
        help="JSON file remembering versions that failed to load (by content digest), "
        "so a restart serves the good ones without loading those first [default: "
        "$XDG_CACHE_HOME/hyperrec/serving_load_failures.json]; '' disables.")
    add("--monitoring_config_file", type=_existing_file, default=None,
        help="Text MonitoringConfig enabling the Prometheus endpoint.")
    add("--request_log_dir", default=None,
        help="Append every request and response (PredictionLog TFRecords) here.")
    add_bool("--enable_model_warmup", True,
             "Replay assets.extra/tf_serving_warmup_requests before serving a version.")
    add("--rest_api_num_threads", type=int, default=64,
        help="Threads running REST requests' model calls (a batch never holds more "
        "REST requests than this) and large bodies' JSON; HTTP and small requests' JSON "
        "run on one event-loop thread.")
    add("--grpc_max_threads", type=int, default=64,
        help="Threads serving gRPC calls (a batch cannot be larger than this).")
    add("--tensorflow_session_config_file", type=_existing_file, default=None,
        help="Text TensorFlow ConfigProto for the runtime (thread pools, spinning, ...); "
        "the two flags below override its thread counts.")
    add("--tensorflow_intra_op_parallelism", type=int, default=0,
        help="Threads inside one op (0: TensorFlow picks, about the core count).")
    add("--tensorflow_inter_op_parallelism", type=int, default=0,
        help="Ops run concurrently (0: TensorFlow picks).")
    return flags


def parse_flags(argv: Optional[Sequence[str]] = None,
                prog: str = "python -m hyperrec.serving") -> argparse.Namespace:
    return parser(prog).parse_args(argv)


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
            raise ValueError(
                f"--tensorflow_session_config_file applied too late: {err}") from err
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s")


def serve(argv: Optional[Sequence[str]] = None, prog: str = "python -m hyperrec.serving") -> None:
    """Serves SavedModels over TF Serving's REST and gRPC APIs (tensorflow_model_server's
    flags, `argv`; default sys.argv). A bad flag exits 2 with its reason, as argparse does."""
    flags_parser = parser(prog)
    flags = flags_parser.parse_args(argv)
    _configure_logging()
    # Request threads hand work to batch threads and back; a short GIL switch interval keeps
    # those hand-offs from waiting out CPython's default 5 ms under load.
    sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)
    from hyperrec.serving import config, load_failures
    try:
        session_config = config.read_session_config_file(flags.tensorflow_session_config_file)
    except config.ConfigError as err:
        flags_parser.error(str(err))
    try:
        _configure_tensorflow(session_config, flags.tensorflow_intra_op_parallelism,
                              flags.tensorflow_inter_op_parallelism)
    except ValueError as err:
        flags_parser.error(str(err))
    from hyperrec.serving.server import ModelServer, options_from_flags
    try:
        options = options_from_flags(
            flags.model_name, flags.model_base_path, flags.model_config_file, host=flags.host,
            grpc_port=flags.port, rest_port=flags.rest_api_port or None,
            batching=config.batching_options(flags.enable_batching,
                                             flags.batching_parameters_file),
            monitoring=config.read_monitoring_config_file(flags.monitoring_config_file),
            poll_seconds=flags.file_system_poll_wait_seconds,
            config_poll_seconds=flags.model_config_file_poll_wait_seconds,
            http=http_limits.HttpLimits(
                max_request_bytes=flags.rest_api_max_request_bytes,
                max_decompressed_bytes=flags.rest_api_max_decompressed_bytes,
                header_timeout_s=flags.rest_api_header_timeout_in_ms / 1000,
                idle_timeout_s=flags.rest_api_idle_timeout_in_ms / 1000,
                max_connections=flags.rest_api_max_connections,
                max_idle_connections=flags.rest_api_max_idle_connections,
                pressure_idle_timeout_s=flags.rest_api_pressure_idle_timeout_in_ms / 1000,
                request_budget_bytes=flags.request_budget_bytes),
            load_failure_file=(load_failures.default_path()
                               if flags.model_load_failure_file is None
                               else flags.model_load_failure_file or None),
            request_log_dir=flags.request_log_dir,
            enable_warmup=flags.enable_model_warmup, grpc_max_threads=flags.grpc_max_threads,
            rest_api_num_threads=flags.rest_api_num_threads)
    except config.ConfigError as err:
        flags_parser.error(str(err))
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
        print(f"error: cannot start the server: {err}", file=sys.stderr)
        sys.exit(1)
    # Everything imported and loaded so far lives as long as the process: move it out of the
    # collector's reach, so full collections (TensorFlow's object graph is large) stay short.
    gc.freeze()
    while not server.wait(0.5):  # short waits keep the main thread responsive to signals
        pass


if __name__ == "__main__":
    serve()
