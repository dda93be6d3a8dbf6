"""Reference data that lives beside the checkout, not in it.

Recorded Claude streams (from anthropic-sdk-python's own tests) and Slack's method metadata and
manifest schema (from public mirrors of Slack's reference) are kept in a `shared/` directory next
to the repository, with their provenance, and are not vendored into it. CI lays `shared/` beside
the clone; elsewhere, point `SLACKSTREAM_SHARED_DIR` at a copy. Without it, the tests that
replay or validate against those files skip, and their skip reason says so.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SLACKSTREAM_SHARED_DIR") or REPO.parent / "shared")
ANTHROPIC_FIXTURES = SHARED / "fixtures" / "anthropic"
SLACK_REFERENCE = SHARED / "reference" / "slack"


def missing(path: Path, what: str) -> str:
    """The skip reason for a test that needs `path`."""
    return (
        f"needs {what} at {path} (reference data kept beside the checkout, not in it; "
        "set SLACKSTREAM_SHARED_DIR to a copy of shared/ to run this test)"
    )


def recorded_streams() -> list[Path]:
    """Every recorded Claude stream, or [] when they are not beside the checkout."""
    if not ANTHROPIC_FIXTURES.is_dir():
        return []
    return sorted(p for p in ANTHROPIC_FIXTURES.iterdir() if p.suffix in (".txt", ".sse"))
