"""Test-wide setup: Keras 2 semantics before anything imports TensorFlow, and shared paths."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow: the project's one Keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402

import pytest  # noqa: E402

import support  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data, or a skip with the reason where the checkout has no shared/ beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (only in the team's "
                    "checkouts and CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> dict:
    """tests/test_transform.py's synthetic splits and their Transform analysis (its default
    data and transform configs), built once per session for every module that trains on
    them and only reads them (the analysis is a minute of Beam on 2 cores).
    write_examples writes the same rows on every call, so the analysis also fits a module's
    own copy of the splits."""
    def build(directory):
        import test_transform as synthetic  # TensorFlow: only once a test needs it
        examples, transform_dir = (os.path.join(directory, name)
                                   for name in ("examples", "transform_output"))
        synthetic.write_examples(examples)
        os.makedirs(transform_dir)
        synthetic.run_transform_analysis(examples, transform_dir, synthetic.raw_schema(),
                                         synthetic.transform_custom_config())

    directory = support.once_per_session(tmp_path_factory, "synthetic-data", build)
    return {"examples": os.path.join(directory, "examples"),
            "transform": os.path.join(directory, "transform_output")}


# The modules that take longest (`--durations` of a whole run: their module fixtures run
# pipelines, trainings or the loop), slowest first. `make test` hands whole modules to its
# two xdist workers in collection order (--dist loadfile --no-loadscope-reorder): started
# first, the long modules run side by side and the short ones fill the tail, instead of a
# long module starting last on one worker while the other idles.
SLOWEST_MODULES = (
    "test_airflow_scheduler.py", "test_loop.py", "test_distribution.py", "test_pipeline_e2e.py",
    "test_model_quality.py", "test_beam_portable.py", "test_import_table_e2e.py",
    "test_online_retail_pipeline.py", "test_kubeflow_entrypoint.py",
    "test_evaluation_pipeline.py", "test_training_habits.py", "test_pretrained_encoders.py",
    "test_tuner.py", "test_model.py", "test_reproducibility.py", "test_monitoring_span_drift.py",
    "test_catalogue_refresh.py", "test_export_lite.py", "test_infra_validation.py",
)


def pytest_collection_modifyitems(items):
    """Slowest modules first, each module's tests kept together in their own order."""
    rank = {name: index for index, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
