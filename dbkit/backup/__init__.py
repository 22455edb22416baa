"""Backups: pg_dump streamed to a :mod:`dbkit.backup._storage` backend (S3 or disk) with a manifest."""
