"""Pusher that does not publish the same model twice.

After a first blessed push, a rerun of an unchanged pipeline resolves that model as its own
baseline, re-evaluates it, blesses it again and, with TFX's stock Pusher, copies it to a new
version directory. Serving then swaps to a byte-identical model for nothing. This executor
compares the candidate with the newest pushed version and, when they are the same files,
records the existing version instead of copying (the push is still tracked in MLMD).
"""
from __future__ import annotations

import filecmp
import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from hyperrec.serving import saved_model


def _same_saved_model(a: str, b: str) -> bool:
    """True when two SavedModel directories hold the same files with the same bytes."""
    comparison = filecmp.dircmp(a, b)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_saved_model(os.path.join(a, d), os.path.join(b, d))
               for d in comparison.common_dirs)


def already_pushed_version(model_path: str, base_directory: str) -> Optional[str]:
    """The newest pushed version identical to `model_path`, if the newest one is."""
    versions = saved_model.versions(base_directory)
    if not versions:
        return None
    newest = os.path.join(base_directory, str(versions[-1]))
    return str(versions[-1]) if _same_saved_model(model_path, newest) else None


class Executor(pusher_executor.Executor):
    """TFX's Pusher, minus the duplicate copy of an already-pushed model."""

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
