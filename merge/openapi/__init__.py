"""The endpoint catalogue (from OpenAPI v2/v3 files or a live cluster), conformance eligibility, and the matcher."""
