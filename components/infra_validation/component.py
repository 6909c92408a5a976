"""InfraValidator: the candidate in a fresh model-server process, between the evaluators and
the Pusher.

TFX's own InfraValidator starts the stock tensorflow/serving binary through Docker or
Kubernetes; this one starts `python -m hyperrec.serving` (the same REST and gRPC APIs) as a
child process, so it runs wherever the pipeline runs (probe.py has the checks).

Inputs: the candidate `model`, and optionally the evaluators' `model_blessing`: a candidate
the evaluators refused is not served (the blessing says so; it would not be pushed anyway).
Output: `blessing`, TFX's standard InfraBlessing written as TFX's InfraValidator writes it
(the `blessed` custom property 1/0, an INFRA_BLESSED / INFRA_NOT_BLESSED file), plus the
`reason` (for a refusal, the failed check first: "load: ...", "memory: ...", "shape: ...",
"mismatch: ..."), the measured numbers as float properties (load_seconds,
first_request_ms, rest_p50_ms, rest_p99_ms, grpc_p50_ms, grpc_p99_ms, peak_rss_mb,
memory_limit_mb) and infra_validation.json with everything, the server log's tail included.
The Pusher (components/pusher.py) pushes only a model with both blessings.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from typing import Any, Dict, List

from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils, path_utils

from hyperrec.components import config as config_lib
from hyperrec.components.infra_validation import probe

MODEL = "model"
MODEL_BLESSING = "model_blessing"
BLESSING = "blessing"
CONFIG = "config"
REPORT_FILE = "infra_validation.json"
REASON = "reason"
BLESSED = "blessed"  # TFX's InfraValidator property, read by model_utils.is_infra_validated
BLESSED_FILE, NOT_BLESSED_FILE = "INFRA_BLESSED", "INFRA_NOT_BLESSED"  # as TFX names them


def executor_config(code_fingerprint: str = "", **settings: Any) -> str:
    """The `config` property: probe.Settings fields (unset: their defaults) and the code
    digest, so a change of the checks is not answered from the cache."""
    return json.dumps({**dataclasses.asdict(probe.Settings(**settings)),
                       "code_fingerprint": code_fingerprint}, sort_keys=True)


class InfraValidatorSpec(types.ComponentSpec):
    PARAMETERS = {CONFIG: ExecutionParameter(type=str)}
    INPUTS = {
        MODEL: ChannelParameter(type=standard_artifacts.Model),
        MODEL_BLESSING: ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
    }
    OUTPUTS = {BLESSING: ChannelParameter(type=standard_artifacts.InfraBlessing)}


def write_blessing(blessing: types.Artifact, report: probe.Report) -> None:
    """The InfraBlessing as TFX's InfraValidator leaves it, plus the reason and numbers."""
    io_utils.write_string_file(
        os.path.join(blessing.uri, BLESSED_FILE if report.blessed else NOT_BLESSED_FILE), "")
    io_utils.write_string_file(os.path.join(blessing.uri, REPORT_FILE),
                               json.dumps(dataclasses.asdict(report), indent=1))
    blessing.set_int_custom_property(BLESSED, int(report.blessed))
    blessing.set_string_custom_property(REASON, report.reason)
    for name, value in report.numbers().items():
        blessing.set_float_custom_property(name, value)


class Executor(base_executor.BaseExecutor):
    """Serves the candidate and writes the InfraBlessing (module docstring)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        settings = config_lib.from_dict(probe.Settings, json.loads(exec_properties.get(CONFIG) or "{}"))
        model = artifact_utils.get_single_instance(input_dict[MODEL])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING])
        evaluators = input_dict.get(MODEL_BLESSING) or []
        if evaluators and not model_utils.is_model_blessed(
                artifact_utils.get_single_instance(evaluators)):
            report = probe.Report(memory_limit_mb=settings.memory_limit_mb,
                                  refusal_kind="not_evaluated",
                                  reason="not_evaluated: the evaluators did not bless the "
                                  "model, so it was not served")
        else:
            model_dir = path_utils.serving_model_path(model.uri)
            with tempfile.TemporaryDirectory(prefix="infra-validation-") as workdir:
                report = probe.validate(model_dir, settings, workdir)
        verdict = "INFRA BLESSED" if report.blessed else "INFRA NOT BLESSED"
        message = f"InfraValidator: {verdict}: {report.reason}"
        print(message, flush=True)
        logging.info(message)
        write_blessing(blessing, report)


class InfraValidator(base_component.BaseComponent):
    """See the module docstring."""

    SPEC_CLASS = InfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, config: str,
                 model_blessing: types.BaseChannel = None):
        super().__init__(spec=InfraValidatorSpec(
            model=model, model_blessing=model_blessing, config=config,
            blessing=types.Channel(type=standard_artifacts.InfraBlessing)))
