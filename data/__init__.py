"""The data contract's code: one writer of the contract, the synthetic generator, importers."""
import os

# Keras 2 semantics everywhere (see DESIGN "Stack"): must be set before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
