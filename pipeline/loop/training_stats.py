"""The training statistics of a served model version, found in ML Metadata.

served version -> its PushedModel artifact (custom property `pushed_version`) -> the Pusher
execution that wrote it -> that execution's pipeline run -> the ExampleStatistics artifact of
the same run written by StatisticsGen under output key `statistics` (also when it was a cached
execution) -> its train split.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

PUSHED_MODEL = "PushedModel"
EXAMPLE_STATISTICS = "ExampleStatistics"
STATISTICS_GEN = "StatisticsGen"
STATISTICS_KEY = "statistics"
RUN_CONTEXT_TYPES = ("pipeline_run", "run")
STATS_FILE = "FeatureStats.pb"


class TrainingStatisticsNotFound(LookupError):
    """No statistics can be tied to the served version; the reason says which link is missing."""


def open_store(sqlite_path: str) -> metadata_store.MetadataStore:
    if not os.path.isfile(sqlite_path):
        raise TrainingStatisticsNotFound(f"no metadata store at {sqlite_path}")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = sqlite_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _pushed(store, version: int) -> metadata_store_pb2.Artifact:
    candidates = [a for a in store.get_artifacts_by_type(PUSHED_MODEL)
                  if a.custom_properties.get("pushed_version") is not None
                  and a.custom_properties["pushed_version"].string_value == str(version)
                  and a.custom_properties["pushed"].int_value == 1]
    if not candidates:
        raise TrainingStatisticsNotFound(f"version {version} was not pushed by a run in "
                                         "this metadata store")
    return max(candidates, key=lambda a: a.id)


def resolve(store: metadata_store.MetadataStore, version: int, split: str = "train"
            ) -> Tuple[str, str]:
    """(path of the split's FeatureStats.pb, the pipeline run's name) of served `version`."""
    pushed = _pushed(store, version)
    events = [e for e in store.get_events_by_artifact_ids([pushed.id])
              if e.type in (metadata_store_pb2.Event.OUTPUT,
                            metadata_store_pb2.Event.DECLARED_OUTPUT)]
    if not events:
        raise TrainingStatisticsNotFound(f"no execution output version {version}")
    pusher_id = max(e.execution_id for e in events)
    context_types = {t.id: t.name for t in store.get_context_types()}
    runs = [c for c in store.get_contexts_by_execution(pusher_id)
            if context_types.get(c.type_id) in RUN_CONTEXT_TYPES]
    if not runs:
        raise TrainingStatisticsNotFound(f"the Pusher of version {version} has no run context")
    # StatisticsGen's output (key "statistics"), also when the execution was cached: Transform's
    # pre/post-transform statistics are ExampleStatistics of the same run but have no
    # Split-train and describe other features.
    execution_types = {t.id: t.name for t in store.get_execution_types()}
    producers = {e.id for e in store.get_executions_by_context(runs[0].id)
                 if execution_types.get(e.type_id, "").rsplit(".", 1)[-1] == STATISTICS_GEN}
    statistics_ids = {e.artifact_id for e in store.get_events_by_execution_ids(sorted(producers))
                      if e.type in (metadata_store_pb2.Event.OUTPUT,
                                    metadata_store_pb2.Event.DECLARED_OUTPUT)
                      and e.path.steps and e.path.steps[0].key == STATISTICS_KEY}
    statistics = [a for a in store.get_artifacts_by_id(sorted(statistics_ids))
                  if a.type == EXAMPLE_STATISTICS or a.type_id in {
                      t.id for t in store.get_artifact_types() if t.name == EXAMPLE_STATISTICS}]
    if not statistics:
        raise TrainingStatisticsNotFound(f"run {runs[0].name} of version {version} has no "
                                         "StatisticsGen statistics")
    uri = max(statistics, key=lambda a: a.id).uri
    path = os.path.join(uri, f"Split-{split}", STATS_FILE)
    if not tf.io.gfile.exists(path):
        raise TrainingStatisticsNotFound(f"{path} does not exist")
    return path, runs[0].name


def find(workdir: str, version: Optional[int], split: str = "train") -> Tuple[str, str]:
    """resolve() in the local runner's store (WORKDIR/metadata.sqlite)."""
    if version is None:
        raise TrainingStatisticsNotFound("the logged requests name no model version")
    return resolve(open_store(os.path.join(workdir, "metadata.sqlite")), version, split)
