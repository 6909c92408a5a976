"""Canary routing: a configured share of users goes to the `canary` version label.

A user's bucket is the first 8 bytes of sha256(user id, UTF-8) read as a big-endian integer
over 2**64, a number in [0, 1). Users whose bucket is below the share are sent to `canary`,
the others to `stable`. sha256 (not Python's salted `hash()`) keeps a user on the same label
in every process, client and language, and raising the share only moves users from stable to
canary, never back.
"""
from __future__ import annotations

import hashlib
from typing import Optional

STABLE_LABEL = "stable"
CANARY_LABEL = "canary"
_BUCKET_BYTES = 8


def bucket(user_id: str) -> float:
    """The user's position in [0, 1), the same everywhere."""
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:_BUCKET_BYTES], "big") / float(1 << (8 * _BUCKET_BYTES))


def check_share(share: float) -> float:
    if not 0.0 <= share <= 1.0:  # also refuses NaN
        raise ValueError(f"canary share must be within [0, 1], got {share!r}")
    return float(share)


def label_for(user_id: str, share: float, stable: str = STABLE_LABEL,
              canary: str = CANARY_LABEL) -> Optional[str]:
    """The label to request for this user; None when the share is 0 (no labels configured:
    the request addresses the latest version, as without routing)."""
    if check_share(share) == 0.0:
        return None
    return canary if bucket(user_id) < share else stable
