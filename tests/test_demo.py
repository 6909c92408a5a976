"""`hyperrec demo` (what `make demo` runs), on the tiny experiment, as a user runs it."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_pushes_a_model_and_recommends_in_process_over_rest_and_grpc(tmp_path):
    hyperrec = os.path.join(os.path.dirname(sys.executable), "hyperrec")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([hyperrec, "demo", "--experiment", "tiny", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for component in ("FileBasedExampleGen", "StatisticsGen", "ExampleValidator", "Transform",
                      "Trainer", "Evaluator", "Pusher"):
        assert re.search(rf"✔ {component} finished in +\d+\.\ds", text), component
    pushed = re.search(r"pushed model: (\S+)\s+\(version (\d+)\)", text)
    assert pushed and os.path.exists(os.path.join(pushed.group(1), "saved_model.pb"))
    assert len(re.findall(r"^│ (?:\d+) +│ i\d{5} ", text, flags=re.M)) == 10
    assert "REST, gRPC and the in-process SavedModel agree" in text
