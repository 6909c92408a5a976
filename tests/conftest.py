"""Test-wide setup: Keras 2 semantics before anything imports TensorFlow, and shared paths."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow: the project's one Keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data, or a skip with the reason where the checkout has no shared/ beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (only in the team's "
                    "checkouts and CI)")
    return SHARED_DATA
