"""Backups: pg_dump streamed to a :mod:`dbkit.backup.storage` backend (S3 or disk) with a manifest."""
