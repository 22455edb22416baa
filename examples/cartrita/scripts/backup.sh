#!/bin/bash
# The database backup (cron or CI, daily), replacing legacy/backup.sh's `pg_dump | gzip | aws s3 cp`:
# pg_dump streamed (zstd) to S3 with a manifest written last, nothing on local disk; then the retention.
# DBKIT_BACKUP_URI (e.g. s3://your-backup-bucket/cartrita), DATABASE_URL and the S3 settings come from the
# environment or .env.  Exit code non-zero when either step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

dbkit backup --to "${DBKIT_BACKUP_URI:?set DBKIT_BACKUP_URI, e.g. s3://your-backup-bucket/cartrita}"
# keep the last 3, one a day for a week, one a week for a month, one a month for half a year
dbkit backup prune --from "$DBKIT_BACKUP_URI" --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 6 --apply
