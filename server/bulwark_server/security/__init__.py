"""Transport security, identities and roles, the audit trail, and overload shedding."""
