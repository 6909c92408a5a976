"""The install step's translation of pip's settings into uv flags (Makefile `uv-flags`).

uv reads no pip.conf: on a machine whose packages come from a mirror the first install would
otherwise go to PyPI. The Makefile runs the venv's pip to read its effective settings.
"""

import os
import shlex
import subprocess
import sys

import pytest

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def uv_flags(tmp_path, pip_conf: str = "", **pip_env: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MAKE"))}
    if pip_conf:
        path = tmp_path / "pip.conf"
        path.write_text(pip_conf)
        env["PIP_CONFIG_FILE"] = str(path)
    else:
        env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf of this machine is read
    env.update(pip_env)
    result = subprocess.run(["make", "-s", "uv-flags", f"PYTHON={sys.executable}"],
                            cwd=PROJECT_ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return shlex.split(result.stdout)


def test_no_pip_settings_give_no_flags(tmp_path):
    assert uv_flags(tmp_path) == []


def test_pip_environment_variables_become_uv_flags(tmp_path):
    assert uv_flags(tmp_path, PIP_INDEX_URL="https://mirror.example/simple",
                    PIP_EXTRA_INDEX_URL="file:///opt/a/simple file:///opt/b/simple",
                    PIP_FIND_LINKS="/opt/wheels", PIP_CERT="/etc/ca.pem") == [
        "--index-url", "https://mirror.example/simple",
        "--extra-index-url", "file:///opt/a/simple", "--extra-index-url", "file:///opt/b/simple",
        "--find-links", "/opt/wheels", "--cert", "/etc/ca.pem",
        # several indexes: the best match across them, as pip picks
        "--index-strategy", "unsafe-best-match"]


@pytest.mark.parametrize("env, expected", [
    ({}, "https://install.example/simple"),  # [install] over [global]
    ({"PIP_INDEX_URL": "https://env.example/simple"}, "https://env.example/simple"),
])
def test_pip_precedence_is_kept(tmp_path, env, expected):
    flags = uv_flags(tmp_path, "[global]\nindex-url = https://global.example/simple\n"
                     "[install]\nindex-url = https://install.example/simple\n", **env)
    assert flags[flags.index("--index-url") + 1] == expected
    assert flags.count("--index-url") == 1
