"""Every import points down the data flow (ARCHITECTURE.md).

components/ (code that runs inside TFX components) and data/ (the contract, generator and
importers) never reach up into the pipeline layer or into serving; the config and names
modules import nothing of the project. serving/ has its own check (test_serving_imports.py).
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


@pytest.mark.parametrize("folder", ["components", "data"])
def test_components_and_data_never_import_the_pipeline_or_serving(folder):
    files = sorted((REPO / folder).rglob("*.py"))
    assert len(files) > 5
    offenders = {str(path.relative_to(REPO)): sorted(
        m for m in _imports(path) if m.startswith(("hyperrec.pipeline", "hyperrec.serving")))
        for path in files}
    assert {path: found for path, found in offenders.items() if found} == {}


@pytest.mark.parametrize("module", ["components/config.py", "components/features.py"])
def test_config_and_names_are_the_bottom_layer(module):
    assert _imports(REPO / module) == set()


def test_the_checker_sees_imports_inside_functions_and_from_imports():
    source = (b"from hyperrec.components import features\n"
              b"def f():\n    from hyperrec.pipeline import cli\n")
    found = fingerprint.imported_project_modules("hyperrec.components.x", source)
    assert {"hyperrec.components.features", "hyperrec.pipeline", "hyperrec.pipeline.cli"} <= found
