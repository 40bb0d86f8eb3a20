"""Audit files to raw audit items, each with the file and line it came from.

`AuditFile(path)` reads one file, plain or gzip-compressed (told by its content, not its name: `.log`, `.json`,
`.jsonl`, `.gz` all work), and yields `FileItem(origin, item)` for every item in it. The shapes are those of
`merge.decode` (EventList, single Event, JSON array, JSON lines), told apart by its `decode_items`; how a file
is laid out is told from its first lines:
- a file whose first line is JSON on its own is read as JSON lines, streamed, one line at a time (audit logs
  run to gigabytes); each line may itself be an Event or an EventList;
- a file whose first line opens JSON without closing it is one JSON document (pretty-printed) and is read
  whole, unless its second line is JSON on its own: then it is JSON lines whose first line was cut short;
- any other file is read as JSON lines too, so that its good lines are kept beside its bad ones.

`AuditFile.pieces` gives the same file as blocks of whole undecoded lines (`LineBlock`) when it is JSON lines
from its first line on, for other processes to decode with `line_items` (`sink.parallelimport`); any other file
as its items.

Items are not validated here: the ingest core does that and quarantines the bad ones. What cannot be an item at
all becomes a `merge.decode.Malformed` carrying its raw text and a reason that names the file and line, so it is
quarantined beside the good items: a line that is not JSON, a document of the wrong shape (falco's
`{"kind": 0}`), a cloud record that cannot be converted (below).

A file that is not audit data at all (binary content such as a PNG, or text in which no line is JSON, such as
YAML or grep output) raises `BadBodyError` before anything is yielded. A file that breaks off part-way (a
truncated gzip stream) raises `BadBodyError` naming the line it reached, after yielding every item before it.

Cloud log exports wrap events in records of their own (as in the elastic fixtures):
- AKS diagnostic logs (`category: kube-audit` or `kube-audit-admin`): the event is `properties.log`, as a JSON
  string or as an object. It is the apiserver's own event, unchanged, so it is unwrapped and read as is.
- GKE Cloud Audit Logs (a `protoPayload` of type `google.cloud.audit.AuditLog`): Google re-encodes the request.
  It keeps an operation ID, the user, the caller IP and user agent, but not the request URI (only
  `resourceName`, without the `/api` or `/apis` prefix and without the query, so a list cannot be told from a
  watch, nor a proxied HEAD from a GET), not the stage, and not the HTTP status (`status.code` is a gRPC code).
  Those are exactly the fields an endpoint is matched on, so a converted event would be guesswork presented as
  data (falco's k8saudit-gke plugin does convert, inferring the status from the verb and using `/` +
  resourceName as the URI, which gives `/core/v1/...` paths that match no OpenAPI operation). These records are
  therefore quarantined, kept raw, with a reason saying so.
"""

from __future__ import annotations

import gzip
import io
import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NamedTuple

import orjson

from auditcov.merge.decode import Malformed, decode_items, is_utf8
from auditcov.merge.errors import BadBodyError
from auditcov.merge.events import item_json

_GZIP_MAGIC = b"\x1f\x8b"

#: How far into a file to look for a JSON line before deciding it is not audit data.
_SNIFF_LINES = 1000

_AKS_CATEGORIES = frozenset({"kube-audit", "kube-audit-admin"})

GKE_REASON = (
    "a GKE Cloud Audit Log record (protoPayload) has no request URI, stage or HTTP status, "
    "so it cannot be converted to an audit event faithfully; kept raw"
)


class FileItem(NamedTuple):
    """One raw item and where it came from (`file:line`, or `file` for a whole document)."""

    origin: str
    item: object


