"""The model server: manager, REST and gRPC listeners, metrics and request log, wired up.

`ModelServer(options).start()` loads the initial versions (so the ports open ready to
answer), then listens; `stop()` closes the ports and the batch threads. Listeners bind to
127.0.0.1 unless told otherwise: exposing the server is a deliberate choice.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Callable, List, Optional

from hyperrec.serving import config
from hyperrec.serving.config import BatchingOptions, ModelSettings, MonitoringOptions
from hyperrec.serving.grpc_api import GrpcServer
from hyperrec.serving.http_limits import HttpLimits
from hyperrec.serving.http_server import RestServer
from hyperrec.serving.load_failures import LoadFailureRecord
from hyperrec.serving.manager import ModelManager
from hyperrec.serving.metrics import ServingMetrics
from hyperrec.serving.request_log import RequestLogWriter
from hyperrec.serving.request_tracking import RequestTracker
from hyperrec.serving.rest_api import RestApi

LOG = logging.getLogger("serving.server")
LOOPBACK = "127.0.0.1"


@dataclasses.dataclass
class ServerOptions:
    """Everything a server needs; ports: None disables a listener, 0 picks a free port."""
    models: List[ModelSettings]
    host: str = LOOPBACK
    grpc_port: Optional[int] = 8500
    rest_port: Optional[int] = 8501
    batching: Optional[BatchingOptions] = None
    monitoring: MonitoringOptions = MonitoringOptions()
    poll_seconds: float = 1.0
    config_source: Optional[Callable[[], List[ModelSettings]]] = None
    config_poll_seconds: float = 0.0
    http: HttpLimits = HttpLimits()  # the REST port's; max_request_bytes and the request
    # budget bound gRPC too
    load_failure_file: Optional[str] = None
    request_log_dir: Optional[str] = None
    request_log_max_file_bytes: int = 64 * 1024 * 1024
    enable_warmup: bool = True
    grpc_max_threads: int = 64
    rest_api_num_threads: int = 64


class ModelServer:
    """A TF-Serving-API model server living in this process."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.metrics = ServingMetrics()
        self.request_log = (RequestLogWriter(options.request_log_dir,
                                             options.request_log_max_file_bytes)
                            if options.request_log_dir else None)
        self.manager = ModelManager(
            options.models, batching=options.batching, poll_seconds=options.poll_seconds,
            metrics=self.metrics, enable_warmup=options.enable_warmup,
            config_source=options.config_source,
            config_poll_seconds=options.config_poll_seconds,
            failure_record=(LoadFailureRecord(options.load_failure_file)
                            if options.load_failure_file else None))
        self.tracker = RequestTracker(self.metrics, self.request_log)
        self._grpc: Optional[GrpcServer] = None
        self._rest: Optional[RestServer] = None
        self._stopped = threading.Event()

    @property
    def grpc_port(self) -> Optional[int]:
        return self._grpc.port if self._grpc else None

    @property
    def rest_port(self) -> Optional[int]:
        return self._rest.port if self._rest else None

    def start(self) -> "ModelServer":
        self.manager.start()
        options = self.options
        if options.grpc_port is not None:
            self._grpc = GrpcServer(options.host, options.grpc_port, self.manager, self.tracker,
                                    max_workers=options.grpc_max_threads,
                                    max_message_bytes=options.http.max_request_bytes,
                                    request_budget_bytes=options.http.request_budget_bytes)
            self._grpc.start()
            LOG.info("Running gRPC ModelServer at %s:%d ...", options.host, self._grpc.port)
        if options.rest_port is not None:
            self._rest = RestServer(options.host, options.rest_port,
                                    RestApi(self.manager, self.tracker,
                                            options.http.request_budget_bytes), self.metrics,
                                    options.monitoring, options.http,
                                    num_threads=options.rest_api_num_threads)
            self._rest.start()
            LOG.info("Exporting HTTP/REST API at:%s:%d ...", options.host, self._rest.port)
        self.manager.enable_retries()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._rest is not None:
            self._rest.stop()
        if self._grpc is not None:
            self._grpc.stop()
        self.manager.stop()
        if self.request_log is not None:
            self.request_log.close()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Blocks until stop() (e.g. from a signal handler) or `timeout`; True once stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def options_from_flags(model_name: str, model_base_path: Optional[str],
                       model_config_file: Optional[str], **kwargs) -> ServerOptions:
    """ServerOptions from tensorflow_model_server-style flag values."""
    if model_config_file:
        models = config.read_model_config_file(model_config_file)
        kwargs.setdefault("config_source",
                          lambda: config.read_model_config_file(model_config_file))
    else:
        models = config.single_model(model_name, model_base_path)
    return ServerOptions(models=models, **kwargs)
