"""The LCOV tracefile form of code coverage (`auditcov report --format lcov`, the sink's `?format=lcov`), as
geninfo(1) writes it and genhtml(1) reads it: per source file `SF:`, one `DA:<line>,<hits>` per line of a block
(hits: the highest count of the blocks on that line), `LF:`/`LH:` (lines found and hit) and `end_of_record`.

Source paths are the profile's own (Go import paths, coverage.py's paths): genhtml resolves relative ones from
its working directory, so run it from the folder that holds the module tree (or pass `--no-source`). The test
name (`TN:`) keeps only what lcov allows in one: letters, digits and `_`.
"""

from __future__ import annotations

import re

from auditcov.merge.cover.model import Profile

_NOT_IN_TEST_NAME = re.compile(r"[^A-Za-z0-9_]+")


def lcov_test_name(test: str) -> str:
    """`test` as an lcov test name: each run of other characters becomes one `_`."""
    return _NOT_IN_TEST_NAME.sub("_", test).strip("_")


def lcov_report(profile: Profile, test: str | None = None) -> str:
    """The tracefile of `profile`; `test` names the records (`TN:`) when the profile is one test's."""
    name = lcov_test_name(test) if test else ""
    out: list[str] = []
    for file, lines in sorted(profile.line_counts().items()):
        out.append(f"TN:{name}")
        out.append(f"SF:{file}")
        out.extend(map("DA:%d,%d".__mod__, sorted(lines.items())))
        out.append(f"LF:{len(lines)}")
        out.append(f"LH:{sum(1 for count in lines.values() if count)}")
        out.append("end_of_record")
    return "\n".join(out) + "\n" if out else ""
