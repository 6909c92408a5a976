"""The progress lines' handling of TFX's log records (pipeline/progress.py)."""
from __future__ import annotations

import logging

from absl import logging as absl_logging
from rich.console import Console

from hyperrec.pipeline import progress

EMPTY_BASELINE = (
    "[DistributionValidator] Input resolution error: Error while resolving inputs for "
    "DistributionValidator: InputSpec min_count has not met: inputs[baseline_statistics] has "
    "min_count = 1 but only got 0 artifacts. (Artifact IDs: [])")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_an_empty_input_and_the_channel_filter_notice_leave_the_log_and_others_stay():
    records = _Records()
    logger = logging.getLogger("absl")
    logger.addHandler(records)
    try:
        with progress.component_progress(Console(file=open("/dev/null", "w"))):
            absl_logging.error("%s", EMPTY_BASELINE)
            absl_logging.warning("ArtifactQuery.property_predicate is not supported.")
            absl_logging.error("[Trainer] Input resolution error: something else broke")
        absl_logging.warning("ArtifactQuery.property_predicate is not supported.")
    finally:
        logger.removeHandler(records)
    # Inside a run: only the unrelated error is logged; after it, the filter is gone.
    assert records.messages == ["[Trainer] Input resolution error: something else broke",
                                "ArtifactQuery.property_predicate is not supported."]
