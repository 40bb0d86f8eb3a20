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
from xml.etree import ElementTree

from auditcov.merge.cover.model import Profile

DTD_URL = "http://cobertura.sourceforge.net/xml/coverage-04.dtd"


def _rate(hit: int, found: int) -> str:
    return f"{hit / found:.4g}" if found else "1"


def cobertura_report(profile: Profile, timestamp_ms: int) -> str:
    """The XML document for `profile`, stamped `timestamp_ms`."""
    files = profile.line_counts()
    packages: dict[str, list[str]] = {}
    for file in sorted(files):
        packages.setdefault(profile.package_of(file), []).append(file)
    found = sum(len(lines) for lines in files.values())
    hit = sum(1 for lines in files.values() for count in lines.values() if count)
    root = ElementTree.Element(
        "coverage",
        {
            "line-rate": _rate(hit, found),
            "branch-rate": "0",
            "lines-covered": str(hit),
            "lines-valid": str(found),
            "branches-covered": "0",
            "branches-valid": "0",
            "complexity": "0",
            "version": f"auditcov {version('auditcov')}",
            "timestamp": str(timestamp_ms),
        },
    )
    ElementTree.SubElement(ElementTree.SubElement(root, "sources"), "source").text = "."
    package_list = ElementTree.SubElement(root, "packages")
    for package, names in sorted(packages.items()):
        package_found = sum(len(files[name]) for name in names)
        package_hit = sum(1 for name in names for count in files[name].values() if count)
        package_element = ElementTree.SubElement(
            package_list,
            "package",
            {"name": package, "line-rate": _rate(package_hit, package_found), "branch-rate": "0", "complexity": "0"},
        )
        classes = ElementTree.SubElement(package_element, "classes")
        for name in names:
            lines = files[name]
            class_hit = sum(1 for count in lines.values() if count)
            class_element = ElementTree.SubElement(
                classes,
                "class",
                {
                    "name": name.rsplit("/", 1)[-1],
                    "filename": name,
                    "line-rate": _rate(class_hit, len(lines)),
                    "branch-rate": "0",
                    "complexity": "0",
                },
            )
            ElementTree.SubElement(class_element, "methods")
            line_list = ElementTree.SubElement(class_element, "lines")
            for number, count in sorted(lines.items()):
                attributes = {"number": str(number), "hits": str(count), "branch": "false"}
                ElementTree.SubElement(line_list, "line", attributes)
    ElementTree.indent(root)
    body = ElementTree.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" ?>\n<!DOCTYPE coverage SYSTEM "{DTD_URL}">\n{body}\n'
