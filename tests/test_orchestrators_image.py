"""The pipeline image, checked statically (its base images come from registries these machines
cannot reach, so no builder can build it here): what it copies exists, it installs every
package folder setup.py names, its base and Beam harness match the lock, the entry point
resolves, and the schema path compiled Kubeflow specs name is where the image puts it."""
import ast
import importlib
import os
import re

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest

from hyperrec.components import config as config_lib
from hyperrec.pipeline.runners import kubeflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _instructions():
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    text = open(os.path.join(REPO, "Dockerfile")).read()
    text = re.sub(r"\\\n", " ", text)
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            result.append((instruction.upper(), args.strip()))
    return result


def _lock():
    pins = {}
    for line in open(os.path.join(REPO, "requirements.lock")):
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    return pins


def _setup_call():
    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    folders = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                   and getattr(node.targets[0], "id", "") == "FOLDERS")
    setup = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and getattr(node.func, "id", "") == "setup")
    keywords = {k.arg: k.value for k in setup.keywords}
    return (ast.literal_eval(folders), ast.literal_eval(keywords["entry_points"]),
            ast.literal_eval(keywords["python_requires"]))


def _copies():
    copies = []
    for instruction, args in _instructions():
        if instruction == "COPY" and not args.startswith("--from"):
            *sources, dest = args.split()
            copies.append((sources, dest))
    return copies


def test_base_image_is_the_locked_tfx():
    froms = [args for instruction, args in _instructions() if instruction == "FROM"]
    assert froms == [f"tensorflow/tfx:{_lock()['tfx']}"]


def test_every_copied_path_exists():
    for sources, _ in _copies():
        for source in sources:
            assert os.path.exists(os.path.join(REPO, source)), source


def test_every_package_folder_of_setup_py_is_copied_before_the_install():
    folders, _, _ = _setup_call()
    copied = {os.path.normpath(dest) for sources, dest in _copies()
              for source in sources if source.rstrip("/") == dest.rstrip("/")}
    assert set(folders) <= copied
    order = [(i, args) for i, args in _instructions()]
    install = next(n for n, (i, args) in enumerate(order) if i == "RUN" and "-e ." in args)
    last_copy = max(n for n, (i, args) in enumerate(order) if i == "COPY"
                    and not args.startswith("--from"))
    assert last_copy < install


def test_beam_harness_matches_the_locked_beam_and_python():
    _, _, python_requires = _setup_call()
    python = re.search(r">=(\d+\.\d+)", python_requires).group(1)
    harness = [args for i, args in _instructions() if i == "COPY" and args.startswith("--from")]
    assert harness == [f"--from=apache/beam_python{python}_sdk:{_lock()['apache-beam']} "
                       "/opt/apache/beam /opt/apache/beam"]
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') in _instructions()
    # The build stops on a base whose Python is not the lock's.
    assert any(i == "RUN" and f"== ({python.replace('.', ', ')})" in args
               for i, args in _instructions())


def test_entry_point_resolves_to_the_click_command():
    _, entry_points, _ = _setup_call()
    (script,) = entry_points["console_scripts"]
    name, _, target = script.partition("=")
    module, _, attribute = target.partition(":")
    assert name == "hyperrec"
    command = getattr(importlib.import_module(module), attribute)
    assert {"run", "compile", "lineage"} <= set(command.commands)


@pytest.mark.parametrize("experiment", sorted(config_lib.EXPERIMENTS))
def test_compiled_schema_path_is_where_the_image_puts_the_schema(experiment):
    config = config_lib.load(experiment)
    workdirs = [args for i, args in _instructions() if i == "WORKDIR"]
    assert workdirs == [kubeflow.IMAGE_PROJECT_ROOT]
    assert (["schemas/"], "schemas/") in _copies()  # relative to WORKDIR
    in_image = kubeflow.image_schema_path(config)
    relative = os.path.relpath(in_image, kubeflow.IMAGE_PROJECT_ROOT)
    assert relative == config.schema_file and relative.startswith("schemas/")
    assert os.path.isfile(os.path.join(REPO, relative))
