"""Statement coverage per Go package, as `go tool covdata percent` computes and prints it.

A package's figure is the statements of its blocks that ran over all statements of its blocks. Packages come
from the profile (`Profile.package_of`). Go prints a package without statements as its name with neither figure
nor line end (so the next package runs on); such packages (no blocks, or blocks of no statements) are left out here.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditcov.merge.cover.model import Profile


@dataclass(frozen=True, slots=True)
class PackageCoverage:
    package: str
    covered: int
    total: int

    @property
    def percent(self) -> float:
        # Computed as Go computes it, so that the rounding to one decimal agrees.
        return 100.0 * self.covered / self.total


def package_coverage(profile: Profile) -> list[PackageCoverage]:
    """Covered and total statements of each package with blocks, sorted by import path."""
    covered: dict[str, int] = {}
    total: dict[str, int] = {}
    package = {file: profile.package_of(file) for file in {block.file for block in profile.statements}}
    for block, statements in profile.statements.items():
        name = package[block.file]
        total[name] = total.get(name, 0) + statements
        if profile.counts[block]:
            covered[name] = covered.get(name, 0) + statements
    return [PackageCoverage(name, covered.get(name, 0), total[name]) for name in sorted(total) if total[name]]


def format_percent(rows: list[PackageCoverage]) -> str:
    """The lines `go tool covdata percent` prints."""
    return "".join(f"\t{row.package}\t\tcoverage: {row.percent:.1f}% of statements\n" for row in rows)
