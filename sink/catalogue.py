"""The live sink's endpoint matcher, from its `openapi` and `kubeconfig` settings.

At start the catalogue is read (a file or folder, or fetched from the cluster for `auto`), saved as the store's
catalogue with the shipped eligibility lists, and handed to the ingest path as a `Matcher`.
"""

from __future__ import annotations

import asyncio

from merge.openapi.catalogue import Catalogue, load_catalogue
from merge.openapi.eligibility import load_eligibility
from merge.openapi.live import cluster_access, cluster_version, default_kubeconfig, fetch_catalogue
from merge.openapi.matcher import Matcher
from merge.openapi.stored import save_catalogue, stored_matcher
from merge.store import open_store
from sink.settings import Settings


async def sink_matcher(settings: Settings) -> Matcher | None:
    """The matcher `settings.openapi` asks for, its catalogue saved in the store; without `openapi`, the store's
    own catalogue if it has one, else None (events then stay unmapped until `auditcov remap`)."""
    if not settings.openapi:
        return await asyncio.to_thread(_stored, settings.db)
    version = cluster_version(settings.openapi)
    if version is not None:
        access = cluster_access(settings.kubeconfig or default_kubeconfig())
        catalogue = await fetch_catalogue(access, version)
    else:
        # Reading and parsing a 4 MB spec takes a second: keep it off the event loop.
        catalogue = await asyncio.to_thread(load_catalogue, settings.openapi)
    await asyncio.to_thread(_save, settings.db, catalogue)
    return Matcher(catalogue)


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
