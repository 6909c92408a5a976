"""Kubeflow Pipelines (v2 / Vertex AI Pipelines): compiles the pipeline with
KubeflowV2DagRunner (one spec, every task in the given image) and submits a compiled run.

Nothing in the spec refers to the compiling machine: data, pipeline root and serving base
path are URIs the cluster reads, and the curated schema is named by its path inside the
image (IMAGE_PROJECT_ROOT is the Dockerfile's WORKDIR, where `schemas/` is copied).
KFP brings its own MLMD, so no metadata connection is compiled in.

`submit` (and `KubeflowRunner`, which holds the cluster settings for the retraining trigger)
compiles the bare PipelineSpec YAML that KFP uploads and either sends it to a KFP endpoint with
kfp.Client, or, with no endpoint, leaves it beside `submit.sh`, the `kfp run create` command
that would send it. Data and pipeline roots are passed through as given: a gs:// or s3:// root
is never looked for on this disk.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import posixpath
import re
import shlex
import stat
import urllib.error
import urllib.request
import warnings
from typing import Any, List, Mapping, Optional

import yaml
from tfx import version as tfx_version
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from hyperrec.components.config import HyperrecConfig
from hyperrec.pipeline import beam as beam_lib
from hyperrec.pipeline import pipeline as pipeline_def

# The Dockerfile's WORKDIR: the project (code and schemas/) lives here inside the image.
IMAGE_PROJECT_ROOT = "/hyperrec"
SPEC_FILE = "pipeline.yaml"
SUBMIT_SCRIPT = "submit.sh"
ENDPOINT_VARIABLE = "KFP_ENDPOINT"
_URI = re.compile(r"^[a-z][a-z0-9+.\-]*://[^\s]+$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


class KubeflowCompileError(ValueError):
    """An argument would make the compiled spec unrunnable on a cluster."""


class KubeflowSubmitError(RuntimeError):
    """The KFP endpoint did not accept the run (unreachable, refused, or an API error)."""


def image_schema_path(config: HyperrecConfig) -> str:
    """Where the curated schema of `config` is inside the pipeline image."""
    return posixpath.join(IMAGE_PROJECT_ROOT, config.schema_file)


def _check_uri(flag: str, value: str) -> None:
    if not _URI.match(value or ""):
        raise KubeflowCompileError(
            f"{flag} must be a URI the cluster can read (gs://..., s3://...), got {value!r}: "
            "a path on this machine means nothing inside the cluster's containers")


def compile_pipeline(config: HyperrecConfig, *, image: str, pipeline_root: str,
                     data_root: str, serving_dir: str, output_path: str,
                     beam: Optional[beam_lib.BeamSettings] = None,
                     tasks_run_here: bool = False) -> str:
    """Writes the pipeline to `output_path` and returns the path: a KFP PipelineJob (.json)
    or the bare PipelineSpec that KFP uploads (.yaml). Both name `pipeline_root` as the
    default pipeline root, so an uploaded spec runs where it was compiled for.

    `tasks_run_here`: the tasks are started on this machine (the container-entrypoint test),
    so the roots may be local paths; a cluster spec takes URIs only.
    """
    if not _IMAGE.match(image or ""):
        raise KubeflowCompileError(f"--image must be an image reference, got {image!r}")
    if not tasks_run_here:
        _check_uri("--pipeline-root", pipeline_root)
        _check_uri("--data-root", data_root)
        _check_uri("--serving-dir", serving_dir)
    common_args, ingest_args = beam_lib.pipeline_args(beam or beam_lib.from_config(config))
    pipeline = pipeline_def.create_pipeline(
        config, data_root=data_root, pipeline_root=pipeline_root, serving_dir=serving_dir,
        schema_path=image_schema_path(config), beam_pipeline_args=common_args,
        ingest_beam_pipeline_args=ingest_args, builtin_resolvers_only=True)
    output_path = os.path.abspath(output_path)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(output_path), output_filename=os.path.basename(output_path))
    job = runner.run(pipeline, write_out=False)
    # The YAML carries no runtimeConfig: without this, `kfp run create` would need the
    # root on every submission (the CLI has no flag for it).
    job["pipelineSpec"]["defaultPipelineRoot"] = pipeline_root
    os.makedirs(os.path.dirname(output_path), exist_ok=True)
    # TFX's own writer: the JSON PipelineJob, or the YAML with KFP's comment header.
    kubeflow_v2_dag_runner._write_pipeline_spec_to_file(  # pylint: disable=protected-access
        job, f"This is converted from TFX pipeline from tfx-{tfx_version.__version__}.",
        output_path)
    return output_path


# ---- submit ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    """What `submit` did. `submitted` is False when no endpoint was set: then `command`
    (also in `script`) is what would submit `spec_path`, with $KFP_ENDPOINT to fill in."""
    submitted: bool
    spec_path: str
    script: str
    command: List[str]
    run_name: str
    endpoint: str = ""
    run_id: str = ""
    run_url: str = ""
    experiment_id: str = ""


def submit_command(spec_path: str, *, run_name: str, experiment_name: str,
                   parameters: Mapping[str, Any], endpoint: str = "") -> List[str]:
    """The kfp CLI line that submits `spec_path` (kfp's own client behind it)."""
    return (["kfp", "--endpoint", endpoint or f"${ENDPOINT_VARIABLE}", "run", "create",
             "--experiment-name", experiment_name, "--run-name", run_name,
             "--package-file", spec_path]
            + [f"{name}={value}" for name, value in sorted(parameters.items())])


def _write_script(path: str, command: List[str]) -> None:
    endpoint = f"${ENDPOINT_VARIABLE}"
    quoted = " ".join(f'"${{{ENDPOINT_VARIABLE}:?set {ENDPOINT_VARIABLE} to the Kubeflow '
                      'Pipelines API, e.g. https://HOST/pipeline}"' if part == endpoint
                      else shlex.quote(part) for part in command)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n# Submits the compiled hyperrec run beside this file to Kubeflow "
                f"Pipelines (kfp=={_kfp_version()}).\n# Usage: {ENDPOINT_VARIABLE}=https://HOST"
                f"/pipeline sh {os.path.basename(path)}\nset -eu\nexec {quoted}\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _kfp_version() -> str:
    import kfp
    return kfp.__version__


def _check_parameters(spec_path: str, parameters: Mapping[str, Any]) -> None:
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    accepted = set(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))
    unknown = sorted(set(parameters) - accepted)
    if unknown:
        raise KubeflowCompileError(
            f"the pipeline takes no run parameter {', '.join(unknown)} (it takes: "
            f"{', '.join(sorted(accepted)) or 'none'})")


