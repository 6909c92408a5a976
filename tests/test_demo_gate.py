"""The demo reports a refused model plainly instead of failing (ranking gate, MLMD)."""
import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from hyperrec.components.evaluation import component as ranking_component
from hyperrec.pipeline import demo


def _store_with(path, decisions):
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(path))
    type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(
        name=ranking_component.RankingEvaluation.TYPE_NAME))
    for blessed, reason in decisions:
        artifact = metadata_store_pb2.Artifact(type_id=type_id, uri="/tmp/x")
        artifact.custom_properties["blessed"].int_value = blessed
        artifact.custom_properties[ranking_component.REASON].string_value = reason
        store.put_artifacts([artifact])


def test_the_newest_refusal_is_reported_with_its_reason(tmp_path):
    path = str(tmp_path / "metadata.sqlite")
    _store_with(path, [(1, "recall@10 0.2 > most_popular 0.1"),
                       (0, "recall@10 0.058 <= most_popular 0.061")])
    assert demo.ranking_gate_refusal(path) == "recall@10 0.058 <= most_popular 0.061"


def test_a_blessed_newest_run_or_no_evaluation_is_no_refusal(tmp_path):
    refused_then_blessed = str(tmp_path / "a.sqlite")
    _store_with(refused_then_blessed, [(0, "worse"), (1, "better")])
    assert demo.ranking_gate_refusal(refused_then_blessed) == ""
    empty = str(tmp_path / "b.sqlite")
    _store_with(empty, [])
    assert demo.ranking_gate_refusal(empty) == ""
