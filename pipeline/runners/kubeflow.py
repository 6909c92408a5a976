"""Compiles the pipeline for Kubeflow Pipelines (v2 / Vertex AI Pipelines) with
KubeflowV2DagRunner: one pipeline JSON, every task in the given image.

Nothing in the JSON refers to the compiling machine: data, pipeline root and serving base
path are URIs the cluster reads, and the curated schema is named by its path inside the
image (IMAGE_PROJECT_ROOT is the Dockerfile's WORKDIR, where `schemas/` is copied).
KFP brings its own MLMD, so no metadata connection is compiled in.
"""
from __future__ import annotations

import os
import posixpath
import re
from typing import Optional

from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from hyperrec.components.config import HyperrecConfig
from hyperrec.pipeline import beam as beam_lib
from hyperrec.pipeline import pipeline as pipeline_def

# The Dockerfile's WORKDIR: the project (code and schemas/) lives here inside the image.
IMAGE_PROJECT_ROOT = "/hyperrec"
_URI = re.compile(r"^[a-z][a-z0-9+.\-]*://[^\s]+$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$")


class KubeflowCompileError(ValueError):
    """An argument would make the compiled spec unrunnable on a cluster."""


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
                     beam: Optional[beam_lib.BeamSettings] = None) -> str:
    """Writes the pipeline JSON (a KFP PipelineJob) to `output_path` and returns the path."""
    if not _IMAGE.match(image or ""):
        raise KubeflowCompileError(f"--image must be an image reference, got {image!r}")
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
    runner.run(pipeline, write_out=True)
    return output_path