def _reachable(endpoint: str, timeout: float) -> None:
    """kfp.Client retries an unreachable host for half a minute; fail at once instead."""
    url = endpoint.rstrip("/") + "/apis/v2beta1/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # something answers there: kfp.Client names what is wrong
    except (urllib.error.URLError, OSError) as err:
        raise KubeflowSubmitError(f"Kubeflow Pipelines at {endpoint} is unreachable: "
                                  f"{getattr(err, 'reason', err)}") from err


def _client_submit(endpoint: str, spec_path: str, *, run_name: str, experiment_name: str,
                   pipeline_root: str, parameters: Mapping[str, Any], timeout: float):
    _reachable(endpoint, timeout)
    import kfp  # only this path needs the client
    printed = io.StringIO()  # kfp.Client prints its run link; ours is in the result
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0b2"
            client = kfp.Client(host=endpoint)
            return client.create_run_from_pipeline_package(
                spec_path, arguments=dict(parameters), run_name=run_name,
                experiment_name=experiment_name, pipeline_root=pipeline_root)
    except Exception as err:  # noqa: BLE001 (kfp raises ApiException, urllib3 and ValueError)
        raise KubeflowSubmitError(f"Kubeflow Pipelines at {endpoint}: "
                                  f"{type(err).__name__}: {err}") from err


def submit(config: HyperrecConfig, *, data_root: str, pipeline_root: str, serving_dir: str,
           image: str, out_dir: str, run_name: str, endpoint: str = "",
           experiment_name: str = "hyperrec", parameters: Optional[Mapping[str, Any]] = None,
           beam: Optional[beam_lib.BeamSettings] = None, timeout: float = 30.0
           ) -> SubmitResult:
    """Compiles `config` for `data_root` into OUT_DIR/RUN_NAME/pipeline.yaml with submit.sh
    beside it, then, when `endpoint` is set, creates the run there (kfp.Client) under
    `experiment_name`. The roots must be URIs the cluster reads (gs://, s3://, ...); they
    are not looked for here. Raises KubeflowCompileError for a bad argument and
    KubeflowSubmitError when the endpoint does not take the run."""
    if not _RUN_NAME.match(run_name or ""):
        raise KubeflowCompileError(f"run name must be letters, digits, '.', '_' or '-', "
                                   f"got {run_name!r}")
    parameters = dict(parameters or {})
    run_dir = os.path.abspath(os.path.join(out_dir, run_name))
    spec_path = compile_pipeline(
        config, image=image, pipeline_root=pipeline_root, data_root=data_root,
        serving_dir=serving_dir, output_path=os.path.join(run_dir, SPEC_FILE), beam=beam)
    _check_parameters(spec_path, parameters)
    script = os.path.join(run_dir, SUBMIT_SCRIPT)
    _write_script(script, submit_command(spec_path, run_name=run_name,
                                         experiment_name=experiment_name,
                                         parameters=parameters))
    result = SubmitResult(
        submitted=False, spec_path=spec_path, script=script, run_name=run_name,
        command=submit_command(spec_path, run_name=run_name, experiment_name=experiment_name,
                               parameters=parameters, endpoint=endpoint))
    if not endpoint:
        return result
    run = _client_submit(endpoint, spec_path, run_name=run_name,
                         experiment_name=experiment_name, pipeline_root=pipeline_root,
                         parameters=parameters, timeout=timeout)
    return dataclasses.replace(
        result, submitted=True, endpoint=endpoint, run_id=run.run_id,
        experiment_id=getattr(run.run_info, "experiment_id", "") or "",
        run_url=f"{endpoint.rstrip('/')}/#/runs/details/{run.run_id}")


@dataclasses.dataclass(frozen=True)
class KubeflowRunner:
    """The cluster side of a Kubeflow run, fixed once (MonitoringConfig): the retraining
    trigger calls `submit(config, data_root=..., run_name=...)` for each new span."""
    image: str
    pipeline_root: str
    serving_dir: str
    out_dir: str
    endpoint: str = ""
    experiment_name: str = "hyperrec"
    name = "kubeflow"

    def submit(self, config: HyperrecConfig, *, data_root: str, run_name: str,
               parameters: Optional[Mapping[str, Any]] = None) -> SubmitResult:
        return submit(config, data_root=data_root, pipeline_root=self.pipeline_root,
                      serving_dir=self.serving_dir, image=self.image, out_dir=self.out_dir,
                      run_name=run_name, endpoint=self.endpoint,
                      experiment_name=self.experiment_name, parameters=parameters)
