"""The HTML report (`auditcov report --format html`, and the sink's `GET /`): one self-contained page.

`page_document` turns the shared models (endpoint coverage, per-test code coverage) into the one JSON document
the page reads; `render_page` puts that document, the page's CSS and its JS (package data in `page/`) into a
single HTML file that works offline from `file://`. The page draws everything itself (hand-written SVG).

The document is compact, for a million events over 400 tests with code coverage for each:
- `endpoints`: `[operationId, method, path, level, group, kind, flags]` (flags: `ELIGIBLE`, `PENDING`), the
  current (not deprecated) endpoints only, as every report counts them; everything else refers to an endpoint
  by its index here;
- `tests`: `[name, conformance]`; `hits`: one flat list of `test, endpoint, how, ok, hits, successful`
  sextuples (`how`: the `HOW` bits of the ways the test hit the endpoint; `ok`: those of them with a successful
  hit; `hits`, `successful`: how many events, and how many answered 1xx-3xx); `endpoint_hits`: per endpoint
  index, every event that hit it, `[hits, first, last, {status class: hits}]`;
- `files`: file names, interned; `segments`: the distinct (file, covered lines) pairs of all tests, each
  `[file, start, length, gap, length, ...]`: the lines as runs, every number after the file relative to the end
  of the run before it, so that numbers stay small. Tests share most of them (the code every test runs: a
  kube-apiserver test touches thousands of files, nearly all the same way);
- `code`: per test index, `{"segments": [start, length, gap, length, ...], "window", "problems", "shared_with",
  "first_hit_only", "incomplete", "coarse"}` (as in `coverjson.lines_of_test_json`): the test's segment
  numbers, ascending, as runs in the same way;
- `diff` (when asked for): `diff.diff_runs` of the base run and this one, as the query API answers it;
- and `run`, `generated`, `catalogue`, `unmatched` (reason -> events), `unmapped` (events not mapped yet),
  `problem` (why there are no endpoints), `live` (added by the sink: the store's runs).
`FORMAT_VERSION` changes whenever a field changes meaning or goes away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib.resources import files

import numpy as np
import orjson
import sqlite_utils

from auditcov.merge.cover.model import gc_paused
from auditcov.merge.cover.pertest import PerTestCoverage, per_test_coverage
from auditcov.merge.errors import StoreError
from auditcov.merge.events import format_time, now_us
from auditcov.merge.openapi.catalogue import group_label
from auditcov.merge.reports.coderanges import Ranges, RunRanges, run_ranges
from auditcov.merge.reports.diff import diff_runs
from auditcov.merge.reports.endpointcov import EndpointCoverage, Hits, merged_hits
from auditcov.merge.reports.queries import RunData, load_run_data

FORMAT_VERSION = 1

ELIGIBLE, PENDING = 1, 2
#: How a test hit an endpoint: its own e2e.test client, another client naming it, or indirectly.
HOW = {"e2e": 1, "other": 2, "namespace": 4, "window": 8}

_PAGE = files("auditcov.merge.reports") / "page"


def page_document(
    run: str,
    coverage: EndpointCoverage | None,
    code: Iterable[PerTestCoverage],
    *,
    ranges: RunRanges | None = None,
    problem: str | None = None,
    diff: dict | None = None,
) -> dict:
    """The page's data (see the module docstring). `coverage` is None when the store has no catalogue yet;
    `problem` then says why the endpoints are missing. `ranges` is the tests' covered lines when the caller has
    them already (`RunData.ranges`). `diff` is `diff.diff_runs` of another run and this one."""
    document: dict = {"format_version": FORMAT_VERSION, "run": run, "generated": format_time(now_us())}
    tests: dict[str, int] = {}
    document["tests"] = []

    def test_index(name: str, conformance: bool) -> int:
        if name not in tests:
            tests[name] = len(tests)
            document["tests"].append([name, int(conformance)])
        return tests[name]

    if coverage is None:
        document.update(endpoints=[], hits=[], problem=problem)
    else:
        _add_endpoints(document, coverage, test_index)
    code = list(code)
    if ranges is None:
        ranges = run_ranges(code)
    # Segments numbered, and files too, in the order the tests meet them.
    order, numbered = ranges.first_seen([result.test for result in code])
    file_index: dict[str, int] = {}
    document["files"], document["segments"], document["code"] = [], [], {}
    for file, covered in map(ranges.segments.__getitem__, order):
        if file not in file_index:
            file_index[file] = len(file_index)
            document["files"].append(file)
        document["segments"].append([file_index[file], *_range_runs(covered)])
    for result, numbers in zip(code, numbered, strict=True):
        window = result.window
        document["code"][str(test_index(result.test, False))] = {
            "segments": _runs(numbers),
            "window": None if window is None else [format_time(window.start_us), format_time(window.end_us),
                                                    window.source],
            "problems": result.problems,
            "shared_with": sorted(result.shared_with),
            "first_hit_only": result.first_hit_only,
            "incomplete": result.incomplete,
            "coarse": result.coarse,
        }  # fmt: skip
    if diff is not None:
        document["diff"] = diff
    return document


def _add_endpoints(document: dict, coverage: EndpointCoverage, test_index: Callable[[str, bool], int]) -> None:
    """`endpoints`, `endpoint_hits`, `hits` (see the module docstring), `unmatched` and `unmapped`."""
    current = [state for state in coverage.endpoints if not state.endpoint.deprecated]
    document["catalogue"] = coverage.catalogue_source
    document["endpoints"] = [
        [e.operation_id, e.method, e.path, e.level, group_label(e.group), e.kind or "(no kind)",
         (ELIGIBLE if s.eligible else 0) | (PENDING if s.pending else 0)]
        for s in current for e in (s.endpoint,)
    ]  # fmt: skip
    index = {state.endpoint.operation_id: i for i, state in enumerate(current)}
    document["endpoint_hits"] = {
        str(i): _hits_json(coverage.hits_of(operation_id))
        for operation_id, i in index.items()
        if coverage.hits_of(operation_id).count
    }
    for name in sorted(coverage.tests):
        test_index(name, coverage.tests[name])
    how: dict[tuple[int, int], int] = {}
    for bit, direct in ((HOW["e2e"], coverage.direct), (HOW["other"], coverage.direct_other)):
        for operation_id, names in direct.items():
            for name in names:
                if operation_id in index:
                    key = (test_index(name, False), index[operation_id])
                    how[key] = how.get(key, 0) | bit
    for operation_id, by_test in coverage.indirect.items():
        for name, ways in by_test.items():
            if operation_id in index:
                key = (test_index(name, False), index[operation_id])
                how[key] = how.get(key, 0) | sum(HOW[way] for way in ways)
    names = [name for name, _ in document["tests"]]
    hits: list[int] = []
    for (test, endpoint), bits in sorted(how.items()):
        ways = coverage.test_hits(names[test]).get(current[endpoint].endpoint.operation_id, {})
        total = merged_hits(ways.values())
        # The ways with a successful hit, for the page's "successful hits only".
        ok = sum(HOW[way] for way, item in ways.items() if way != "direct" and item.successful)
        if ways.get("direct") is not None and ways["direct"].successful:
            ok |= bits & (HOW["e2e"] | HOW["other"])
        hits += (test, endpoint, bits, ok, total.count, total.successful)
    document["hits"] = hits
    document["unmatched"] = dict(coverage.unmatched.most_common())
    document["unmapped"] = coverage.unmapped


def _hits_json(hits: Hits) -> list:
    """`[hits, first, last, {status class: hits}]` (times in RFC 3339)."""
    json = hits.to_json()
    return [json["hits"], json["first"], json["last"], json["status"]]


def _runs(numbers: list[int]) -> list[int]:
    """Distinct numbers as runs of consecutive ones, `[start, length, gap, length, ...]`: each start relative to the
    end of the run before (the first to 0). In numpy: a test of a big run has thousands of segments."""
    if not numbers:
        return []
    ordered = np.sort(np.array(numbers, dtype=np.int64))
    firsts = np.flatnonzero(np.append(True, np.diff(ordered) != 1))
    first, last = ordered[firsts], ordered[np.append(firsts[1:], len(ordered)) - 1]
    encoded = np.empty(2 * len(firsts), dtype=np.int64)
    encoded[0::2] = first - np.append(0, last[:-1])
    encoded[1::2] = last - first + 1
    return encoded.tolist()


def _range_runs(ranges: Ranges) -> list[int]:
    """`coderanges` ranges in `_runs`' form: `[start, length, gap, length, ...]`, each start relative to the end of
    the run before (the first to 0)."""
    encoded: list[int] = []
    end = 0
    for first, last in zip(ranges[0::2], ranges[1::2], strict=True):
        encoded += (first - end, last - first + 1)
        end = last
    return encoded


def empty_document(setup: str) -> dict:
    """The page's data for a store that holds nothing yet: `setup` says how to send events to the sink."""
    return {"format_version": FORMAT_VERSION, "empty": True, "setup": setup, "generated": format_time(now_us())}


