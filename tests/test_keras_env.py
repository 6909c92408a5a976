"""One Keras everywhere: tf-keras 2.16 (Keras 2 semantics), whatever is imported first.

TF 2.16 resolves `tf.keras` lazily from TF_USE_LEGACY_KERAS, and tensorflow_transform sets
that variable itself on import, so without the project setting it the Keras a module sees
would depend on import order. Each case runs in a fresh interpreter with the variable unset.
"""
import json
import os
import subprocess
import sys

import pytest

# Which package implements tf.keras.Model, and that package's installed version.
KERAS_PROBE = ("import json, importlib.metadata as md, tensorflow as tf; "
               "m = tf.keras.Model.__module__.split('.')[0]; "
               "print(json.dumps([m, md.version('tf-keras' if m == 'tf_keras' else 'keras')]))")


def _keras_seen_after(imports: str) -> list:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", f"{imports}; {KERAS_PROBE}"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("imports", [
    "import hyperrec.components",
    "import hyperrec.pipeline.pipeline",
    "import hyperrec.serving",
    "import tensorflow_transform; import hyperrec.components",
])
def test_project_entry_points_get_tf_keras(imports):
    assert _keras_seen_after(imports) == ["tf_keras", "2.16.0"]


def test_without_the_project_tensorflow_alone_would_give_keras_3():
    # The trap the project guards against: the default in TF 2.16 is Keras 3.
    name, version = _keras_seen_after("import os")
    assert version.startswith("3.")