class AuditFile:
    """One audit file; iterate it for its `FileItem`s. `size` and `bytes_read` (on disk) drive progress bars."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
        except OSError:
            self.size = 0  # iterating says why it cannot be read
        self._raw: BinaryIO | None = None

    @property
    def bytes_read(self) -> int:
        """How much of the file on disk has been read so far (compressed bytes for a gzip file)."""
        if self._raw is None:
            return 0
        return self.size if self._raw.closed else self._raw.tell()

    def __iter__(self) -> Iterator[FileItem]:
        with self._open() as stream:
            yield from self._items(_numbered_lines(stream, self.path))

    def pieces(self, block_bytes: int) -> Iterator[FileItem | LineBlock]:
        """The file as iterating it gives it, except that a file that is JSON lines from its first line on (the
        common case) comes as `LineBlock`s of whole undecoded lines, about `block_bytes` each, for `line_items` to
        decode in any process. Every other file comes as its `FileItem`s. Errors are raised as by iterating: a
        gzip stream is still read line by line, so that one cut short gives every line before the break; a
        plain file is read a block at a time (an I/O error then loses the lines read since the last block)."""
        with self._open() as stream:
            lines = _numbered_lines(stream, self.path)
            head: list[bytes] = []
            for _, line in lines:
                head.append(line)
                if line.strip():
                    break
            if not head[-1:] or not _parses(head[-1]):
                # No first line that is JSON on its own: the rules for telling the layout apply, read here.
                yield from self._items(itertools.chain(enumerate(head, start=1), lines))
                return
            path = str(self.path)
            if isinstance(stream, gzip.GzipFile):
                yield from _joined_lines(path, head, lines, block_bytes)
            else:
                yield LineBlock(path, 1, b"".join(head))
                yield from _read_blocks(path, len(head) + 1, stream, block_bytes)

    @contextmanager
    def _open(self) -> Iterator[BinaryIO]:
        """The file's content, decompressed when it is gzip; `bytes_read` follows the file underneath."""
        try:
            self._raw = open(self.path, "rb")  # noqa: SIM115 - closed below; bytes_read reads its position
        except OSError as exc:
            raise BadBodyError(f"{self.path}: cannot read: {exc.strerror}") from exc
        with self._raw:
            compressed = self._raw.read(2) == _GZIP_MAGIC
            self._raw.seek(0)
            yield gzip.GzipFile(fileobj=self._raw, mode="rb") if compressed else self._raw

    def _items(self, lines: Iterator[tuple[int, bytes]]) -> Iterator[FileItem]:
        first = next(((number, line) for number, line in lines if line.strip()), None)
        if first is None:
            raise BadBodyError(f"{self.path}: the file is empty")
        line = first[1]
        if b"\0" in line or not is_utf8(line):
            raise BadBodyError(f"{self.path}: not audit data: the content is binary, not JSON text")
        if _parses(line) or not line.lstrip().startswith((b"{", b"[")):
            yield from self._json_lines(first, lines)
            return
        # A first line that opens JSON without closing it: a pretty-printed document, unless the next line is
        # JSON on its own (JSON lines whose first line was cut short).
        second = next(((number, line) for number, line in lines if line.strip()), None)
        if second is not None and _parses(second[1]):
            yield from self._json_lines(first, itertools.chain([second], lines))
        else:
            rest = b"".join(rest for _, rest in lines)
            yield from self._document(line + (second[1] if second else b"") + rest)

    def _document(self, data: bytes) -> Iterator[FileItem]:
        origin = str(self.path)
        try:
            items = decode_items(data)
        except BadBodyError as exc:
            yield FileItem(origin, Malformed(data.decode("utf-8", "replace"), f"{origin}: {exc}"))
            return
        for index, item in enumerate(items, start=1):
            where = f"{origin} item {index}"
            if isinstance(item, Malformed):
                yield FileItem(where, Malformed(item.raw, f"{origin}: {item.reason}"))
            else:
                yield FileItem(where, unwrap(item, where))

    def _json_lines(self, first: tuple[int, bytes], lines: Iterator[tuple[int, bytes]]) -> Iterator[FileItem]:
        # Bad lines before the first JSON line are held back: if no JSON line comes, the file is not audit
        # data and nothing of it belongs in the quarantine.
        held: list[FileItem] = []
        seen_json = False
        for number, line in itertools.chain([first], lines):
            if seen_json:
                yield from line_items(self.path, number, line)
                continue
            if not line.strip():
                continue
            origin = f"{self.path}:{number}"
            try:
                items = decode_items(line)
            except BadBodyError as exc:
                held.append(_not_an_item(origin, line, exc))
                if _parses(line):
                    # JSON of the wrong shape is still JSON: the file is audit data with one bad item.
                    seen_json = True
                    yield from held
                    held.clear()
                elif len(held) >= _SNIFF_LINES:
                    break
                continue
            seen_json = True
            yield from held
            held.clear()
            for item in items:
                yield FileItem(origin, unwrap(item, origin))
        if not seen_json:
            first_bad = held[0].item.raw if held else ""
            raise BadBodyError(f"{self.path}: not audit data: no line is JSON (line {first[0]}: {first_bad[:60]!r})")


