"""auditcov's live service: the audit webhook sink (aiohttp on uvloop), ingest, attribution, store writes."""
