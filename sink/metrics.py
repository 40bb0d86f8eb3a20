"""The sink's Prometheus metrics, in a registry of their own (one per app, so apps in one process never clash)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from auditcov.sink.ingest import IngestResult

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class Metrics:
    """Counters for events and batches, a batch latency histogram and body bytes."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.received = Counter("auditcov_events_received", "Items received, valid or not", ["run"], registry=r)
        self.stored = Counter("auditcov_events_stored", "Events newly stored", ["run"], registry=r)
        self.duplicate = Counter("auditcov_events_duplicate", "Events already stored (retries)", ["run"], registry=r)
        self.quarantined = Counter("auditcov_events_quarantined", "Invalid items quarantined", ["run"], registry=r)
        self.batches = Counter("auditcov_batches", "Ingest requests answered, by status code", ["code"], registry=r)
        self.body_bytes = Counter("auditcov_body_bytes", "Request body bytes read on ingest", registry=r)
        self.latency = Histogram(
            "auditcov_batch_seconds", "Time from request to committed answer", buckets=_LATENCY_BUCKETS, registry=r
        )

    def count_batch(self, run: str, items: int, result: IngestResult) -> None:
        self.received.labels(run).inc(items)
        self.stored.labels(run).inc(result.accepted)
        self.duplicate.labels(run).inc(result.duplicates)
        self.quarantined.labels(run).inc(result.quarantined)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
