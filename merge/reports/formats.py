"""Every file format of `auditcov report` but text, rendered from the store by one call: the CLI and the bundle
export (merge/bundle.py) both go through `render_report`, so a format reads the same models either way.

Formats: json (endpoints and code per test), apisnoop, html (merge/reports/html.py), lcov and cobertura (code
coverage of the run, or of one test), junit (the conformance gate).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cached_property

import orjson
import sqlite_utils

from auditcov.merge.cover.model import Profile, gc_paused
from auditcov.merge.cover.pertest import PerTestCoverage, per_test_coverage
from auditcov.merge.cover.runprofile import profile_of_test, run_profile
from auditcov.merge.errors import AuditcovError
from auditcov.merge.openapi.eligibility import ConformanceTest, load_conformance_tests
from auditcov.merge.reports.apisnoop import apisnoop_report
from auditcov.merge.reports.cobertura import cobertura_report
from auditcov.merge.reports.coverjson import add_code_to_endpoint_report
from auditcov.merge.reports.endpointcov import EndpointCoverage, endpoint_coverage
from auditcov.merge.reports.endpointjson import endpoint_report
from auditcov.merge.reports.junit import junit_report
from auditcov.merge.reports.lcov import lcov_report

FILE_FORMATS = ("json", "apisnoop", "html", "lcov", "cobertura", "junit")
#: The formats that report code coverage, and so take a test.
CODE_FORMATS = ("lcov", "cobertura")


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """What a report may be asked for beyond its run (each format reads the fields it uses)."""

    test: str | None = None  # lcov, cobertura: one test's coverage instead of the run's
    successful_only: bool = False  # endpoint formats: only successful hits count as tested
    release: str | None = None  # apisnoop
    previous: frozenset[str] | None = None  # apisnoop: the previous release's operationIds
    conformance: dict[str, ConformanceTest] | None = None  # apisnoop: conformance.yaml (default: shipped)
    timestamp_ms: int | None = None  # cobertura: the report's time (default: report_time_ms())
    diff_base: str | None = None  # html: the run of the same store to compare with


def report_time_ms() -> int:
    """Now in milliseconds, or SOURCE_DATE_EPOCH's when set (reproducible builds' convention)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return int(epoch) * 1000
        except ValueError:
            raise AuditcovError(f"SOURCE_DATE_EPOCH must be whole seconds since the epoch, not {epoch!r}") from None
    return time.time_ns() // 1_000_000


class RunModels:
    """The shared models of one run, each read from the store once however many reports use it (a bundle renders
    six; `report --gate` reads the endpoint coverage for the report and the gate)."""

    def __init__(self, db: sqlite_utils.Database, run: str, *, successful_only: bool = False) -> None:
        self.db, self.run, self.successful_only = db, run, successful_only

    # Each model is millions of small objects and no cycles: read with the cyclic collector paused (its
    # collections walking them took a third of per_test_coverage at 400 tests: 6.2 s CPU against 4.7 s).
    @cached_property
    def coverage(self) -> EndpointCoverage:
        with gc_paused():
            return endpoint_coverage(self.db, self.run, successful_only=self.successful_only)

    @cached_property
    def per_test(self) -> list[PerTestCoverage]:
        with gc_paused():
            return per_test_coverage(self.db, self.run, event_spans=self.coverage.test_spans)

    @cached_property
    def profile(self) -> Profile:
        """The run's code coverage (merge/cover/runprofile.py)."""
        return run_profile(self.db, self.run)


def render_report(
    db: sqlite_utils.Database, run: str, output_format: str, options: ReportOptions, models: RunModels | None = None
) -> bytes:
    """The report of `run` in `output_format` (one of FILE_FORMATS), as the bytes of its file; `models` (of the
    same run and `successful_only`) saves reading what an earlier report read."""
    if models is None:
        models = RunModels(db, run, successful_only=options.successful_only)
    if options.test is not None and output_format not in CODE_FORMATS:
        raise AuditcovError(f"--test applies to {' and '.join(CODE_FORMATS)} only, not to {output_format}")
    if output_format in CODE_FORMATS:
        profile = models.profile if options.test is None else profile_of_test(db, run, options.test)
        if output_format == "lcov":
            return lcov_report(profile, options.test).encode()
        stamp = options.timestamp_ms if options.timestamp_ms is not None else report_time_ms()
        return cobertura_report(profile, stamp).encode()
    if options.diff_base is not None and output_format != "html":
        raise AuditcovError(f"--diff-base applies to html only, not to {output_format}")
    if output_format == "html":
        from auditcov.merge.reports.html import html_report

        return html_report(db, run, base=options.diff_base).encode()
    coverage = models.coverage
    if output_format == "junit":
        return junit_report(coverage).encode()
    if output_format == "json":
        per_test = models.per_test
        with gc_paused():  # the document is as many objects again
            document = endpoint_report(coverage)
            add_code_to_endpoint_report(document, per_test)
    elif output_format == "apisnoop":
        conformance = options.conformance if options.conformance is not None else load_conformance_tests()
        previous = None if options.previous is None else set(options.previous)
        document = apisnoop_report(coverage, conformance, options.release, previous)
    else:
        raise AuditcovError(f"unknown report format {output_format!r} (known: text, {', '.join(FILE_FORMATS)})")
    # The json report is for programs (a big run's is tens of MB): indenting it would double it.
    return orjson.dumps(document, option=0 if output_format == "json" else orjson.OPT_INDENT_2) + b"\n"
