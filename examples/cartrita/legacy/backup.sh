#!/bin/bash
# Database backup script (Cartrita's docs, "Backup Strategy"): the whole dump is written to local disk
# twice (plain SQL, then gzip), nothing checks pg_dump's exit code, and nothing records what the file holds.
DATE=$(date +%Y%m%d_%H%M%S)
docker-compose exec postgres pg_dump -U robbie cartrita > "backup_${DATE}.sql"
gzip "backup_${DATE}.sql"

# Upload to secure storage
aws s3 cp "backup_${DATE}.sql.gz" s3://your-backup-bucket/
