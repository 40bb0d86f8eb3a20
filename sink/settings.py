"""The sink's settings: one dataclass whose fields are the keys of `config/sink.toml` and the flags of
`auditcov serve`.

Each field carries its help text in its metadata, so the config file, the command-line flags and the docs test
all iterate the same list (`SETTINGS`). Precedence: a flag given on the command line (or through its
environment variable), then the config file, then the default here. Empty text means "not set" (TOML has no
null). Settings are scalars but one: `agents`, a list of tables (`ConfiguredAgent`), given as JSON text on the
command line.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditcov.merge.errors import AuditcovError

DEFAULT_CONFIG = Path("config/sink.toml")
SYNCHRONOUS_CHOICES = ("NORMAL", "FULL")
AGENT_KINDS = ("go", "python", "profile")


class SettingsError(AuditcovError):
    """A setting is missing, unknown, of the wrong type, or inconsistent with another."""


def _key(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `auditcov serve` can be told (see the module docstring for precedence)."""

    listen: str = _key("127.0.0.1:8080", "host:port to listen on; port 0 picks a free port")
    db: str = _key("auditcov.db", "the store: a SQLite file (created if missing) or a postgresql:// URL")
    tls_cert: str = _key("", "PEM server certificate chain; with tls_key the sink serves HTTPS")
    tls_key: str = _key("", "PEM private key of tls_cert")
    client_ca: str = _key("", "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)")
    ingest_token_file: str = _key("", "file holding the bearer token required to POST events and markers")
    query_token_file: str = _key("", "file holding the bearer token required for queries (/v1/stats)")
    body_limit: int = _key(32 * 1024 * 1024, "largest request body accepted, in bytes (413 beyond it)")
    keep_bodies: bool = _key(False, "keep requestObject/responseObject (they may hold Secrets)")
    default_run: str = _key("default", "the run of events POSTed to /v1/audit without a run in the path")
    synchronous: str = _key(
        "NORMAL", "SQLite durability: NORMAL (survives a crash of the sink) or FULL (and power loss)"
    )
    openapi: str = _key(
        "", "map events to endpoints as they arrive: an OpenAPI spec file, a v3 folder, or auto (the cluster's)"
    )
    kubeconfig: str = _key("", "kubeconfig of the cluster whose spec `openapi = auto` fetches (default: kubectl's)")
    lock_timeout: float = _key(
        5.0, "seconds a batch waits for another process's write lock on the store before it is answered 503"
    )
    header_timeout: float = _key(10.0, "seconds a client has to send a request's headers once it starts (or connects)")
    body_timeout: float = _key(30.0, "seconds a request body may go without a byte arriving before it is cut (408)")
    idle_timeout: float = _key(120.0, "seconds a keep-alive connection may stay idle between requests")
    max_connections: int = _key(
        1000, "most connections open at once (less if the descriptor limit is lower); idle ones make way for new"
    )
    agent_timeout: float = _key(
        0.2, "seconds each coverage agent has to answer at a test boundary; a later answer is a missing snapshot"
    )
    agents: tuple = _key(
        (),
        "coverage agents to snapshot besides those that register: a list of tables {run, process, kind, address, "
        "token_file} (as a flag or AUDITCOV_AGENTS: the same list in JSON)",
    )

    def __post_init__(self) -> None:
        if self.synchronous not in SYNCHRONOUS_CHOICES:
            raise SettingsError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_CHOICES)}, not {self.synchronous!r}"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("tls_cert and tls_key must be given together")
        if self.client_ca and not self.tls_cert:
            raise SettingsError("client_ca (mTLS) needs tls_cert and tls_key")
        if self.body_limit <= 0:
            raise SettingsError(f"body_limit must be a positive number of bytes, not {self.body_limit}")
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be a number of seconds above 0, not {getattr(self, name)}")
        if not self.lock_timeout >= 0:
            raise SettingsError(f"lock_timeout must be a number of seconds, 0 or more, not {self.lock_timeout}")
        if self.max_connections < 1:
            raise SettingsError(f"max_connections must be at least 1, not {self.max_connections}")
        if not 0 < self.agent_timeout <= 60:
            raise SettingsError(
                f"agent_timeout must be a number of seconds above 0 and at most 60, not {self.agent_timeout}"
            )
        # Frozen: the parsed list replaces what was given (TOML tables, or JSON text from a flag).
        object.__setattr__(self, "agents", _configured_agents(self.agents, self.default_run))
        self.address()

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def address(self) -> tuple[str, int]:
        """`listen` as (host, port); IPv6 hosts are written in brackets: `[::1]:8080`."""
        host, colon, port = self.listen.rpartition(":")
        if not colon or not port.isdigit() or not host or int(port) > 65535:
            raise SettingsError(f"listen must be host:port, not {self.listen!r}")
        return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class ConfiguredAgent:
    """A coverage agent named in the settings (`agents`), as a registration would name it."""

    run: str
    process: str
    kind: str  # go, python or profile
    address: str  # http://HOST:PORT or unix:/path; for profile, the text profile's path
    token_file: str = ""  # the agent's bearer token, if it needs one


_AGENT_KEYS = ("run", "process", "kind", "address", "token_file")


def _configured_agents(value: object, default_run: str) -> tuple[ConfiguredAgent, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise SettingsError(f"agents must be a JSON list of agents: {exc}") from None
    if not isinstance(value, list | tuple):
        raise SettingsError(f"agents must be a list of tables, not {type(value).__name__}")
    agents = []
    for number, entry in enumerate(value, start=1):
        if isinstance(entry, ConfiguredAgent):
            agents.append(entry)
            continue
        if not isinstance(entry, dict):
            raise SettingsError(f"agents entry {number} must be a table, not {type(entry).__name__}")
        unknown = sorted(set(entry) - set(_AGENT_KEYS))
        if unknown:
            raise SettingsError(
                f"agents entry {number}: unknown key {unknown[0]!r}; the keys are {', '.join(_AGENT_KEYS)}"
            )
        entry = {"run": default_run, **entry}
        for key in _AGENT_KEYS[:4]:
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise SettingsError(f"agents entry {number}: {key} must be a non-empty string")
        if not isinstance(entry.get("token_file", ""), str):
            raise SettingsError(f"agents entry {number}: token_file must be a string")
        if entry["kind"] not in AGENT_KINDS:
            raise SettingsError(
                f"agents entry {number}: kind must be one of {', '.join(AGENT_KINDS)}, not {entry['kind']!r}"
            )
        agents.append(ConfiguredAgent(**entry))
    return tuple(agents)


SETTINGS: tuple[dataclasses.Field, ...] = dataclasses.fields(Settings)
#: TOML types a setting of each default's type accepts (an integer number of seconds is a float).
_ACCEPTED_TYPES = {float: (float, int), tuple: (list,)}


def load_settings(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings from the TOML file `config` (if given), then `overrides` (flags) on top."""
    values: dict[str, Any] = {}
    if config is not None:
        values.update(_read_config(config))
    values.update({key: value for key, value in overrides.items() if value is not None})
    return Settings(**values)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    known = {setting.name: setting for setting in SETTINGS}
    for key, value in document.items():
        setting = known.get(key)
        if setting is None:
            raise SettingsError(f"{path}: unknown key {key!r}; the keys are {', '.join(known)}")
        expected = type(setting.default)
        if type(value) not in _ACCEPTED_TYPES.get(expected, (expected,)):
            shown = "list" if expected is tuple else expected.__name__
            raise SettingsError(f"{path}: {key} must be {shown}, not {type(value).__name__}")
    return document
