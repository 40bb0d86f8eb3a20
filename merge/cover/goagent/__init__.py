"""The Go coverage agent: its source, shipped as package data, and the decoding of what it serves.

`auditcov_coverage_agent.go` is the agent (its contract is its header comment); `auditcov cover build`
(merge/cover/gobuild.py) adds it to a main package. Its `GET /v1/meta` and `GET /v1/counters` answers are a
covmeta and a covcounters file, read here with merge/cover/covdata.py. The agent's own blocks are measurement
machinery, not code under test, so decoding leaves out every file whose base name is `AGENT_FILE`.
"""

from __future__ import annotations

from importlib import resources

from auditcov.merge.cover.covdata import MetaFile, add_to_profile, parse_counters, parse_meta
from auditcov.merge.cover.model import Block, Profile, gc_paused

AGENT_FILE = "auditcov_coverage_agent.go"


def agent_source() -> bytes:
    """The Go agent's source as installed with auditcov."""
    return resources.files(__name__).joinpath(AGENT_FILE).read_bytes()


def is_agent_file(file: str) -> bool:
    """Whether a covered file (`module/path/file.go` as Go names it) is the agent's own."""
    return file.rpartition("/")[2] == AGENT_FILE


def decode_agent_coverage(meta: bytes, counters: bytes, *, where: str) -> Profile:
    """One agent's meta-data and counter bytes as a profile, without the agent's own blocks.

    `where` names the agent in errors (e.g. "agent kube-apiserver of run e2e-1").
    """
    with gc_paused():
        layout = parse_meta(meta, where=f"{where}: meta-data")
        profile = Profile(layout.mode)
        counts = parse_counters(counters, layout, where=f"{where}: counters")
        add_to_profile(profile, layout, counts, where=where)
        leave_out_agent(profile, layout)
    return profile


def leave_out_agent(profile: Profile, layout: MetaFile) -> None:
    """Remove the blocks of the agent's file(s) in `layout` from `profile`."""
    units = layout.units
    for package in layout.packages:
        for function in package.functions:
            if not is_agent_file(function.file):
                continue
            for index in range(function.first_block, function.first_block + function.block_count):
                block = Block(function.file, *units[5 * index : 5 * index + 4])
                del profile.statements[block], profile.counts[block]
        for file in filter(is_agent_file, package.files):
            profile.packages.pop(file, None)
