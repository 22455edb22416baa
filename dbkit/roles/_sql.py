"""SQL generated from the role model: idempotent statements that create a missing role and
correct a drifted one.  The same text runs online (``dbkit roles apply``, the migrate
preflight, ``op.apply_roles()``) and is written into the offline script (``dbkit migrate sql``),
so it reads nothing from the server beforehand.  Never a password: those are set online only.
"""

from __future__ import annotations

from dbkit._db import quote_ident, quote_literal
from dbkit.roles._model import ATTRIBUTES, Role, RoleModel


def ensure_role(role: Role) -> str:
    """One ``DO`` block: create the role when missing, else correct every attribute that differs."""
    name, lit = quote_ident(role.name), quote_literal(role.name)
    keywords = " ".join(role.attribute_keywords())
    drifted = [f"{ATTRIBUTES[k]} IS DISTINCT FROM {'true' if on else 'false'}" for k, on in role.attributes.items()]
    if role.connection_limit is not None:
        drifted.append(f"rolconnlimit <> {int(role.connection_limit)}")
    return (
        f"DO $dbkit$ BEGIN\n"
        f"  -- {role.kind}: {role.name}\n"
        f"  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {lit}) THEN\n"
        f"    CREATE ROLE {name} WITH {keywords};\n"
        f"  ELSIF EXISTS (SELECT FROM pg_roles WHERE rolname = {lit} AND ({' OR '.join(drifted)})) THEN\n"
        f"    ALTER ROLE {name} WITH {keywords};\n"
        f"  END IF;\n"
        + ("  -- LOGIN only for TimescaleDB's jobs: never a password (a deployer without CREATEROLE cannot and\n"
           "  -- need not remove one: `dbkit roles check` as a superuser reports it)\n"
           "  IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN\n"
           f"    ALTER ROLE {name} PASSWORD NULL;\n"
           "  END IF;\n"
           if role.login and not role.takes_password else "")
        + "END $dbkit$"
    )


def owner_access(owner: Role) -> str:
    """The migrating (session) role may ``SET ROLE`` to the owner, which may create the schema."""
    lit = quote_literal(owner.name)
    return (
        "DO $dbkit$ BEGIN\n"
        "  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)\n"
        f"     AND NOT pg_has_role(session_user, {lit}, 'MEMBER') THEN\n"
        f"    EXECUTE format('GRANT %I TO %I', {lit}, session_user);\n"
        "  END IF;\n"
        f"  IF NOT has_database_privilege({lit}, current_database(), 'CREATE') THEN\n"
        f"    EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', current_database(), {lit});\n"
        "  END IF;\n"
        "END $dbkit$"
    )


def model_statements(model: RoleModel) -> list[str]:
    """Every statement that applies the model's roles, in kind order (the owner first)."""
    stmts = [ensure_role(role) for role in model.roles]
    stmts.insert(1, owner_access(model.owner))
    return stmts
