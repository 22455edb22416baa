"""The text of the files ``dbkit init`` writes: templates (package data in ``dbkit/templates/``) filled in
from the checked options (:class:`Project`).  Pure: nothing here touches the disk except reading templates."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from string import Template
from typing import Any

#: the example table the first revision creates
TABLE = "notes"


class _Raw(str):
    """A name rendered as it is (a constant of the generated module), not as a string literal."""


@dataclass(frozen=True)
class Project:
    """The checked options of ``dbkit init``: what the generated files say."""

    schema: str
    rls: str  # tenant | jwt | none
    tenant_claim: str
    jwt_claims: str
    jwt_user_key: str
    jwt_tenant_key: str | None
    roles: dict[str, tuple[str, ...]]  # kind -> names (owner and enforce: at least one)
    password_env: dict[str, str]  # role -> variable, where not DBKIT_PASSWORD_<ROLE>
    extensions: tuple[str, ...]
    migrations_dir: str = "migrations"
    date: str = ""
    table: str = field(default=TABLE)
    adopting: bool = False  # an existing Alembic project: its version table is plain Alembic's (public)

    @property
    def owner(self) -> str | None:
        """What rows of the example table belong to: "tenant", "user" or None (no RLS)."""
        return None if self.rls == "none" else self.claims().default_owner

    @property
    def owner_column(self) -> str | None:
        return f"{self.owner}_id" if self.owner else None

    def claims(self):
        from dbkit.rls import Claims

        return Claims(self.rls, tenant_setting=self.tenant_claim, jwt_setting=self.jwt_claims,
                      jwt_user_key=self.jwt_user_key, jwt_tenant_key=self.jwt_tenant_key)

    def logins(self) -> list[str]:
        return [*self.roles["enforce"], *self.roles["bypass"], *self.roles["readonly"]]

    def password_variable(self, role: str) -> str:
        from dbkit.config import password_variable

        return self.password_env.get(role) or password_variable(role)

    def tool_settings(self) -> dict[str, Any]:
        """``[tool.dbkit]`` as data (what :func:`section` writes), for the result."""
        values: dict[str, Any] = {"schema": self.schema, "extensions": list(self.extensions),
                                  "migrations_dir": self.migrations_dir}
        if self.adopting:
            values["version_table_schema"] = "public"
        values["role_owner"] = self.roles["owner"][0]
        for kind in ("enforce", "bypass", "readonly"):
            values[f"role_{kind}"] = ",".join(self.roles[kind]) or "none"
        values["rls_model"] = self.rls
        if self.rls == "tenant":
            values["tenant_claim"] = self.tenant_claim
        elif self.rls == "jwt":
            values |= {"jwt_claims": self.jwt_claims, "jwt_user_key": self.jwt_user_key}
            if self.jwt_tenant_key:
                values["jwt_tenant_key"] = self.jwt_tenant_key
        return values

    def roles_config(self) -> dict[str, Any]:
        """``[tool.dbkit.roles]``: the password variables that are not ``DBKIT_PASSWORD_<ROLE>``."""
        config: dict[str, Any] = {}
        for kind, names in self.roles.items():
            custom = {name: self.password_env[name] for name in names if name in self.password_env}
            if custom:
                config[kind] = {"password_env": custom[names[0]] if len(names) == 1 else custom}
        return config

    def settings(self):
        """dbkit's :class:`~dbkit.config.Settings` for this project (for the role model's grants)."""
        from dbkit.config import Settings

        return Settings(schema=self.schema, extensions=self.extensions, role_owner=self.roles["owner"][0],
                        role_enforce=self.roles["enforce"], role_bypass=self.roles["bypass"] or "none",
                        role_readonly=self.roles["readonly"] or "none", rls_model=self.rls,
                        tenant_claim=self.tenant_claim, jwt_claims=self.jwt_claims, jwt_user_key=self.jwt_user_key,
                        jwt_tenant_key=self.jwt_tenant_key, roles_config=self.roles_config())


def _template(name: str) -> str:
    return (resources.files("dbkit") / "templates" / name).read_text(encoding="utf-8")


def _fill(name: str, **values: Any) -> str:
    return Template(_template(name)).substitute(**values)


def _py(value: Any) -> str:
    """A Python literal with double quotes (the values are validated identifiers and SQL)."""
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        items = ", ".join(_py(v) for v in value)
        return f"({items}{',' if len(value) == 1 else ''})" if isinstance(value, tuple) else f"[{items}]"
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_py(v)}" for k, v in value.items()) + ")"
    return repr(value)


def _lines(items: list[dict[str, Any]], indent: str = "    ") -> str:
    """A list of ``dict(...)`` literals, one per line (a long one over several)."""
    out = []
    for item in items:
        text = f"{indent}{_py(item)},"
        if len(text) > 118:
            text = f"{indent}dict(\n" + "".join(f"{indent * 2}{k}={_py(v)},\n" for k, v in item.items()) + f"{indent}),"
        out.append(text + "\n")
    return "[\n" + "".join(out) + "]" if out else "[]"


def _toml(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


# --------------------------------------------------------------------- the first revision

def _policies(p: Project) -> list[dict[str, Any]]:
    """Per-command policies: SELECT for the enforce and readonly roles, writes for the enforce roles."""
    enforce, readers = list(p.roles["enforce"]), [*p.roles["enforce"], *p.roles["readonly"]]
    name = f"{p.table}_{p.owner}"
    return [dict(policy_name=f"{name}_select", command="SELECT", roles=readers, using=_Raw("MATCH")),
            dict(policy_name=f"{name}_insert", command="INSERT", roles=enforce, with_check=_Raw("MATCH")),
            dict(policy_name=f"{name}_update", command="UPDATE", roles=enforce, using=_Raw("MATCH"),
                 with_check=_Raw("MATCH")),
            dict(policy_name=f"{name}_delete", command="DELETE", roles=enforce, using=_Raw("MATCH"))]


def _revision(p: Project) -> str:
    from dbkit import roles

    grants = roles.model(p.settings()).grants([p.table], p.schema)
    for grant in grants:  # the table and schema as the revision's constants
        if grant.get("object_type") == "SCHEMA":
            grant["target"] = _Raw("SCHEMA")
        else:
            grant["target"], grant["schema"] = _Raw("TABLE"), _Raw("SCHEMA")
    claims = p.claims()
    if p.owner:
        match = f"{p.owner_column} = {claims.predicate(p.owner, cast='uuid')}"
        setting = claims.jwt_setting if p.rls == "jwt" else claims.tenant_setting
        model_text = (f"RLS model {p.rls} ({claims.describe() if p.rls == 'jwt' else 'claim ' + setting}), rows "
                      f"owned per {p.owner} ({p.owner_column})")
        rls_doc = (f"\nRow-level security: {p.table} is ENABLEd and FORCEd; its policies compare {p.owner_column} with "
                   f"the claim in\n{setting}, read once per query (a sub-select).  Unset or empty, the claim is NULL "
                   "and\nmatches no row: fail closed.  The SQL is literal, computed by `dbkit init` from the RLS "
                   "model.\n")
        policies = _lines(_policies(p))
        rls_constants = (f"# the owner column compared with the claim (dbkit.rls.Claims.predicate, RLS model {p.rls})\n"
                         f"MATCH = {_py(match)}\nPOLICIES = {policies}\n")
        rls_upgrade = ("    op.enable_rls(TABLE, schema=SCHEMA, force=True)  # FORCE: the owner role obeys it too\n"
                       "    for policy in POLICIES:\n"
                       "        op.create_policy(table_name=TABLE, schema=SCHEMA, **policy)\n")
    else:
        model_text = "RLS model none (a single-tenant application: the role model's grants protect the data)"
        rls_doc, rls_constants, rls_upgrade = "", "", ""
    public = p.schema == "public"
    summary = ", ".join(filter(None, [f"extensions {', '.join(p.extensions)}" if p.extensions else "",
                                      "roles", "" if public else f"schema {p.schema}",
                                      f"table {p.table}" + (f" with RLS per {p.owner}" if p.owner else "")]))
    owner_col = f'        sa.Column("{p.owner_column}", pg.UUID, nullable=False),\n' if p.owner else ""
    return _fill(
        "revision.py.tmpl", summary=summary, model_text=model_text, rls_doc=rls_doc, date=p.date,
        schema_repr=_py(p.schema), table_repr=_py(p.table), extensions_repr=_py(tuple(p.extensions)),
        rls_constants=rls_constants, grants_repr=_lines(grants), rls_upgrade=rls_upgrade,
        create_schema="" if public else "    op.execute(f'CREATE SCHEMA IF NOT EXISTS \"{SCHEMA}\"')\n",
        drop_schema="" if public else "    op.execute(f'DROP SCHEMA IF EXISTS \"{SCHEMA}\"')  # only if empty\n",
        owner_op_column=owner_col, index_name=_index_name(p),
        index_op_columns=", ".join([*([_py(p.owner_column)] if p.owner else []), 'sa.text("created_at DESC")']))


def _index_name(p: Project) -> str:
    return f"{p.table}_{p.owner}_created_idx" if p.owner else f"{p.table}_created_idx"


# --------------------------------------------------------------------- the other files

def _models(p: Project) -> str:
    owner_col = f'    Column("{p.owner_column}", UUID, nullable=False),\n' if p.owner else ""
    return _fill("models.py.tmpl", table=p.table, owner_model_column=owner_col, index_name=_index_name(p),
                 index_model_columns=", ".join([*([_py(p.owner_column)] if p.owner else []),
                                                'text("created_at DESC")']))


def _seeds(p: Project) -> str:
    columns = ["id", *([p.owner_column] if p.owner else []), "title", "body", "created_at"]
    body = ['    titles, bodies = ctx.pool("sentence", 200), ctx.pool("paragraph", 200)']
    if p.owner:
        doc = (f"Rows belong to five {p.owner}s (random ids, the same for the same --seed), so the RLS matrix of\n"
               f"tests/test_rls.py compares one {p.owner}'s rows with another's.")
        body += [f"    {p.owner}s = [ctx.uuid() for _ in range(5)]",
                 f"    for {p.owner_column}, created in zip(ctx.spread({p.owner}s, ctx.rows), ctx.times(ctx.rows),"
                 " strict=True):",
                 f"        yield ctx.uuid(), {p.owner_column}, ctx.rng.choice(titles), ctx.rng.choice(bodies), created"]
    else:
        doc = "The project uses no row-level security: the rows belong to nobody in particular."
        body += ["    for created in ctx.times(ctx.rows):",
                 "        yield ctx.uuid(), ctx.rng.choice(titles), ctx.rng.choice(bodies), created"]
    return _fill("seed.py.tmpl", table=p.table, owner_doc=doc, seed_columns=", ".join(_py(c) for c in columns),
                 seed_body="\n".join(body))


_READONLY_TEST = '''

def test_readonly_role_only_reads(as_role, dbkit_settings):
    table = f'"{dbkit_settings.schema}".$table'
    with as_role("readonly") as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"INSERT INTO {table} (title, body) VALUES ('no', 'writes')")
'''


def _tests(p: Project) -> str:
    if p.owner:
        return _fill("test_rls.py.tmpl", schema=p.schema, table=p.table, owner=p.owner, owner_column=p.owner_column)
    readonly = bool(p.roles["readonly"])
    return _fill("test_grants.py.tmpl", schema=p.schema, table=p.table,
                 pytest_import="import pytest\n" if readonly else "",
                 readonly_test=Template(_READONLY_TEST).substitute(table=p.table) if readonly else "")


def _env_example(p: Project) -> str:
    lines = ["# Copy to .env (git-ignored) and fill in; real values never go into git.",
             "# Structure (schema, roles, RLS model) is in pyproject.toml [tool.dbkit]; secrets and URLs live here.",
             "",
             "# dev | test | staging | prod.  dev without DATABASE_URL uses the embedded cluster in .dbkit/.",
             "DBKIT_ENV=dev",
             "",
             "# Unset in dev (`dbkit dev up`); required elsewhere.  Migrations need a role that may create roles.",
             "# DATABASE_URL=postgresql://postgres:change-me@127.0.0.1:5432/app",
             "",
             "# Passwords of the LOGIN roles, sent to the server as SCRAM verifiers only (not needed on the",
             "# embedded dev cluster; required in DBKIT_ENV=prod)."]
    lines += [f"# {p.password_variable(role)}=change-me" for role in p.logins()]
    lines += ["",
              "# Backups (`dbkit backup`): backups/ in the project unless DBKIT_BACKUP_URI says otherwise.",
              "# DBKIT_BACKUP_URI=s3://my-bucket/db",
              "# S3_ENDPOINT=http://127.0.0.1:9000        (MinIO; unset for AWS)",
              "# S3_ACCESS_KEY=change-me",
              "# S3_SECRET_KEY=change-me",
              ""]
    return "\n".join(lines)


def section(p: Project) -> str:
    """``[tool.dbkit]`` (and ``[tool.dbkit.roles.<kind>]`` for custom password variables) as TOML text."""
    values = p.tool_settings()
    notes = {"role_bypass": "  # none: no role of that kind", "rls_model": "  # tenant | jwt | none",
             "version_table_schema": "  # plain Alembic's version table: public.alembic_version"}
    out = ["# dbkit's settings (written by `dbkit init`): keys are the settings `dbkit config show` lists;",
           "# environment variables and .env override them.  Secrets and URLs never go here.",
           "[tool.dbkit]"]
    out += [f"{key} = {_toml(value)}{notes.get(key, '')}" for key, value in values.items()]
    if p.owner:
        out += [f"# The RLS matrix (dbkit.testing) reads each table's owner column: {p.owner_column} (rows per "
                f"{p.owner});", "# say otherwise in [tool.dbkit.rls] or [tool.dbkit.rls.tables.<table>].",
                "# Tables without any tenant's rows (plans, countries), read by all and changed by none:",
                '# [tool.dbkit.rls] shared_tables = ["plans"] (see `dbkit rls audit` in the README).']
    for kind, config in p.roles_config().items():
        out += ["", f"[tool.dbkit.roles.{kind}]", f"password_env = {_toml(config['password_env'])}"]
    return "\n".join(out) + "\n"


def render_files(p: Project) -> tuple[dict[str, str], str, str]:
    """({relative path: text}, the [tool.dbkit] section, a whole new pyproject.toml)."""
    m = p.migrations_dir
    files = {
        "alembic.ini": _fill("alembic.ini.tmpl", migrations_dir=m),
        f"{m}/env.py": _template("env.py.tmpl"),
        f"{m}/script.py.mako": _template("script.py.mako"),
        f"{m}/models.py": _models(p),
        f"{m}/versions/0001_initial.py": _revision(p),
        f"seeds/{p.table}.py": _seeds(p),
        "tests/test_rls.py": _tests(p),
        ".env.example": _env_example(p),
    }
    text = section(p)
    new_file = ("# Written by `dbkit init`.\n\n[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n\n" + text)
    return files, text, new_file
