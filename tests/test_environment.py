"""The test suite's reference implementations stay out of the user's environment (tests/run.sh, tests/conftest.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from conftest import REFERENCE_PACKAGES
from conversion_helpers import import_open_clip


def test_reference_implementations_come_from_the_tests_own_folder():
    for name in ("panopticapi", "segment_anything", "timm", "ftfy"):
        origin = Path(importlib.util.find_spec(name).origin)
        assert origin.is_relative_to(REFERENCE_PACKAGES), f"{name} imported from {origin}"
    assert Path(import_open_clip().__file__).is_relative_to(REFERENCE_PACKAGES)
    installed = (REFERENCE_PACKAGES / "requirements-reference.txt").read_text()
    assert installed == (Path(__file__).parent / "requirements-reference.txt").read_text()  # rebuilt when changed
