"""The Go coverage agent's source, shipped as package data: `auditcov cover build` adds it to a main package.

`auditcov_coverage_agent.go` is the file; `merge/cover/gobuild.py` reads it with `importlib.resources`.
"""
