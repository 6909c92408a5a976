"""The curated-schema update workflow: infer a schema from new statistics, diff it against the
curated one feature by feature, and let a person decide what to accept (schemas/README.md).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2


def latest_statistics(workdir: str, split: str = "train") -> str:
    """The newest StatisticsGen output of a local run's MLMD, as a FeatureStats.pb path."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    db = os.path.join(workdir, "metadata.sqlite")
    if not os.path.exists(db):
        raise FileNotFoundError(f"no pipeline run under {workdir} (missing {db})")
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db))
    # Transform writes ExampleStatistics too (pre/post transform): only StatisticsGen's count.
    stats_type = store.get_artifact_type("ExampleStatistics").id
    artifacts = [a for context in store.get_contexts_by_type("node")
                 if context.name.endswith(".StatisticsGen")
                 for a in store.get_artifacts_by_context(context.id) if a.type_id == stats_type]
    if not artifacts:
        raise FileNotFoundError(f"the run under {workdir} has no statistics yet")
    newest = max(artifacts, key=lambda a: a.id)
    return os.path.join(newest.uri, f"Split-{split}", "FeatureStats.pb")


def _domains(schema: schema_pb2.Schema) -> Dict[str, List[str]]:
    named = {d.name: list(d.value) for d in schema.string_domain}
    values = {}
    for feature in schema.feature:
        if feature.HasField("string_domain"):
            values[feature.name] = list(feature.string_domain.value)
        elif feature.domain in named:
            values[feature.name] = named[feature.domain]
    return values


def diff_schemas(curated: schema_pb2.Schema, inferred: schema_pb2.Schema) -> List[str]:
    """Human-readable differences that matter when reviewing a schema change."""
    lines = []
    ours = {f.name: f for f in curated.feature}
    theirs = {f.name: f for f in inferred.feature}
    for name in sorted(set(theirs) - set(ours)):
        lines.append(f"+ new feature '{name}' ({schema_pb2.FeatureType.Name(theirs[name].type)})")
    for name in sorted(set(ours) - set(theirs)):
        lines.append(f"- feature '{name}' is absent from the new data")
    curated_domains, inferred_domains = _domains(curated), _domains(inferred)
    for name in sorted(set(ours) & set(theirs)):
        if ours[name].type != theirs[name].type:
            lines.append(f"~ '{name}' type {schema_pb2.FeatureType.Name(ours[name].type)} -> "
                         f"{schema_pb2.FeatureType.Name(theirs[name].type)}")
        if name in curated_domains and name in inferred_domains:
            added = sorted(set(inferred_domains[name]) - set(curated_domains[name]))
            unseen = sorted(set(curated_domains[name]) - set(inferred_domains[name]))
            if added:
                lines.append(f"+ '{name}' values outside the curated domain: {added}")
            if unseen:
                lines.append(f"  '{name}' curated values not seen in the new data: {unseen}")
    return lines


def infer_and_diff(statistics_path: str, curated_path: str,
                   write_inferred: Optional[str] = None) -> List[str]:
    """Infers a schema from a FeatureStats.pb file and diffs it against `curated_path`."""
    import tensorflow_data_validation as tfdv

    stats = statistics_pb2.DatasetFeatureStatisticsList()
    with open(statistics_path, "rb") as f:
        stats.ParseFromString(f.read())
    inferred = tfdv.infer_schema(stats)
    if write_inferred:
        tfdv.write_schema_text(inferred, write_inferred)
    return diff_schemas(tfdv.load_schema_text(curated_path), inferred)
