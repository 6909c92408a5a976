"""Serving: TF-Serving-API server, client and request log."""
import os

# Keras 2 semantics everywhere (see DESIGN "Stack"): must be set before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
