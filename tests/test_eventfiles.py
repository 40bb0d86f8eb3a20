"""merge/eventfiles.py on the real fixtures and on files derived from them: shapes, gzip, cloud wrappers, damage."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditcov.merge.decode import Malformed
from auditcov.merge.errors import BadBodyError
from auditcov.merge.eventfiles import GKE_REASON, AuditFile

AUDIT = Path(__file__).parent / "fixtures" / "audit"


def read(path: Path) -> list:
    return list(AuditFile(path))


def good(entries) -> list[dict]:
    return [entry.item for entry in entries if not isinstance(entry.item, Malformed)]


def bad(entries) -> list[Malformed]:
    return [entry.item for entry in entries if isinstance(entry.item, Malformed)]


def test_json_lines_file_items_carry_file_and_line():
    entries = read(AUDIT / "audit2rbac/demo.log")
    assert len(entries) == 37 and not bad(entries)
    assert entries[0].origin.endswith("audit2rbac/demo.log:1")
    assert entries[36].origin.endswith("audit2rbac/demo.log:37")
    assert entries[0].item["auditID"] == "033d17af-082d-4b24-aa22-627752e83d71"


def test_single_event_documents_and_the_malformed_falco_file():
    assert [item["stage"] for item in good(read(AUDIT / "falco/exec_pod.json"))] == ["ResponseStarted"]
    (malformed,) = bad(read(AUDIT / "falco/fal_01_003.json"))
    assert malformed.raw == '{"kind": 0}'
    assert malformed.reason.endswith("falco/fal_01_003.json:1: kind '0' is not EventList or Event")


def test_a_pretty_printed_event_list_document(tmp_path):
    events = good(read(AUDIT / "apisnoop/example-user-agent.log"))
    document = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "metadata": {}, "items": events}
    path = tmp_path / "list.json"
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    entries = read(path)
    assert good(entries) == events
    assert entries[7].origin == f"{path} item 8"


def test_a_broken_pretty_printed_document_is_quarantined_whole(tmp_path):
    path = tmp_path / "cut.json"
    text = orjson.dumps({"kind": "EventList", "items": [{"auditID": "a"}]}, option=orjson.OPT_INDENT_2).decode()
    path.write_text(text[:-10])
    entries = read(path)
    assert len(entries) == 1
    assert entries[0].item.raw == text[:-10] and entries[0].item.reason.startswith(f"{path}: ")


def test_gzip_is_read_by_content_whatever_the_name(tmp_path):
    plain = (AUDIT / "audit2rbac/demo.log").read_bytes()
    for name in ("demo.log.gz", "demo.log"):
        path = tmp_path / name
        path.write_bytes(gzip.compress(plain))
        file = AuditFile(path)
        assert good(file) == good(read(AUDIT / "audit2rbac/demo.log"))
        assert file.bytes_read == file.size


def test_a_truncated_gzip_keeps_what_came_before_and_names_the_line(tmp_path):
    plain = (AUDIT / "audit2rbac/demo.log").read_bytes()
    path = tmp_path / "cut.log.gz"
    compressed = gzip.compress(plain)
    path.write_bytes(compressed[: len(compressed) // 2])
    seen = []
    with pytest.raises(BadBodyError, match=r"cut\.log\.gz: unreadable after line \d+"):
        for entry in AuditFile(path):
            seen.append(entry)
    assert 0 < len(seen) < 37
    assert good(seen) == good(read(AUDIT / "audit2rbac/demo.log"))[: len(seen)]


def test_bad_lines_are_malformed_items_between_good_ones(tmp_path):
    lines = (AUDIT / "audit2rbac/demo.log").read_bytes().splitlines()
    path = tmp_path / "mixed.log"
    # A garbage first line, a line cut in half, a blank line, and an EventList on one line.
    event_list = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [orjson.loads(lines[3])]})
    path.write_bytes(b"\n".join([b"garbage", lines[0], lines[1][:50], b"", lines[2], event_list]) + b"\n")
    entries = read(path)
    assert [entry.origin.rsplit(":", 1)[1] for entry in entries] == ["1", "2", "3", "5", "6"]
    assert [m.raw for m in bad(entries)] == ["garbage", lines[1][:50].decode()]
    assert bad(entries)[1].reason.startswith(f"{path}:3: ")
    assert good(entries) == [orjson.loads(line) for line in (lines[0], lines[2], lines[3])]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("apisnoop/e2e-event-grep-output.txt", "not audit data: no line is JSON"),
        ("audit2rbac/demo-policy.yaml", "not audit data: no line is JSON"),
    ],
)
def test_text_that_is_not_audit_data_is_an_error(name, message):
    with pytest.raises(BadBodyError, match=message):
        read(AUDIT / name)


def test_binary_and_empty_and_missing_files_are_errors(tmp_path, png_file):
    with pytest.raises(BadBodyError, match="not audit data: the content is binary"):
        read(png_file)
    (tmp_path / "empty.log").write_text("\n\n")
    with pytest.raises(BadBodyError, match=r"empty\.log: the file is empty"):
        read(tmp_path / "empty.log")
    with pytest.raises(BadBodyError, match=r"missing\.log: cannot read"):
        read(tmp_path / "missing.log")


def test_aks_records_are_unwrapped_whether_log_is_a_string_or_an_object():
    (aks,) = read(AUDIT / "elastic/test-kube-audit.log")
    assert aks.item["auditID"] == "ad26f7bc-f1c6-4097-90f1-e0924e12f257" and aks.item["verb"] == "update"
    entries = read(AUDIT / "elastic/test-audit.log")
    assert entries[4].item["user"]["username"] == "aksService"
    assert entries[4].item["stageTimestamp"] == "2025-09-30T06:23:35.101182Z"


def test_gke_records_are_quarantined_raw_with_the_reason():
    entries = read(AUDIT / "elastic/test-audit.log")
    assert len(entries) == 5
    (gke,) = bad(entries)
    assert gke.reason == f"{AUDIT / 'elastic/test-audit.log'}:4: {GKE_REASON}"
    assert orjson.loads(gke.raw)["protoPayload"]["methodName"] == "io.k8s.get"


DEMO_EVENTS = [orjson.loads(line) for line in (AUDIT / "audit2rbac/demo.log").read_bytes().splitlines()]
# Lines that are neither JSON nor blank, nor look like the start of a JSON document.
GARBAGE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1).filter(
    lambda text: text.strip() and not text.strip().startswith(("{", "[")) and not _is_json(text)
)


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.lists(st.sampled_from(range(len(DEMO_EVENTS))), min_size=1, max_size=20),
    shape=st.sampled_from(["lines", "event-list", "pretty-event-list", "array"]),
    compress=st.booleans(),
)
def test_any_shape_reads_back_the_same_events_in_order(tmp_path, picks, shape, compress):
    events = [DEMO_EVENTS[pick] for pick in picks]
    if shape == "lines":
        data = b"".join(orjson.dumps(event) + b"\n" for event in events)
    elif shape == "array":
        data = orjson.dumps(events)
    else:
        document = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": events}
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2 if shape.startswith("pretty") else 0)
    path = tmp_path / f"events-{shape}-{compress}"
    path.write_bytes(gzip.compress(data) if compress else data)
    assert [entry.item for entry in AuditFile(path)] == events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(st.sampled_from(range(len(DEMO_EVENTS))), GARBAGE), min_size=1, max_size=15))
def test_garbage_lines_are_kept_with_their_line_numbers_between_the_events(tmp_path, lines):
    path = tmp_path / "mixed.log"
    encoded = [orjson.dumps(DEMO_EVENTS[line]) if isinstance(line, int) else line.encode() for line in lines]
    path.write_bytes(b"".join(line + b"\n" for line in encoded))
    if not any(isinstance(line, int) for line in lines):
        with pytest.raises(BadBodyError, match="not audit data"):
            read(path)
        return
    entries = read(path)
    assert [entry.origin for entry in entries] == [f"{path}:{number}" for number in range(1, len(lines) + 1)]
    for entry, line in zip(entries, lines, strict=True):
        if isinstance(line, int):
            assert entry.item == DEMO_EVENTS[line]
        else:
            assert isinstance(entry.item, Malformed) and entry.item.raw == line


def test_json_lines_whose_first_line_was_cut_short_are_still_read_line_by_line(tmp_path):
    lines = (AUDIT / "audit2rbac/demo.log").read_bytes().splitlines()
    path = tmp_path / "rotated.log"
    path.write_bytes(b"\n".join([b'{"kind":"Event","audi', *lines[1:]]))
    entries = read(path)
    assert [entry.origin for entry in entries] == [f"{path}:{number}" for number in range(1, 38)]
    assert entries[0].item.raw == '{"kind":"Event","audi'
    assert good(entries) == DEMO_EVENTS[1:]
