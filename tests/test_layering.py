"""Every import points down the data flow (hyperrec issue 27; ARCHITECTURE.md).

    cli -> loop -> runners -> pipeline definition -> components -> evaluation -> model
        -> data -> config -> schemas

A module imports its own layer or layers below it, never one above; serving/ knows the model
only through the SavedModel contract (of the project it imports schemas/ and itself: the
stock tensorflow/serving image serves the same models without the training code), and only
the pipeline layers (cli, loop, runners, pipeline) import serving/. No two project modules
import each other, directly or around a longer cycle, and only pipeline/cli/ imports click.
Imports inside functions count: they run, only later.
"""
import ast
import pathlib

import pytest

from hyperrec.pipeline import fingerprint

REPO = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = ("pipeline", "components", "data", "schemas", "serving")

# Top to bottom; a module's layer is its longest matching prefix.
LAYERS = (
    ("cli", ("hyperrec.pipeline.cli",)),
    # The demo generates data, runs the local runner and serves: above the runners, beside
    # the loop's own demo.
    ("loop", ("hyperrec.pipeline.loop", "hyperrec.pipeline.demo")),
    ("runners", ("hyperrec.pipeline.runners",)),
    ("pipeline", ("hyperrec.pipeline",)),
    ("components", ("hyperrec.components",)),
    ("evaluation", ("hyperrec.components.evaluation",)),
    ("model", ("hyperrec.components.model",)),
    ("data", ("hyperrec.data",)),
    ("config", ("hyperrec.components.config",)),
    ("schemas", ("hyperrec.schemas",)),
)
ORDER = [name for name, _ in LAYERS]
SERVING = "hyperrec.serving"
SERVING_USERS = ("cli", "loop", "runners", "pipeline")



def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["hyperrec", *parts])


def _sources() -> dict:
    return {_module_name(path): path for folder in FOLDERS
            for path in sorted((REPO / folder).rglob("*.py"))}


def _direct(imported: set) -> set:
    """What a module imports, less the parent packages Python runs on the way (importing
    a.b.c runs a/__init__ and a/b/__init__, which is no dependency on a's layer)."""
    return {m for m in imported if not any(o.startswith(m + ".") for o in imported)}


def _graph() -> dict:
    return {module: _direct(fingerprint.imported_project_modules(module, path.read_bytes()))
            - {module} for module, path in _sources().items()}


def _layer(module: str) -> str:
    matches = [(len(prefix), name) for name, prefixes in LAYERS for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else ""


def _is_serving(module: str) -> bool:
    return module == SERVING or module.startswith(SERVING + ".")


def upward_imports(graph: dict) -> set:
    found = set()
    for module, imported in graph.items():
        for target in imported:
            if _is_serving(module) or _is_serving(target):
                allowed = (target.startswith(("hyperrec.schemas", SERVING))
                           if _is_serving(module) else _layer(module) in SERVING_USERS)
                if not allowed:
                    found.add((module, target))
            elif ORDER.index(_layer(target)) < ORDER.index(_layer(module)):
                found.add((module, target))
    return found


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _imports_click(path: pathlib.Path) -> bool:
    for node in ast.walk(ast.parse(path.read_bytes())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(name == "click" or name.startswith("click.") for name in names):
            return True
    return False


def test_every_import_points_down_the_layers():
    assert upward_imports(_graph()) == set()


def test_no_import_cycles_among_project_modules():
    assert cycles(_graph()) == []


def test_only_the_cli_package_imports_click():
    importers = {module for module, path in _sources().items() if _imports_click(path)}
    assert importers == {m for m in importers if _layer(m) == "cli"}
    assert len(importers) >= 8  # the check reads the CLI modules themselves


def test_nothing_starts_our_own_cli_as_a_subprocess():
    # The trigger and the demos call pipeline/runners in-process or in a child process;
    # `python -m hyperrec.serving` (the model server the infra validator starts) is no CLI.
    # A command line names a CLI module (`python -m ...`).
    needles = {"hyperrec.pipeline.cli", "hyperrec.data.importers.cli"}
    paths = {**_sources(), **{f"bench.{path.stem}": path
                              for path in sorted((REPO / "bench").glob("*.py"))}}
    found = {module for module, path in paths.items()
             if not module.startswith("hyperrec.pipeline.cli")
             for node in ast.walk(ast.parse(path.read_bytes()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and (node.value.strip() in needles or node.value.startswith("hyperrec.pipeline.cli."))}
    assert found == set()


def test_the_loop_code_lives_in_the_loop_layer():
    for name in ("monitor", "canary", "trigger", "traffic", "catalogue_refresh"):
        assert not list((REPO / "components").rglob(f"{name}.py")), name
        assert (REPO / "pipeline" / "loop" / f"{name}.py").is_file(), name


@pytest.mark.parametrize("module, target, upward", [
    ("hyperrec.components.export", "hyperrec.pipeline.loop.trigger", True),
    ("hyperrec.components.model.towers", "hyperrec.components.evaluation.metrics", True),
    ("hyperrec.pipeline.runners.local", "hyperrec.pipeline.loop.monitor", True),
    ("hyperrec.data.contract", "hyperrec.serving.client", True),
    ("hyperrec.serving.server", "hyperrec.components.config", True),
    ("hyperrec.pipeline.loop.trigger", "hyperrec.pipeline.runners.local", False),
    ("hyperrec.pipeline.cli.run", "hyperrec.serving.lite", False),
    ("hyperrec.components.evaluation.protocol", "hyperrec.components.model.towers", False),
])
def test_the_checks_catch_an_upward_import(module, target, upward):
    assert bool(upward_imports({module: {target}})) is upward


def test_the_cycle_check_finds_a_cycle_through_three_modules():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_the_checker_sees_imports_inside_functions_and_from_imports():
    source = (b"from hyperrec.schemas import features\n"
              b"def f():\n    from hyperrec.pipeline import cli\n")
    found = fingerprint.imported_project_modules("hyperrec.serving.x", source)
    assert {"hyperrec.schemas.features", "hyperrec.pipeline", "hyperrec.pipeline.cli"} <= found
