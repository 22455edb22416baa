"""Row-level security of Life-Buddy's tables, proven on a real PostgreSQL by dbkit's pytest plugin
(`pip install 'dbkit[testing]'`; run with `pytest`).

The plugin starts a server (or uses DBKIT_TEST_SERVER_URL), migrates a database to head and seeds it
(tiny profile: 6 users).  The two imported tests are the RLS matrix (cognitive_engine_rls and
cognitive_engine_full x SELECT/INSERT/UPDATE/DELETE on users, goals, tasks and memories: with a JWT
`sub` the engine sees and changes exactly that user's rows, without one nothing; the trusted role sees
everything) and the escalation checks (cognitive_engine_rls cannot become cognitive_engine_full or
lifebuddy_owner, turn RLS off or touch policies; FORCE holds for the owner).
"""

import psycopg

from dbkit.testing import test_rls_escalation, test_rls_matrix  # noqa: F401


def _rows_per_user(url, schema, table):
    """(user id, rows) of ``table``, most rows first, read as the superuser (no RLS)."""
    with psycopg.connect(url.conninfo) as admin:
        return admin.execute(
            f'SELECT user_id, count(*) FROM "{schema}".{table} GROUP BY 1 ORDER BY 2 DESC, 1').fetchall()


def test_engine_sees_only_the_users_goals_and_tasks(as_role, dbkit_seeded_db, dbkit_settings):
    schema = dbkit_settings.schema
    (mine, goals), (other, _) = _rows_per_user(dbkit_seeded_db, schema, "goals")[:2]
    with as_role("enforce", user=mine) as conn:
        me = conn.execute(f'SELECT id FROM "{schema}".users').fetchall()
        assert me == [(mine,)], "a user sees their own account only"
        seen = conn.execute(f'SELECT user_id, count(*) FROM "{schema}".goals GROUP BY 1').fetchall()
        assert seen == [(mine, goals)]
        # the tasks come along with the goals: no task of another user
        assert conn.execute(f'SELECT count(*) FROM "{schema}".tasks WHERE user_id <> %s', (mine,)).fetchone()[0] == 0
        # another user's goals cannot be changed: UPDATE finds none of them
        changed = conn.execute(f'UPDATE "{schema}".goals SET status = %s WHERE user_id = %s', ("execute", other))
        assert changed.rowcount == 0


def test_a_task_cannot_hang_off_another_users_goal(as_role, dbkit_seeded_db, dbkit_settings):
    """The composite key (user_id, goal_id): a task in my name under your goal is refused."""
    schema = dbkit_settings.schema
    (mine, _), (other, _) = _rows_per_user(dbkit_seeded_db, schema, "goals")[:2]
    with psycopg.connect(dbkit_seeded_db.conninfo) as admin:
        their_goal = admin.execute(f'SELECT id FROM "{schema}".goals WHERE user_id = %s LIMIT 1', (other,)).fetchone()[0]
    with as_role("enforce", user=mine) as conn:
        try:
            with conn.transaction():
                conn.execute(f'INSERT INTO "{schema}".tasks (user_id, goal_id, title) VALUES (%s, %s, %s)',
                             (mine, their_goal, "borrowed goal"))
        except psycopg.errors.ForeignKeyViolation:
            pass
        else:
            raise AssertionError("a task was attached to another user's goal")


def test_no_sub_no_rows(as_role, dbkit_settings):
    """A request without a JWT `sub` (claims unset) sees nothing in any table: fail closed."""
    schema = dbkit_settings.schema
    with as_role("enforce") as conn:
        for table in ("users", "goals", "tasks", "memories"):
            assert conn.execute(f'SELECT count(*) FROM "{schema}".{table}').fetchone()[0] == 0, table
