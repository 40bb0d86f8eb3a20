"""The exceptions auditcov raises for bad input; the command line turns each into a message and an exit code."""


class AuditcovError(Exception):
    """Base class: the message says which item is wrong and what is wrong with it."""


class BadEventError(AuditcovError):
    """One audit event is not usable (no auditID or stage, a field of the wrong type)."""


class BadBodyError(AuditcovError):
    """A request body or file is not any shape of audit events auditcov reads."""


class StoreError(AuditcovError):
    """The store cannot be opened or is of a schema this version does not read."""


class SpecError(AuditcovError):
    """An OpenAPI source cannot be read or is not a Kubernetes OpenAPI v2/v3 document."""


class NotFoundError(AuditcovError):
    """A run, test, endpoint or file the store does not have; the message says which (the sink answers 404)."""
