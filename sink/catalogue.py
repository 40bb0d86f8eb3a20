"""The live sink's endpoint matcher, from its `openapi` and `kubeconfig` settings.

At start the catalogue is read (a file or folder, or fetched from the cluster for `auto`), saved as the store's
catalogue with the shipped eligibility lists, and handed to the ingest path as a `Matcher`.

A cluster source may not answer yet when the sink starts: in `blocking` webhook mode the kube-apiserver cannot
finish starting until its audit webhook answers, so waiting for it would deadlock both. The sink then starts
without a matcher and `follow_cluster` keeps asking; once the catalogue arrives, new batches are mapped as they
come, and the events stored meanwhile are mapped in one job of the store's writer.
"""

from __future__ import annotations

import asyncio
import logging

from auditcov.merge.errors import SpecError
from auditcov.merge.openapi.catalogue import Catalogue, load_catalogue
from auditcov.merge.openapi.eligibility import load_eligibility
from auditcov.merge.openapi.live import (
    ClusterAccess,
    cluster_access,
    cluster_version,
    default_kubeconfig,
    fetch_catalogue,
)
from auditcov.merge.openapi.matcher import Matcher
from auditcov.merge.openapi.stored import RemapResult, map_unmapped, save_catalogue, stored_matcher, write_catalogue
from auditcov.merge.store import open_store
from auditcov.sink.ingest import Ingestor
from auditcov.sink.settings import Settings
from auditcov.sink.writer import Writer

#: Seconds between attempts to fetch a cluster's catalogue that did not answer at start.
RETRY_INTERVAL_S = 1.0

log = logging.getLogger(__name__)


async def sink_matcher(settings: Settings) -> Matcher | None:
    """The matcher `settings.openapi` asks for, its catalogue saved in the store; without `openapi`, the store's
    own catalogue if it has one, else None (events then stay unmapped until `auditcov remap`).

    A cluster that does not answer yet also gives None: see `follow_cluster`. A kubeconfig that cannot be used
    is an error at once."""
    if not settings.openapi:
        matcher = await asyncio.to_thread(_stored, settings.db)
        if matcher is None:
            log.info("no endpoint catalogue: events are stored unmapped (set openapi, or `auditcov remap` later)")
        else:
            _log_catalogue("the store's endpoint catalogue", matcher.catalogue)
        return matcher
    version = cluster_version(settings.openapi)
    if version is None:
        # Reading and parsing a 4 MB spec takes a second: keep it off the event loop.
        catalogue = await asyncio.to_thread(load_catalogue, settings.openapi)
    else:
        access = _access(settings)
        try:
            catalogue = await fetch_catalogue(access, version)
        except SpecError as exc:
            log.warning("endpoint catalogue not available yet (%s); events are stored unmapped until it is", exc)
            return None
    await asyncio.to_thread(_save, settings.db, catalogue)
    _log_catalogue("endpoint catalogue", catalogue)
    return Matcher(catalogue)


def _log_catalogue(what: str, catalogue: Catalogue) -> None:
    log.info("%s from %s: %d operations", what, catalogue.source, len(catalogue.endpoints))


async def follow_cluster(settings: Settings, ingestor: Ingestor, writer: Writer) -> RemapResult:
    """Fetch the cluster's catalogue until it answers, then map with it: from then on as batches arrive, and the
    events stored before in one writer job (queued after every batch prepared without it, so none is missed)."""
    access = _access(settings)
    version = cluster_version(settings.openapi) or "auto"
    while True:
        await asyncio.sleep(RETRY_INTERVAL_S)
        try:
            catalogue = await fetch_catalogue(access, version)
            break
        except SpecError as exc:
            log.info("endpoint catalogue not available yet: %s", exc)
    eligibility = load_eligibility()
    matcher = Matcher(catalogue)
    ingestor.matcher = matcher

    def adopt() -> RemapResult:
        write_catalogue(ingestor.db.conn, catalogue, eligibility)
        return map_unmapped(ingestor.db.conn, matcher)

    result = await writer.submit(adopt)
    log.warning(
        "endpoint catalogue from %s: %d operations; %d events stored before it mapped",
        catalogue.source,
        len(catalogue.endpoints),
        result.events,
    )
    return result


def _access(settings: Settings) -> ClusterAccess:
    return cluster_access(settings.kubeconfig or default_kubeconfig())


def _stored(db_path: str) -> Matcher | None:
    db = open_store(db_path)
    try:
        return stored_matcher(db)
    finally:
        db.conn.close()


def _save(db_path: str, catalogue: Catalogue) -> None:
    db = open_store(db_path)
    try:
        save_catalogue(db, catalogue, load_eligibility())
    finally:
        db.conn.close()