def render_page(document: dict, *, title: str = "auditcov report") -> str:
    """One HTML file: the page's template with its CSS, its JS and `document` inlined."""
    # `<` only occurs inside JSON strings, where \u003c means the same: nothing in the data can end the script.
    data = orjson.dumps(document).decode().replace("<", "\\u003c")
    template = (_PAGE / "report.html").read_text()
    parts = {
        "/*TITLE*/": _escape(title),
        "/*CSS*/": (_PAGE / "report.css").read_text(),
        "/*DATA*/": data,
        "/*JS*/": (_PAGE / "report.js").read_text(),
    }
    for marker, text in parts.items():
        before, found, after = template.partition(marker)
        if not found:
            raise RuntimeError(f"the page template has no {marker} marker")
        template = before + text + after
    return template


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def store_document(
    db: sqlite_utils.Database,
    run: str,
    *,
    base: str | None = None,
    load: Callable[[sqlite_utils.Database, str], RunData] = load_run_data,
) -> dict:
    """The page's data for `run` of the store, with the diff against run `base` when given; `load` reads a run
    (the sink passes its query cache's)."""
    try:
        data = load(db, run)
    except StoreError as exc:  # no catalogue yet: the page still shows the tests' code
        return page_document(run, None, per_test_coverage(db, run), problem=str(exc))
    return run_data_document(data, base=None if base is None else load(db, base))


def run_data_document(data: RunData, *, base: RunData | None = None) -> dict:
    """The page's data for one run's `RunData` (the sink's query cache holds them), with the diff against `base`."""
    diff = None if base is None else diff_runs(base, data)
    # A big run's document is millions of small objects and no cycles: collections would only walk them again.
    with gc_paused():
        return page_document(data.run, data.coverage, data.code.values(), ranges=data.ranges, diff=diff)


def html_report(db: sqlite_utils.Database, run: str, *, base: str | None = None) -> str:
    """The HTML report of `run`, with the diff against run `base` when given (the `--format html` output)."""
    return render_page(store_document(db, run, base=base), title=f"auditcov: {run}")
