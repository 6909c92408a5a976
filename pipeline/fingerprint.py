"""Per-component code fingerprints: a digest of exactly the project code a component runs.

TFX caches an execution by its inputs and exec properties. A function named by import path
(`run_fn="hyperrec.components.trainer.run_fn"`) or an executor class is not among them, so a
changed model would silently reuse the cached one. Each component gets, as a property, the
digest of its entry module and every `hyperrec` module that module imports (transitively,
found by reading the import statements, not by importing): editing a model tower re-runs
Trainer -> evaluators -> Pusher and leaves ExampleGen and Transform cached.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
from typing import Iterable, List, Set

PROJECT_PACKAGE = "hyperrec"


def _source_path(module: str) -> str | None:
    spec = importlib.util.find_spec(module)
    return spec.origin if spec is not None and spec.origin not in (None, "namespace") else None


def read_source(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def imported_project_modules(module: str, source: bytes) -> Set[str]:
    """The project modules `module`'s source imports, with the packages that hold them."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{base}" if base else package
            # `from package import name`: name is a submodule or an attribute of package.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names
                              if _is_module(f"{base}.{alias.name}")]
        else:
            continue
        for name in names:
            if name == PROJECT_PACKAGE or name.startswith(PROJECT_PACKAGE + "."):
                parts = name.split(".")
                # Importing a.b.c runs a/__init__ and a/b/__init__ too.
                found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return found


def project_modules(entry_modules: Iterable[str]) -> List[str]:
    """Every project module reachable from `entry_modules` through imports, sorted."""
    seen: Set[str] = set()
    stack = list(entry_modules)
    while stack:
        module = stack.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _source_path(module)
        if path is None:
            raise ValueError(f"cannot find the source of project module {module!r}")
        stack.extend(imported_project_modules(module, read_source(path)) - seen)
    return sorted(seen)


def code_fingerprint(*entry_modules: str) -> str:
    """A 16-hex-digit digest of the source of `entry_modules` and all they import."""
    digest = hashlib.sha256()
    for module in project_modules(entry_modules):
        digest.update(module.encode() + b"\0")
        digest.update(read_source(_source_path(module)))
    return digest.hexdigest()[:16]
