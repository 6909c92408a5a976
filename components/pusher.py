"""Pusher that needs both blessings and does not publish the same model twice.

Both gates are required: the evaluators' ModelBlessing and the InfraValidator's
InfraBlessing (components/infra_validation). TFX's stock `CheckBlessing` checks each only
when it is wired in; here a missing one refuses the push as a not-blessed one does.

After a first blessed push, a rerun of an unchanged pipeline resolves that model as its own
baseline, re-evaluates it, blesses it again and, with TFX's stock Pusher, copies it to a new
version directory. Serving then swaps to a byte-identical model for nothing. This executor
compares the candidate with the newest pushed version and, when they are the same files,
records the existing version instead of copying (the push is still tracked in MLMD).
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

SAVED_MODEL_FILE = "saved_model.pb"


def pushed_versions(base_directory: str) -> List[int]:
    """Complete versions (a folder holding saved_model.pb) under the base path, oldest first.

    Through tf.io.gfile, so a `gs://` or `s3://` serving base path works like a local one.
    """
    if not tf.io.gfile.isdir(base_directory):
        return []
    return sorted(int(name.rstrip("/")) for name in tf.io.gfile.listdir(base_directory)
                  if name.rstrip("/").isdigit() and tf.io.gfile.exists(
                      os.path.join(base_directory, name.rstrip("/"), SAVED_MODEL_FILE)))


def _tree_digests(root: str) -> Dict[str, str]:
    """{relative path: sha256} of every file under `root` (any gfile filesystem)."""
    digests = {}
    for folder, _, files in tf.io.gfile.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with tf.io.gfile.GFile(path, "rb") as handle:
                digests[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return digests


def already_pushed_version(model_path: str, base_directory: str) -> Optional[str]:
    """The newest pushed version when it holds the same files as `model_path`, else None."""
    versions = pushed_versions(base_directory)
    if not versions:
        return None
    newest = os.path.join(base_directory, str(versions[-1]))
    return str(versions[-1]) if _tree_digests(model_path) == _tree_digests(newest) else None


REQUIRED_BLESSINGS = (standard_component_specs.MODEL_BLESSING_KEY,
                      standard_component_specs.INFRA_BLESSING_KEY)


class Executor(pusher_executor.Executor):
    """TFX's Pusher, requiring both blessings, minus the duplicate copy of an already-pushed
    model."""

    def CheckBlessing(self, input_dict: Dict[str, List[types.Artifact]]) -> bool:
        missing = [key for key in REQUIRED_BLESSINGS if not input_dict.get(key)]
        if missing:
            logging.warning("Pusher: not pushing: no %s input", " and no ".join(missing))
            return False
        return super().CheckBlessing(input_dict)

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if self.CheckBlessing(input_dict) and destination.HasField("filesystem"):
            base = destination.filesystem.base_directory
            version = already_pushed_version(self.GetModelPath(input_dict), base)
            if version is not None:
                model_push = artifact_utils.get_single_instance(
                    output_dict[standard_component_specs.PUSHED_MODEL_KEY])
                self._MarkPushed(model_push, os.path.join(base, version), version)
                return
        super().Do(input_dict, output_dict, exec_properties)
