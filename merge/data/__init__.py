"""Data shipped with auditcov: Kubernetes' conformance lists, unchanged copies from kubernetes/kubernetes
test/conformance/testdata/ (conformance.yaml @002c17be, ineligible_endpoints.yaml @01aa0f3f,
pending_eligible_endpoints.yaml @025f2834). Read through `merge.openapi.eligibility`; users may pass newer ones.
"""
