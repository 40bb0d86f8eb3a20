"""Code coverage: readers for Go text profiles, Go binary covdata directories and coverage.py data, one model."""
