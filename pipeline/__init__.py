"""hyperrec pipeline: the one pipeline definition, its configs and one runner per orchestrator."""
import os

# Keras 2 semantics everywhere (see DESIGN "Stack"): must be set before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
