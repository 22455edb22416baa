"""Helpers shared by apply, list and check: connections, catalog reads, one-line SQL for fixes."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping

from dbkit.errors import ConfigError
from dbkit.roles._model import ATTRIBUTES, Role

_PRIVILEGE_ORDER = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN",
                    "USAGE", "CREATE", "EXECUTE")
_DEFAULT_ACL_OBJECTS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}
#: Roles whose membership reads or writes around table grants.
_POWERFUL_BUILTIN_ROLES = frozenset({"pg_read_all_data", "pg_write_all_data", "pg_execute_server_program",
                                     "pg_write_server_files", "pg_read_server_files"})
_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")


def _ident(name: str) -> str:
    """An identifier for the one-line fixes we print (quoted only when it must be)."""
    return name if _PLAIN_IDENT.fullmatch(name) else '"' + name.replace('"', '""') + '"'


def _privs(privileges: Iterable[str]) -> str:
    order = {p: i for i, p in enumerate(_PRIVILEGE_ORDER)}
    return ", ".join(sorted(set(privileges), key=lambda p: (order.get(p, 99), p))) or "(none)"


@contextlib.contextmanager
def _connection(settings, conn) -> Iterator[object]:
    if conn is not None:
        yield conn
        return
    from dbkit import _db as db
    from dbkit import _target as target

    # roles are the administrator's work: DIRECT_DATABASE_URL (not the application's pooled DATABASE_URL) when set
    opened = db.connect(target.resolve_url(settings, direct=True), autocommit=True,
                        connect_timeout=settings.connect_timeout)
    try:
        yield opened
    finally:
        opened.close()


def _can_read_authid(conn) -> bool:
    return bool(conn.execute("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')").fetchone()[0])


def _stored_passwords(conn, names: list[str]) -> dict[str, str | None] | None:
    """``{role: rolpassword}`` from pg_authid, or None when it is not readable (not a superuser)."""
    if not _can_read_authid(conn):
        return None
    return dict(conn.execute("SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = ANY(%s)",
                             (names,)).fetchall())


def password_of(settings, role: Role) -> str | None:
    """The password of a LOGIN role from its variable (environment, .env, .env.<env>), or None."""
    if role.password_env is None:
        return None
    return settings.passwords.get(role.password_env) or None


def _missing_password_error(settings, missing: list[Role]) -> ConfigError:
    first = missing[0].password_env
    problem = "is not set"
    if len(missing) > 1:
        problem += f" (nor {', '.join(d.password_env for d in missing[1:])})"
    return ConfigError(
        first, problem,
        purpose=f"sets the password of the LOGIN role {missing[0].name}; DBKIT_ENV=prod requires one for "
        "every LOGIN role (environment or .env.prod)",
        example=f"{first}=<a long random secret>",
    )


def _attribute_diffs(row: Mapping[str, object], role: Role) -> list[tuple[str, str, str]]:
    """``[(what, expected, actual)]`` between a pg_roles row (column -> value) and the model."""
    diffs = []
    for keyword, on in role.attributes.items():
        actual = bool(row[ATTRIBUTES[keyword]])
        if actual != on:
            diffs.append((f"attribute {keyword}", keyword if on else f"NO{keyword}",
                          keyword if actual else f"NO{keyword}"))
    if role.connection_limit is not None and row["rolconnlimit"] != role.connection_limit:
        diffs.append(("attribute CONNECTION LIMIT", str(role.connection_limit), str(row["rolconnlimit"])))
    return diffs


def _role_rows(conn, names: list[str]) -> dict[str, dict[str, object]]:
    cols = ["rolname", *ATTRIBUTES.values(), "rolconnlimit"]
    rows = conn.execute(f"SELECT {', '.join(cols)} FROM pg_roles WHERE rolname = ANY(%s)", (names,)).fetchall()
    return {r[0]: dict(zip(cols, r, strict=True)) for r in rows}
