"""The labeller's version must not depend on the process it is computed in.

It is stored with every label (``core.ticket_labels.labeller_version``) and
says which rules produced it; a version that changed with Python's hash seed
made every process look like a new labeller (found by the helpdesk kill test).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = (
    "from transforms.labels import labeller_version;"
    "from transforms.taxonomy import DEFAULT_TOPICS;"
    "print(labeller_version(DEFAULT_TOPICS))"
)


@pytest.mark.slow
def test_same_version_under_different_hash_seeds() -> None:
    versions = {
        subprocess.run(
            [sys.executable, "-c", SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(versions) == 1, versions
    assert next(iter(versions)).startswith("rules-")
