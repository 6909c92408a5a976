"""Reading tensorflow_model_server's config files into the server's settings.

The server accepts the same three text-format files as the stock binary:
- `--model_config_file`: a `tensorflow.serving.ModelServerConfig` (models, base paths,
  version policy, version labels); without it `--model_name`/`--model_base_path` describe one
  model, exactly as `BuildSingleModelConfig` does in TF Serving;
- `--batching_parameters_file`: a `BatchingParameters`;
- `--monitoring_config_file`: a `MonitoringConfig` (Prometheus endpoint).
"""
from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Sequence, Tuple

from google.protobuf import text_format
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.config import model_server_config_pb2

from hyperrec.serving import config_protos

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
TENSORFLOW_PLATFORM = "tensorflow"


class ConfigError(ValueError):
    """A config file that tensorflow_model_server would refuse to start with."""


def _read_text_proto(path: str, message):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err}") from err
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise ConfigError(f"Invalid protobuf file: '{path}': {err}") from err


# ---- models -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model should be served: `latest` N, `all`, or `specific` ones."""
    kind: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1  # for "latest"
    versions: Tuple[int, ...] = ()  # for "specific"

    def choose(self, ready_versions: Sequence[int]) -> List[int]:
        """The versions to serve out of those ready on disk, newest first."""
        newest_first = sorted(set(ready_versions), reverse=True)
        if self.kind == "all":
            return newest_first
        if self.kind == "specific":
            return [v for v in newest_first if v in self.versions]
        return newest_first[:max(self.num_versions, 1)]


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """One served model: its name, base path, version policy and version labels."""
    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: Tuple[Tuple[str, int], ...] = ()

    def label_map(self) -> dict:
        return dict(self.labels)


def _policy_from_proto(model_config) -> VersionPolicy:
    policy = model_config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy(kind="all")
    if which == "specific":
        if not policy.specific.versions:
            raise ConfigError(f"model {model_config.name}: specific policy lists no versions")
        return VersionPolicy(kind="specific", versions=tuple(policy.specific.versions))
    if which == "latest" and policy.latest.num_versions > 0:
        return VersionPolicy(kind="latest", num_versions=policy.latest.num_versions)
    return VersionPolicy()


def models_from_proto(config) -> List[ModelSettings]:
    """The models of a ModelServerConfig message, validated like TF Serving validates them."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError("ModelServer does not yet support custom model config.")
    models = []
    seen = set()
    for model_config in config.model_config_list.config:
        if not model_config.name:
            raise ConfigError("a model config has no name")
        if model_config.name in seen:
            raise ConfigError(f"Illegal to list model {model_config.name} multiple times")
        if not model_config.base_path:
            raise ConfigError(f"model {model_config.name} has no base_path")
        platform = model_config.model_platform or TENSORFLOW_PLATFORM
        if platform != TENSORFLOW_PLATFORM:
            raise ConfigError(f"model {model_config.name}: unsupported platform {platform}")
        seen.add(model_config.name)
        labels = tuple(sorted(model_config.version_labels.items()))
        models.append(ModelSettings(
            name=model_config.name, base_path=os.path.abspath(model_config.base_path),
            policy=_policy_from_proto(model_config), labels=labels))
    return models


def read_model_config_file(path: str) -> List[ModelSettings]:
    """The models of a text-format ModelServerConfig file (`--model_config_file`)."""
    return models_from_proto(_read_text_proto(path, model_server_config_pb2.ModelServerConfig()))


def single_model(name: str, base_path: str) -> List[ModelSettings]:
    """`--model_name`/`--model_base_path`: one model, latest version (BuildSingleModelConfig)."""
    if not base_path:
        raise ConfigError("--model_base_path is required unless --model_config_file is given")
    return [ModelSettings(name=name, base_path=os.path.abspath(base_path))]


# ---- batching -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """Request batching knobs, with TF Serving's defaults (BasicBatchScheduler::Options).

    A batch closes when it holds `max_batch_size` rows or its first request has waited
    `batch_timeout_micros`; `num_batch_threads` batches run at once; at most
    `max_enqueued_batches` wait (more is UNAVAILABLE). `allowed_batch_sizes` pads a batch up
    to the next allowed size; `pad_variable_length_inputs` pads unequal non-batch dimensions
    with each tensor's first element, as TF Serving does.
    """
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = max(os.cpu_count() or 1, 1)
    allowed_batch_sizes: Tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: Optional[int] = None  # with splitting: the size batches run at
    thread_pool_name: str = "model_server_batch_threads"

    @property
    def execution_batch_size(self) -> int:
        """How many rows one batch may hold (a split request fills several batches)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    def validate(self) -> "BatchingOptions":
        if self.max_batch_size < 1 or self.execution_batch_size < 1:
            raise ConfigError("max_batch_size must be positive")
        if self.num_batch_threads < 1:
            raise ConfigError("num_batch_threads must be positive")
        if self.max_enqueued_batches < 1:
            raise ConfigError("max_enqueued_batches must be positive")
        if self.batch_timeout_micros < 0:
            raise ConfigError("batch_timeout_micros must be non-negative")
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if sizes != sorted(set(sizes)) or sizes[0] < 1:
                raise ConfigError("allowed_batch_sizes entries must be increasing positive sizes")
            if sizes[-1] != self.execution_batch_size:
                raise ConfigError("The last entry in allowed_batch_sizes must match "
                                  "max_batch_size; last entry was "
                                  f"{sizes[-1]}; expected {self.execution_batch_size}")
        return self


