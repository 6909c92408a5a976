"""Beam presets: each names the runner and exactly the settings it needs; every Beam-powered
component of the one pipeline receives them (in the pipeline object the local and Airflow
runners run, and in the Kubeflow spec's container arguments)."""
import json
import re

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import click
import pytest
from click.testing import CliRunner
from tfx.dsl.components.base import executor_spec

from hyperrec.components import config as config_lib
from hyperrec.pipeline import beam
from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.pipeline.cli import options as options_lib
from hyperrec.pipeline.runners import commands, kubeflow

# The components whose work is a Beam pipeline (hand-listed: a component that stops being
# Beam-powered, or a new one that is, should be a decision, not an accident).
BEAM_POWERED = {"FileBasedExampleGen", "StatisticsGen", "Transform", "Evaluator"}
INGEST = {"FileBasedExampleGen", "StatisticsGen"}
IMAGE = "europe-docker.pkg.dev/p/r/hyperrec:7"

PRESETS = {
    "direct": (beam.BeamSettings(running_mode="in_memory", ingest_running_mode="multi_processing"),
               ["--runner=DirectRunner", "--direct_running_mode=in_memory",
                "--direct_num_workers=1"],
               ["--direct_running_mode=multi_processing", "--direct_num_workers=0"]),
    "dataflow": (beam.BeamSettings(preset="dataflow", project="acme-ml", region="europe-west4",
                                   temp_location="gs://acme-tmp/beam", image=IMAGE),
                 ["--runner=DataflowRunner", "--project=acme-ml", "--region=europe-west4",
                  "--temp_location=gs://acme-tmp/beam", f"--sdk_container_image={IMAGE}",
                  "--sdk_location=container"], []),
    "flink": (beam.BeamSettings(preset="flink", job_endpoint="flink-jobserver:8099",
                                image=IMAGE),
              ["--runner=PortableRunner", "--job_endpoint=flink-jobserver:8099",
               "--environment_type=DOCKER", f"--environment_config={IMAGE}"], []),
    "spark": (beam.BeamSettings(preset="spark", job_endpoint="10.0.0.5:8099",
                                environment_type="EXTERNAL",
                                environment_config="localhost:50000"),
              ["--runner=PortableRunner", "--job_endpoint=10.0.0.5:8099",
               "--environment_type=EXTERNAL", "--environment_config=localhost:50000"], []),
    # Beam's Python job service in the component's process, SDK workers in a pool
    # (tests/test_beam_portable.py runs it).
    "portable": (beam.BeamSettings(preset="portable", environment_config="localhost:50000"),
                 ["--runner=PortableRunner", "--job_endpoint=embed",
                  "--environment_type=EXTERNAL", "--environment_config=localhost:50000"], []),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_arguments(preset):
    settings, common, ingest = PRESETS[preset]
    assert beam.pipeline_args(settings) == (common, ingest)


def test_every_preset_is_tested():
    assert set(PRESETS) == set(beam.PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_beam_powered_component_receives_the_preset(preset):
    settings, common, ingest = PRESETS[preset]
    pipeline = pipeline_def.create_pipeline(
        config_lib.load("tiny"), data_root="gs://b/data", pipeline_root="gs://b/root",
        serving_dir="gs://b/serving", beam_pipeline_args=common,
        ingest_beam_pipeline_args=ingest)
    powered = {c.id: c.executor_spec.beam_pipeline_args for c in pipeline.components
               if isinstance(getattr(c, "executor_spec", None), executor_spec.BeamExecutorSpec)}
    assert set(powered) == BEAM_POWERED
    for component, args in powered.items():
        # Later arguments win in Beam's parser: ingestion's extra ones come last.
        assert args == common + (ingest if component in INGEST else []), component


def test_kubeflow_spec_carries_the_preset_to_each_beam_task(tmp_path):
    settings, common, _ = PRESETS["flink"]
    path = kubeflow.compile_pipeline(
        config_lib.load("tiny"), image=IMAGE, pipeline_root="gs://b/root",
        data_root="gs://b/data", serving_dir="gs://b/serving",
        output_path=str(tmp_path / "p.json"), beam=settings)
    executors = json.load(open(path))["pipelineSpec"]["deploymentSpec"]["executors"]
    for component in BEAM_POWERED:
        args = executors[f"{component}_executor"]["container"]["args"]
        assert args[-len(common):] == common, component


@pytest.mark.parametrize("settings,message", [
    (beam.BeamSettings(preset="dataflow", region="r", temp_location="gs://t", image=IMAGE),
     "--beam dataflow needs --project"),
    (beam.BeamSettings(preset="dataflow"),
     "--beam dataflow needs --project, --region, --temp-location, --image"),
    (beam.BeamSettings(preset="dataflow", project="p", region="r", temp_location="/tmp/x",
                       image=IMAGE), "must be a gs:// path"),
    (beam.BeamSettings(preset="flink"), "--beam flink needs --job-endpoint"),
    (beam.BeamSettings(preset="spark", job_endpoint="jobserver"), "must be host:port"),
    (beam.BeamSettings(preset="flink", job_endpoint="h:8099"),
     "DOCKER workers needs --image"),
    (beam.BeamSettings(preset="flink", job_endpoint="h:8099", environment_type="KUBERNETES"),
     "is not one of DOCKER, EXTERNAL, PROCESS, LOOPBACK"),
    (beam.BeamSettings(preset="spark", job_endpoint="h:8099", environment_type="EXTERNAL"),
     "--beam spark needs --environment-config"),
    (beam.BeamSettings(preset="portable"), "--beam portable needs --environment-config"),
    (beam.BeamSettings(preset="portable", environment_config="50000"),
     "--environment-config of EXTERNAL workers must be the pool's host:port, got '50000'"),
    (beam.BeamSettings(preset="portable", job_endpoint="jobserver",
                       environment_config="localhost:50000"), "must be host:port"),
    (beam.BeamSettings(preset="direct", running_mode="multi_processes"),
     "'multi_processes' is not one of"),
    (beam.BeamSettings(preset="direct", num_workers=-2), "must be >= 0"),
    (beam.BeamSettings(preset="samza"), "unknown Beam preset 'samza'"),
])
def test_incomplete_or_malformed_settings_name_the_flag(settings, message):
    with pytest.raises(beam.BeamSettingsError, match=re.escape(message)):
        beam.pipeline_args(settings)


def _cli_args(*argv):
    """The Beam arguments a command with the shared Beam flags gets from a command line."""
    @click.command()
    @options_lib.beam_options
    def command(**options):
        settings = commands.beam_settings(config_lib.load("tiny"), **options)
        click.echo(json.dumps(beam.pipeline_args(settings)))

    result = CliRunner().invoke(command, list(argv))
    # A bad setting: a click usage error, or the error the CLI's wrapper turns into one.
    return result.exit_code, result.output + str(result.exception or "")


@pytest.mark.parametrize("argv,expected", [
    (["--beam", "portable", "--environment-config", "localhost:50000"],
     [["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
       "--environment_config=localhost:50000"], []]),
    (["--beam", "portable", "--job-endpoint", "localhost:8099", "--environment-config",
      "localhost:50000"],
     [["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=EXTERNAL",
       "--environment_config=localhost:50000"], []]),
    # Flink/Spark users change only these flags; the SDK harness defaults to the image.
    (["--beam", "flink", "--job-endpoint", "jobserver:8099", "--beam-image", IMAGE],
     [["--runner=PortableRunner", "--job_endpoint=jobserver:8099", "--environment_type=DOCKER",
       f"--environment_config={IMAGE}"], []]),
])
def test_command_line_flags_choose_the_preset(argv, expected):
    assert _cli_args(*argv) == (0, json.dumps(expected) + "\n")


def test_a_portable_preset_without_a_worker_pool_is_a_usage_error():
    code, output = _cli_args("--beam", "portable")
    assert code != 0 and "--beam portable needs --environment-config" in output
