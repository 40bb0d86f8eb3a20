"""auditcov's library: the event model, the store, the OpenAPI catalogue and matcher, coverage readers and reports.

Nothing here imports `sink`: the live service depends on this package, never the reverse.
"""
