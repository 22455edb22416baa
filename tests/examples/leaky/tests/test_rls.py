from dbkit.testing import test_rls_escalation, test_rls_matrix  # noqa: F401
