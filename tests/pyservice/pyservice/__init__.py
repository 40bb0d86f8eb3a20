"""A small HTTP service for the Python agent's tests: a few handlers doing different work (tests/pyservice)."""
