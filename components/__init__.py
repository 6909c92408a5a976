"""Code that runs inside TFX components: ExampleGen executor, preprocessing_fn, run_fn."""
import os

# Keras 2 semantics everywhere (see DESIGN "Stack"): must be set before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
