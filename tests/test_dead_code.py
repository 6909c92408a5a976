"""No dead code in the product: vulture over the product's folders.

The tests are read too, as users only: a product name that only a test uses still counts as
used, and findings inside tests/ are not reported. tests/vulture_whitelist.py names what
frameworks call or read (TFX, Keras, gRPC, click, ...), each with the framework.
"""
import pathlib
import subprocess
import sys
from typing import List, Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
PRODUCT = ("components", "data", "schemas", "serving", "pipeline", "bench")


def dead_code(paths: Sequence[str]) -> List[str]:
    """vulture's findings (`path:line: unused ...`) outside tests/ among `paths`."""
    run = subprocess.run([sys.executable, "-m", "vulture", *paths], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 3), run.stdout + run.stderr  # 3: vulture found dead code
    return [line for line in run.stdout.splitlines() if not line.startswith("tests/")]


def test_the_product_has_no_dead_code():
    found = dead_code([*PRODUCT, "tests"])
    assert found == [], ("dead code: remove it, or name the framework that uses it in "
                         "tests/vulture_whitelist.py\n" + "\n".join(found))


def test_the_check_reports_a_function_nothing_calls(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def used():\n    return 1\n\n\ndef never_called():\n    return 2\n\n\n"
                       "print(used())\n")
    [finding] = dead_code([str(planted)])
    assert "never_called" in finding and "used()" not in finding