class LineBlock(NamedTuple):
    """Whole consecutive lines of a JSON-lines file (`AuditFile.pieces`), the first of them line `start`."""

    path: str
    start: int
    data: bytes

    def numbered_lines(self) -> Iterator[tuple[int, bytes]]:
        """The block's lines with their numbers, each as iterating the file gives it (ending with its newline)."""
        return enumerate(io.BytesIO(self.data), start=self.start)

    @property
    def end(self) -> int:
        """The number of the block's last line."""
        return self.start + self.data.count(b"\n") - (1 if self.data.endswith(b"\n") else 0)


def _joined_lines(
    path: str, head: list[bytes], lines: Iterator[tuple[int, bytes]], block_bytes: int
) -> Iterator[LineBlock]:
    """Blocks of the lines that `lines` goes on with, after `head`; on a break, the lines before it, then the error."""
    block, size, start = head, sum(map(len, head)), 1
    try:
        for _, line in lines:
            if size >= block_bytes:
                yield LineBlock(path, start, b"".join(block))
                start += len(block)
                block, size = [], 0
            block.append(line)
            size += len(line)
    except BadBodyError:
        yield LineBlock(path, start, b"".join(block))
        raise
    yield LineBlock(path, start, b"".join(block))


def _read_blocks(path: str, start: int, stream: BinaryIO, block_bytes: int) -> Iterator[LineBlock]:
    """Blocks of whole lines read from `stream`, the first of them line `start`."""
    pending = b""
    while True:
        try:
            chunk = stream.read(block_bytes)
        except OSError as exc:
            raise BadBodyError(f"{path}: unreadable after line {start - 1}: {exc}") from exc
        if not chunk:
            break
        data = pending + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield LineBlock(path, start, data[:cut])
            start += data.count(b"\n", 0, cut)
        pending = data[cut:]
    if pending:
        yield LineBlock(path, start, pending)


def line_items(path: str | Path, number: int, line: bytes) -> list[FileItem]:
    """The items of line `number` of a JSON-lines file (none for a blank line); what is not one, `Malformed`."""
    if not line.strip():
        return []
    origin = f"{path}:{number}"
    try:
        items = decode_items(line)
    except BadBodyError as exc:
        return [_not_an_item(origin, line, exc)]
    return [FileItem(origin, unwrap(item, origin)) for item in items]


def _not_an_item(origin: str, line: bytes, problem: BadBodyError) -> FileItem:
    return FileItem(origin, Malformed(line.decode("utf-8", "replace").rstrip("\r\n"), f"{origin}: {problem}"))


def audit_files(paths: Iterable[str | Path]) -> list[AuditFile]:
    """An `AuditFile` per path, a directory standing for every file under it (sorted, as rotated logs are named)."""
    files: list[AuditFile] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(AuditFile(inner) for inner in sorted(path.rglob("*")) if inner.is_file())
        else:
            files.append(AuditFile(path))
    return files


def read_files(files: Iterable[AuditFile], on_error: Callable[[str], None]) -> Iterator[FileItem]:
    """The items of every file in turn; a file that fails is reported to `on_error` and the next one is read."""
    for file in files:
        try:
            yield from file
        except BadBodyError as exc:
            on_error(str(exc))


def unwrap(item: object, origin: str) -> object:
    """The audit event inside a cloud log record (see the module docstring); any other item as it is."""
    if not isinstance(item, dict):
        return item
    if "protoPayload" in item:
        return Malformed(item_json(item), f"{origin}: {GKE_REASON}")
    properties = item.get("properties")
    if isinstance(properties, dict) and item.get("category") in _AKS_CATEGORIES and "log" in properties:
        inner = properties["log"]
        if isinstance(inner, str):
            try:
                return orjson.loads(inner)
            except orjson.JSONDecodeError as exc:
                reason = f"{origin}: AKS record: properties.log is not JSON: {exc}"
                return Malformed(item_json(item), reason)
        return inner
    return item


def _numbered_lines(stream: BinaryIO, path: Path) -> Iterator[tuple[int, bytes]]:
    number = 0
    try:
        for number, line in enumerate(stream, start=1):
            yield number, line
    except (EOFError, OSError, zlib.error) as exc:
        raise BadBodyError(f"{path}: unreadable after line {number}: {exc}") from exc


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True
