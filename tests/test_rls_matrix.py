"""The RLS matrix and escalation checks on the reference schema (one line enables them)."""

from dbkit.testing import test_rls_escalation, test_rls_matrix  # noqa: F401
