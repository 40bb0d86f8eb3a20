"""Shared test fixtures: where the copied real data lives, and the Go toolchain rule for CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


def pytest_collection_modifyitems(config, items):
    """Tests marked `go` skip without a Go toolchain, unless REQUIRE_GO=1 (CI), where they must run."""
    if shutil.which("go") or os.environ.get("REQUIRE_GO") == "1":
        return
    skip = pytest.mark.skip(reason="no Go toolchain on PATH (set REQUIRE_GO=1 to make this an error)")
    for item in items:
        if "go" in item.keywords:
            item.add_marker(skip)
