"""GetModelStatus responses from the manager's version states (shared by REST and gRPC)."""
from __future__ import annotations

from typing import Mapping

from tensorflow_serving.apis import get_model_status_pb2

from hyperrec.serving.manager import VersionState


def status_response(states: Mapping[int, VersionState]
                    ) -> get_model_status_pb2.GetModelStatusResponse:
    """One ModelVersionStatus per version, in the order given (newest first)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state in states.items():
        entry = response.model_version_status.add()
        entry.version = version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
        entry.status.error_code = state.error_code.number
        entry.status.error_message = state.error_message
    return response
