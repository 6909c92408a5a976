"""Per-component code fingerprints cover exactly the project code each component runs."""
import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)

from hyperrec.pipeline import fingerprint, pipeline as pipeline_def

EXAMPLE_GEN = "hyperrec.components.example_gen.executor"


def test_each_component_reaches_its_own_code_and_not_the_others():
    trainer = fingerprint.project_modules([pipeline_def.TRAINER_MODULE])
    transform = fingerprint.project_modules([pipeline_def.TRANSFORM_MODULE])
    example_gen = fingerprint.project_modules([EXAMPLE_GEN])
    assert "hyperrec.components.model.towers" in trainer
    assert "hyperrec.components.trainer.export" in trainer
    assert pipeline_def.TRANSFORM_MODULE in trainer  # run_fn applies the transform graph
    assert "hyperrec.components.config" in trainer and "hyperrec.components.config" in example_gen
    assert not any(m.startswith("hyperrec.components.model") for m in transform + example_gen)
    assert "hyperrec.data.history" in example_gen
    # Nothing a component runs comes from the layers above it.
    assert not any(m.startswith(("hyperrec.pipeline", "hyperrec.serving"))
                   for m in trainer + transform + example_gen)


def test_editing_a_model_file_changes_only_the_trainer_fingerprint(monkeypatch):
    before = {m: fingerprint.code_fingerprint(m) for m in
              (EXAMPLE_GEN, pipeline_def.TRANSFORM_MODULE, pipeline_def.TRAINER_MODULE)}
    read = fingerprint.read_source
    monkeypatch.setattr(fingerprint, "read_source", lambda path: read(path) + (
        b"\n# edited\n" if path.endswith("model/towers.py") else b""))
    after = {m: fingerprint.code_fingerprint(m) for m in before}
    assert after[EXAMPLE_GEN] == before[EXAMPLE_GEN]
    assert after[pipeline_def.TRANSFORM_MODULE] == before[pipeline_def.TRANSFORM_MODULE]
    assert after[pipeline_def.TRAINER_MODULE] != before[pipeline_def.TRAINER_MODULE]
