"""Compression, retention and the continuous aggregate's refresh: the TimescaleDB jobs the revisions add
run as the owner role and do their work, and isolation holds over compressed chunks.

The jobs are run with ``CALL run_job(id)``, as TimescaleDB's scheduler would run them (the scheduler is
off on the test server; TimescaleDB 2.19.3's scheduler also fails every job on PostgreSQL 15.20: see
README.md).
"""

import psycopg


def _jobs(conn) -> list[tuple[int, str, str]]:
    return list(conn.execute(
        "SELECT job_id, proc_name, owner FROM timescaledb_information.jobs "
        "WHERE job_id >= 1000 ORDER BY job_id"))  # the policies (TimescaleDB's own jobs are numbered below 1000)


def test_the_jobs_run_as_the_owner_and_keep_every_organisation_apart(as_role, dbkit_seeded_db):
    with psycopg.connect(dbkit_seeded_db.conninfo, autocommit=True) as admin:
        per_org = dict(admin.execute("SELECT org_id, count(*) FROM rtpm.readings GROUP BY 1").fetchall())
        oldest = admin.execute("SELECT min(time) FROM rtpm.readings").fetchone()[0]
        jobs = _jobs(admin)
        # compression and retention of readings; refresh and retention of readings_hourly; all run as the owner
        assert sorted(proc for _, proc, _ in jobs) == ["policy_compression", "policy_refresh_continuous_aggregate",
                                                       "policy_retention", "policy_retention"]
        assert {owner for _, _, owner in jobs} == {"rtpm_owner"}
        for job, _, _ in jobs:
            admin.execute(f"CALL run_job({job})")
        compressed, old_uncompressed = admin.execute(
            "SELECT count(*) FILTER (WHERE is_compressed), count(*) FILTER (WHERE NOT is_compressed "
            "AND range_end < now() - INTERVAL '8 days') FROM timescaledb_information.chunks "
            "WHERE hypertable_schema = 'rtpm' AND hypertable_name = 'readings'").fetchone()
        assert compressed >= 20 and old_uncompressed == 0  # 30 days of 1-day chunks, all but the last week
        # 30 days of readings are inside the 90-day retention: nothing dropped
        assert admin.execute("SELECT min(time) FROM rtpm.readings").fetchone()[0] == oldest
    for org, readings in per_org.items():
        with as_role("enforce", tenant=org) as conn:  # compressed chunks read through the scoped view
            assert conn.execute("SELECT org_id, count(*) FROM rtpm.readings_scoped GROUP BY 1").fetchall() == \
                [(org, readings)]
            assert conn.execute("SELECT sum(samples) FROM rtpm.readings_hourly_scoped").fetchone()[0] == readings
