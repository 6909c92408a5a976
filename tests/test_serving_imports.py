"""serving/ depends on the exported SavedModel contract only: of the project's own packages it
may import hyperrec.components.features (the contract's names), nothing from the pipeline or
the other components. The stock tensorflow/serving image serves the same models without any
of that code, so the local server must not come to need it either."""
import ast
import pathlib

import pytest

SERVING = pathlib.Path(__file__).resolve().parents[1] / "serving"
ALLOWED = "hyperrec.components.features"
FORBIDDEN_ROOTS = ("hyperrec.pipeline", "hyperrec.components", "pipeline", "components")


def forbidden_imports(source: str):
    """The modules `source` imports that serving/ must not (ALLOWED excepted)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from hyperrec.components import features` names the module in the alias.
            modules = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            if module == ALLOWED or module.startswith(ALLOWED + "."):
                continue
            if any(module == root or module.startswith(root + ".") for root in FORBIDDEN_ROOTS):
                found.append(module)
    return found


@pytest.mark.parametrize("source, expected", [
    ("from hyperrec.components import features", []),
    ("import hyperrec.components.features as features", []),
    ("from hyperrec.components.features import RECOMMEND", []),
    ("from hyperrec.components import export", ["hyperrec.components.export"]),
    ("from hyperrec.components import features, export", ["hyperrec.components.export"]),
    ("import hyperrec.pipeline.pipeline", ["hyperrec.pipeline.pipeline"]),
    ("from hyperrec.components.model import two_tower",
     ["hyperrec.components.model.two_tower"]),
    ("def f():\n    from hyperrec.pipeline import cli", ["hyperrec.pipeline.cli"]),
    ("from hyperrec.serving import errors", []),
])
def test_the_checker_tells_allowed_from_forbidden(source, expected):
    assert forbidden_imports(source) == expected


def test_serving_imports_only_the_savedmodel_contract():
    files = sorted(SERVING.glob("*.py"))
    assert len(files) > 10, SERVING
    offenders = {path.name: found for path in files
                 if (found := forbidden_imports(path.read_text()))}
    assert offenders == {}
