"""Running the Go toolchain from tests: offline (no module proxy, no toolchain download), no VCS stamping."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GO_ENV = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOPROXY": "off", "GOTOOLCHAIN": "local"}
GOPROGRAMS = Path(__file__).parent / "goprograms"


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a Go tool or a built program; its stdout, or a failure showing its stderr."""
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env={**GO_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stderr}"
    return done.stdout


def goroot() -> Path:
    return Path(run("go", "env", "GOROOT").strip())
