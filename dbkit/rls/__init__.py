"""Row-level security: scoped sessions for applications and tests, and the catalog audit."""
