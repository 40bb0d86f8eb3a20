"""The Dockerfile lints clean and starts the sink with options `auditcov serve` accepts."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from auditcov.sink.cli import cli
from auditcov.sink.operatorfiles import ENDPOINTS_POLICY, HTTP_KUBECONFIG, MTLS_KUBECONFIG, PLACES, POLICY

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"
#: Where the image keeps its settings file and the operator's files.
IMAGE_CONFIG = "/etc/auditcov"


def test_hadolint_passes():
    # The test extras install hadolint beside this interpreter, which need not be on PATH.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed: `pip install -e '.[test]'` installs it")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions() -> list[str]:
    """The Dockerfile's instructions, one per item, continuation lines joined and comments left out."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return logical


def _instruction(name: str) -> list[str]:
    """The JSON (exec) form of the last `name` instruction: ENTRYPOINT, CMD, or HEALTHCHECK's command."""
    lines = [line for line in _instructions() if line.startswith(name + " ")]
    assert lines, f"no {name} in the Dockerfile"
    return json.loads(lines[-1][lines[-1].index("[") :])


def test_entrypoint_is_serve_and_the_command_a_valid_invocation():
    assert _instruction("ENTRYPOINT") == ["auditcov", "serve"]
    # Parsing raises on an unknown option or a bad value, as `auditcov serve` itself would.
    cli.get_command(None, "serve").make_context("serve", _instruction("CMD"))


def test_image_is_multi_stage_non_root_with_the_store_on_a_volume():
    instructions = _instructions()
    stages = [line for line in instructions if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    final = instructions[instructions.index(stages[-1]) :]
    # Only the virtual environment comes from the build stage: no wheels, no pip, no compiler.
    assert [line for line in final if "--from=" in line] == ["COPY --from=build /opt/auditcov /opt/auditcov"]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1] not in ("0", "root")
    assert 'VOLUME ["/data"]' in final
    assert "AUDITCOV_DB=/data/auditcov.db" in next(line for line in final if line.startswith("ENV "))


def test_healthcheck_runs_the_healthcheck_module_with_the_served_config():
    command = _instruction("HEALTHCHECK")
    assert command[:3] == ["python", "-m", "auditcov.sink.healthcheck"]
    assert command[3:] == _instruction("CMD")[1:], "the check must read the file `serve` reads"
    assert importlib.util.find_spec(command[2]) is not None


def test_copied_paths_exist():
    for line in _instructions():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _destination = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"


def test_image_holds_the_files_the_banner_shows():
    copied = {
        Path(source).name
        for line in _instructions()
        if line.startswith("COPY ") and line.split()[-1] == f"{IMAGE_CONFIG}/"
        for source in line.split()[1:-1]
    }
    assert Path(IMAGE_CONFIG) in PLACES
    assert {POLICY, ENDPOINTS_POLICY, HTTP_KUBECONFIG, MTLS_KUBECONFIG, "sink.toml"} <= copied
