"""Tiny geometry for auditcov's per-test Python coverage tests: each function has its own lines."""
