"""Bearer tokens kept in files: the sink's ingest and query tokens, an agent's own token, replay's `--token`.

One reader for all of them, so every token file is read, stripped and refused the same way.
"""

from __future__ import annotations

from pathlib import Path

from auditcov.merge.errors import AuditcovError


class TokenFileError(AuditcovError):
    """A token file that cannot be read, or holds no token."""


def read_token(path: str | None, what: str) -> str:
    """The bearer token in the file `path` (surrounding whitespace removed), or "" when no file is set; `what`
    names where the path came from (a setting, a flag, an environment variable), for the error."""
    if not path:
        return ""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise TokenFileError(f"{what} {path}: cannot read the token: {exc.strerror}") from None
    if not token:
        raise TokenFileError(f"{what} {path}: the token file is empty")
    return token
