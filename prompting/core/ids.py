"""A run's id: the digest of the settings its result depends on (anything that changes the result
changes the id), so that a finished run is found again however often an experiment is started."""

from __future__ import annotations

import hashlib
import json

__all__ = ["run_id"]


def run_id(settings: dict) -> str:
    """A stable id for a run's settings (anything that changes the result changes the id)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