def batching_from_proto(params) -> BatchingOptions:
    defaults = BatchingOptions()
    values = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads", "thread_pool_name", "enable_large_batch_splitting"):
        if params.HasField(name):
            values[name] = getattr(params, name).value
    if params.HasField("max_execution_batch_size"):
        values["max_execution_batch_size"] = params.max_execution_batch_size.value
    values["allowed_batch_sizes"] = tuple(params.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = params.pad_variable_length_inputs
    return dataclasses.replace(defaults, **values).validate()


def read_batching_parameters_file(path: str) -> BatchingOptions:
    """A text-format BatchingParameters file (`--batching_parameters_file`)."""
    return batching_from_proto(_read_text_proto(path, config_protos.BatchingParameters()))


def batching_options(enable_batching: bool, parameters_file: Optional[str]
                     ) -> Optional[BatchingOptions]:
    """Batching as tensorflow_model_server's flags configure it (None: batching off)."""
    if not enable_batching:
        if parameters_file:
            raise ConfigError("You supplied --batching_parameters_file without --enable_batching")
        return None
    if parameters_file:
        return read_batching_parameters_file(parameters_file)
    return BatchingOptions()


# ---- monitoring ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MonitoringOptions:
    """Where (and whether) the REST port exports Prometheus metrics."""
    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


def read_monitoring_config_file(path: Optional[str]) -> MonitoringOptions:
    """A text-format MonitoringConfig file (`--monitoring_config_file`); None: metrics off."""
    if not path:
        return MonitoringOptions()
    config = _read_text_proto(path, config_protos.MonitoringConfig())
    prometheus = config.prometheus_config
    return MonitoringOptions(prometheus_enabled=prometheus.enable,
                             prometheus_path=prometheus.path or DEFAULT_PROMETHEUS_PATH)


# ---- TensorFlow session -----------------------------------------------------------------------

def read_session_config_file(path: Optional[str]) -> Optional[config_pb2.ConfigProto]:
    """A text-format TensorFlow ConfigProto (`--tensorflow_session_config_file`); None: defaults."""
    if not path:
        return None
    return _read_text_proto(path, config_pb2.ConfigProto())


# ---- moving version labels (promote / roll back a canary) ---------------------------------

def read_model_server_config(path: str):
    """The ModelServerConfig message of a `--model_config_file`."""
    return _read_text_proto(path, model_server_config_pb2.ModelServerConfig())


def _model_config(config, path: str, model_name: str):
    for model_config in config.model_config_list.config:
        if model_config.name == model_name:
            return model_config
    raise ConfigError(f"{path}: no model named {model_name!r}")


def version_labels(path: str, model_name: str) -> dict:
    """{label: version} of one model in a models.config file."""
    return dict(_model_config(read_model_server_config(path), path, model_name).version_labels)


def move_label(path: str, model_name: str, label: str, to_label: str) -> Tuple[int, int]:
    """Points `label` at the version `to_label` names and rewrites the file; returns (the
    version `label` named before (0: none), the version it names now).

    The file is written next to itself and renamed over it, so a server re-reading it
    (`--model_config_file_poll_wait_seconds`) sees the old file or the new one, never a
    torn one. It is written by the protos, so comments in it are not kept.
    """
    config = read_model_server_config(path)
    model_config = _model_config(config, path, model_name)
    labels = model_config.version_labels
    if to_label not in labels:
        raise ConfigError(f"{path}: model {model_name!r} has no {to_label!r} label "
                          f"(labels: {dict(labels) or 'none'})")
    before, after = labels.get(label, 0), labels[to_label]
    labels[label] = after
    staging = f"{path}.tmp-{os.getpid()}"
    with open(staging, "w", encoding="utf-8") as handle:
        handle.write(text_format.MessageToString(config))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
    return before, after
