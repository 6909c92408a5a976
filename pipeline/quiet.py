"""Our progress lines on the terminal, not TensorFlow's C++ start-up chatter.

"Unable to register cuDNN factory" is logged at ERROR, so only TF_CPP_MIN_LOG_LEVEL=3 hides
it; gRPC/absl print pre-InitializeLog lines; Google client libraries warn about the Python
version. The C++ loggers read their settings once, when TensorFlow loads, so
`native_logs()` must run before anything imports it; `python_logs()` after, for
TensorFlow's deprecation notices from library code and the WARN lines Beam's job service
relays from each DirectRunner worker ("No semi_persistent_directory", ...).
"""
from __future__ import annotations

import logging
import os
import warnings


def native_logs() -> None:
    """Silences the C++/gRPC loggers and Google's FutureWarnings (call before TensorFlow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("GLOG_minloglevel", "2")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    # Beam's worker processes (multi_processing ingestion) inherit this, not the filter above.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")


# absl WARNINGs that library code logs on every run and a user can do nothing about; other
# absl lines (ours among them) stay.
_LIBRARY_NOTICES = (
    "Tables initialized inside a tf.function",  # tf.Transform's apply_vocabulary, per table
)


class _DropLibraryNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(notice in str(record.msg) for notice in _LIBRARY_NOTICES)


def python_logs() -> None:
    """Raises TensorFlow's and Beam's job-service Python loggers to ERROR, and drops the
    library notices above from absl's."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(
        logging.ERROR)
    # "Couldn't find python-snappy": Beam's pure-Python CRC is what the pinned stack uses.
    logging.getLogger("apache_beam.io.tfrecordio").setLevel(logging.ERROR)
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropLibraryNotices) for f in absl_logger.filters):
        absl_logger.addFilter(_DropLibraryNotices())
