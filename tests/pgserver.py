"""A real PostgreSQL server for the tests: initdb in a temporary folder, on a free loopback port.

PostgreSQL refuses to run as root, so under root the server runs as the `postgres` user that Debian's package
creates (hack/test-deps.sh installs the package where it is missing). Each test gets a database of its own
(`PostgresServer.new_database`), so tests never see each other's rows.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psycopg


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, postgres), or None when it is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One PostgreSQL server in `folder`: `start()`, `stop()`, `kill()`, `restart()`; `url(database)`."""

    def __init__(self, folder: Path, bindir: Path):
        self.folder = folder
        self.bindir = bindir
        self.data = folder / "data"
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else None  # who the server runs as
        self.process: subprocess.Popen | None = None

    def _run_as(self) -> dict:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        done = subprocess.run(
            [self.bindir / "initdb", "-D", self.data, "-U", "auditcov", "--auth=trust", "--no-locale", "-E", "UTF8"],
            capture_output=True, text=True, cwd=self.folder, **self._run_as(),
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self) -> None:
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - the server writes it while it runs
        self.process = subprocess.Popen(
            [
                self.bindir / "postgres", "-D", self.data, "-p", str(self.port), "-h", "127.0.0.1",
                "-k", self.folder, "-c", "max_connections=200", "-c", "fsync=on",
            ],
            stdout=log, stderr=log, cwd=self.folder, **self._run_as(),
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"PostgreSQL did not start: {log}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): transactions in flight are rolled back, committed ones stay."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(2)
            self.process.wait(timeout=60)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str) -> str:
        return f"postgresql://auditcov@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database's URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)
