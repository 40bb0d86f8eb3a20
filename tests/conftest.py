"""Shared test fixtures: where the copied real data lives, and the Go toolchain rule for CI."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def png_file(tmp_path) -> Path:
    """A valid 1x1 grey PNG (signature, IHDR, IDAT, IEND): a file that is not audit data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    path = tmp_path / "logo.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\x80")) + chunk(b"IEND", b"")
    )
    return path


def pytest_collection_modifyitems(config, items):
    """Tests marked `go` skip without a Go toolchain, unless REQUIRE_GO=1 (CI), where they must run."""
    if shutil.which("go") or os.environ.get("REQUIRE_GO") == "1":
        return
    skip = pytest.mark.skip(reason="no Go toolchain on PATH (set REQUIRE_GO=1 to make this an error)")
    for item in items:
        if "go" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server started for this test session (see tests/pgserver.py)."""
    from pgserver import PostgresServer, postgres_bin

    bindir = postgres_bin()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed (hack/test-deps.sh installs Debian's postgresql)")
    # Not under pytest's own temporary folder: that is private to this user, and the server may run as another.
    folder = Path(tempfile.mkdtemp(prefix="auditcov-postgres-"))
    server = PostgresServer(folder, bindir)
    server.init()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a new, empty PostgreSQL database of this test's own."""
    return postgres_server.new_database()
