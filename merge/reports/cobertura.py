"""The Cobertura XML form of code coverage (`auditcov report --format cobertura`), valid against Cobertura's
coverage-04.dtd and shaped as Codecov reads it: Codecov takes each `class`'s `filename` and its `line`s'
`number` and `hits` (`branch="true"` lines need `condition-coverage`; these carry none), and refuses a report
whose `coverage/@timestamp` is older than its `max_report_age` (12 h by default).

A package is a Go package (or a Python file's directory), a class is one source file, its lines those of
`Profile.line_counts`. There are no branches (Go blocks are not branches) and no methods (the profile has no
function names), so those rates are 0 and `methods` is empty. `timestamp` is milliseconds since the epoch, as
coverage.py writes it: the caller gives the report's time (SOURCE_DATE_EPOCH, or now).
"""

from __future__ import annotations

from importlib.metadata import version
from xml.sax.saxutils import quoteattr

from auditcov.merge.cover.model import Profile

DTD_URL = "http://cobertura.sourceforge.net/xml/coverage-04.dtd"
#: Written as text, not built as a tree: a kube-apiserver build has over a million lines (ElementTree: 20 s).
_LINE = '            <line number="%d" hits="%d" branch="false"/>'


_VERSION = quoteattr(f"auditcov {version('auditcov')}")


def _rate(hit: int, found: int) -> str:
    return f"{hit / found:.4g}" if found else "1"


def _hit(lines: dict[int, int]) -> int:
    return len(lines) - list(lines.values()).count(0)


def cobertura_report(profile: Profile, timestamp_ms: int) -> str:
    """The XML document for `profile`, stamped `timestamp_ms`."""
    files = profile.line_counts()
    packages: dict[str, list[str]] = {}
    for file in sorted(files):
        packages.setdefault(profile.package_of(file), []).append(file)
    found = sum(len(lines) for lines in files.values())
    hit = sum(_hit(lines) for lines in files.values())
    out = [
        '<?xml version="1.0" ?>',
        f'<!DOCTYPE coverage SYSTEM "{DTD_URL}">',
        f'<coverage line-rate="{_rate(hit, found)}" branch-rate="0" lines-covered="{hit}" lines-valid="{found}" '
        f'branches-covered="0" branches-valid="0" complexity="0" version={_VERSION} timestamp="{timestamp_ms}">',
        "  <sources>",
        "    <source>.</source>",
        "  </sources>",
        "  <packages>",
    ]
    for package, names in sorted(packages.items()):
        package_found = sum(len(files[name]) for name in names)
        package_hit = sum(_hit(files[name]) for name in names)
        out.append(
            f'    <package name={quoteattr(package)} line-rate="{_rate(package_hit, package_found)}" '
            'branch-rate="0" complexity="0">'
        )
        out.append("      <classes>")
        for name in names:
            lines = files[name]
            out.append(
                f"        <class name={quoteattr(name.rsplit('/', 1)[-1])} filename={quoteattr(name)} "
                f'line-rate="{_rate(_hit(lines), len(lines))}" branch-rate="0" complexity="0">'
            )
            out.append("          <methods/>")
            out.append("          <lines>")
            out.extend(map(_LINE.__mod__, sorted(lines.items())))
            out.append("          </lines>")
            out.append("        </class>")
        out.append("      </classes>")
        out.append("    </package>")
    out.append("  </packages>")
    out.append("</coverage>")
    return "\n".join(out) + "\n"
