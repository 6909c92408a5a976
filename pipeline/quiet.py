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


def python_logs() -> None:
    """Raises TensorFlow's and Beam's job-service Python loggers to ERROR."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(
        logging.ERROR)
