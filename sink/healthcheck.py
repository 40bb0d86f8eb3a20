"""The container's HEALTHCHECK: is the sink that these settings describe answering `GET /healthz`?

`python -m auditcov.sink.healthcheck [CONFIG]` reads the settings as `auditcov serve` does (the TOML file, default
config/sink.toml when it exists, then the AUDITCOV_<KEY> environment variables on top), asks the sink on
loopback and exits 0 when it answers 200, else 1 with the reason. Python, because slim images have no curl.

With TLS the sink's certificate is not verified: this asks the sink itself on loopback, to learn whether it
answers, not who it is. A sink with `client_ca` refuses every client without a certificate, this one too: give
such a container a check of its own (in Kubernetes, kubelet's probes need no client certificate either).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

from auditcov.sink.settings import DEFAULT_CONFIG, SETTINGS, Settings, SettingsError, load_settings

#: Seconds to wait for the answer (Docker's default HEALTHCHECK timeout is 30 s; ours is shorter).
TIMEOUT_S = 5.0
#: Where a sink listening on every address is asked.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def health_url(settings: Settings) -> str:
    """The /healthz URL of the sink `settings` start, reached on loopback."""
    host, port = settings.address()
    host = LOOPBACK.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if settings.tls else 'http'}://{shown}:{port}/healthz"


def check(settings: Settings, timeout: float = TIMEOUT_S) -> str | None:
    """None when the sink answers /healthz with 200, else what went wrong."""
    url = health_url(settings)
    context = None
    if settings.tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            return None if answer.status == 200 else f"{url} answered {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (OSError, ssl.SSLError) as exc:
        return f"{url}: {getattr(exc, 'reason', None) or exc}"


def environment_settings() -> dict[str, str]:
    """The text settings given as AUDITCOV_<KEY> variables (where and how the sink listens are all text)."""
    names = (setting.name for setting in SETTINGS if isinstance(setting.default, str))
    return {name: os.environ[f"AUDITCOV_{name.upper()}"] for name in names if f"AUDITCOV_{name.upper()}" in os.environ}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config = Path(args[0]) if args else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        problem = check(load_settings(config, environment_settings()))
    except SettingsError as exc:
        problem = str(exc)
    if problem:
        print(f"auditcov healthcheck: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
