"""Every import points down the data flow (ARCHITECTURE.md).

- schemas/ (the schemas and the names of features and signatures) and components/config.py
  import nothing of the project: they are the bottom layer.
- components/ (code that runs inside TFX components) and data/ (the contract, generator and
  importers) never reach up into the pipeline layer or into serving.
- serving/ knows the model only through the SavedModel contract: of the project it imports
  schemas/ and itself. The stock tensorflow/serving image serves the same models without
  any of the training code, so the local server must not come to need it either.
"""
import pathlib

import pytest

from hyperrec.pipeline import fingerprint

REPO = pathlib.Path(__file__).resolve().parents[1]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["hyperrec", *parts])


def _imports(path: pathlib.Path):
    return fingerprint.imported_project_modules(_module_name(path), path.read_bytes())


def _offenders(folder: str, allowed: tuple) -> dict:
    files = sorted((REPO / folder).rglob("*.py"))
    assert len(files) > 1, folder
    found = {str(path.relative_to(REPO)): sorted(m for m in _imports(path)
                                                 if not m.startswith(allowed))
             for path in files}
    return {path: modules for path, modules in found.items() if modules}


@pytest.mark.parametrize("folder", ["components", "data"])
def test_components_and_data_never_import_the_pipeline_or_serving(folder):
    allowed = ("hyperrec.components", "hyperrec.data", "hyperrec.schemas")
    assert _offenders(folder, allowed) == {}


def test_serving_imports_only_the_savedmodel_contract():
    assert _offenders("serving", ("hyperrec.serving", "hyperrec.schemas")) == {}


def test_schemas_and_config_are_the_bottom_layer():
    assert _offenders("schemas", ("hyperrec.schemas",)) == {}
    assert _imports(REPO / "components" / "config.py") == set()


def test_the_checker_sees_imports_inside_functions_and_from_imports():
    source = (b"from hyperrec.schemas import features\n"
              b"def f():\n    from hyperrec.pipeline import cli\n")
    found = fingerprint.imported_project_modules("hyperrec.serving.x", source)
    assert {"hyperrec.schemas.features", "hyperrec.pipeline", "hyperrec.pipeline.cli"} <= found
