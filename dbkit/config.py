"""Settings: declared once (the :class:`Settings` dataclass), resolved once, validated by pydantic.

Precedence, highest first:

1. a command-line flag (``dbkit --env staging …``)
2. the process environment (``DBKIT_ENV=staging``)
3. ``.env.<DBKIT_ENV>`` in the project directory (e.g. ``.env.test``)
4. ``.env`` in the project directory
5. ``[tool.dbkit]`` in the project's ``pyproject.toml`` (keys are the field names)
6. the default

An empty value counts as unset. The project directory is ``DBKIT_PROJECT_DIR`` or the nearest
directory at or above the current one that holds a ``pyproject.toml``.

Each setting is one field of :class:`Settings` (name, variable, default, purpose, example);
``dbkit config show``, the README's settings table (``python -m dbkit.config``) and the
check of ``.env.example`` are all read from there.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.dataclasses import dataclass

from dbkit._config_files import _read_dotenv, find_project_dir, parse_dotenv, read_pyproject
from dbkit._config_types import (
    ENVIRONMENTS,
    AddressingStyle,
    Anchor,
    Claim,
    Count,
    Duration,
    Environment,
    Flag,
    Ident,
    JsonKey,
    Memory,
    Names,
    Port,
    RlsModel,
    RoleNames,
    Text,
    Url,
    _printable,
    config_error,
)
from dbkit._env_check import parse_variables, prod_problems, read_values
from dbkit._urls import DbUrl
from dbkit.errors import ConfigError, Refused

__all__ = ["ENVIRONMENTS", "FIELDS", "Field", "Settings", "load_settings", "parse_dotenv", "find_project_dir",
           "password_variable"]

PASSWORD_PREFIX = "DBKIT_PASSWORD_"
#: [tool.dbkit.<name>] tables: structure that is not a single setting
SUBTABLES = ("rls", "roles", "variables")


def password_variable(role: str) -> str:
    """``app_rls`` -> ``DBKIT_PASSWORD_APP_RLS``: where a role's password comes from."""
    return PASSWORD_PREFIX + role.upper()


@dataclasses.dataclass(frozen=True)
class Field:
    """What dbkit says about one setting; ``name`` and ``default`` come from the field of :class:`Settings`."""

    env: str  # environment / .env variable
    purpose: str  # completes "it ..." in error messages
    example: str | None = None  # a value (None: the default)
    secret: bool = False
    name: str = ""  # attribute and [tool.dbkit] key
    default: Any = None


def setting(default: Any, env: str, purpose: str, example: str | None = None, *, secret: bool = False) -> Any:
    """One setting of :class:`Settings`: default, variable, purpose (completes "it ..."), example value."""
    return dataclasses.field(default=default, repr=not secret, metadata={"dbkit": Field(env, purpose, example, secret)})


@dataclass(frozen=True)
class Settings:
    """Resolved settings.  Build with :func:`load_settings`; never mutate (``dataclasses.replace`` re-validates)."""

    env: Environment = setting(
        "dev", "DBKIT_ENV", "selects the environment's safety rules and its .env.<env> file", "staging")
    database_url: Url = setting(
        None, "DATABASE_URL", "tells dbkit which PostgreSQL database to use (unset in dev: the embedded cluster)",
        "postgresql://app:secret@db.internal:5432/app", secret=True)
    direct_database_url: Url = setting(
        None, "DIRECT_DATABASE_URL",
        "is a direct connection (not through PgBouncer) for migrations, seeding, backups and restores",
        "postgresql://app:secret@db.internal:5432/app", secret=True)
    pgbouncer_ports: Names = setting(
        ("6432",), "DBKIT_PGBOUNCER_PORTS",
        "lists ports that mean PgBouncer: dbkit warns when a command that needs a direct connection uses one",
        "6432,6433")
    extensions: Names = setting(
        ("vector", "timescaledb", "pgcrypto"), "DBKIT_EXTENSIONS",
        "lists the PostgreSQL extensions the application needs")
    connect_timeout: Count = setting(
        5, "DBKIT_CONNECT_TIMEOUT", "bounds, in seconds, how long dbkit waits for a connection", "10")
    dev_dir: Path = setting(
        Path(".dbkit"), "DBKIT_DEV_DIR", "holds the embedded dev cluster (data, socket, log), relative to the project")
    dev_port: Port = setting(
        0, "DBKIT_DEV_PORT", "fixes the dev cluster's TCP port on 127.0.0.1 (0: pick a free one once and keep it)",
        "54329")
    dev_database: Text = setting(
        "dbkit", "DBKIT_DEV_DATABASE", "names the database dbkit creates in the dev cluster", "app")
    pg_bindir: Path | None = setting(
        None, "DBKIT_PG_BINDIR",
        "points at the PostgreSQL server programs (initdb, pg_ctl, postgres) for the dev cluster",
        "/usr/lib/postgresql/15/bin")
    # ---- schema and roles (the role model: owner / enforce / bypass / readonly)
    schema: Ident = setting("app", "DBKIT_SCHEMA", "names the schema that holds the application's tables")
    role_owner: Ident = setting(
        "app_owner", "DBKIT_ROLE_OWNER", "names the NOLOGIN role that owns every table (migrations run as it)")
    role_enforce: RoleNames = setting(
        ("app_rls",), "DBKIT_ROLE_ENFORCE",
        "names the LOGIN role(s) the application connects as, always subject to RLS (comma-separated)",
        "cognitive_engine_rls")
    role_bypass: RoleNames = setting(
        ("app_full",), "DBKIT_ROLE_BYPASS",
        "names the LOGIN BYPASSRLS role(s) for trusted workers (comma-separated; none: no such role)",
        "cognitive_engine_full")
    role_readonly: RoleNames = setting(
        ("app_readonly",), "DBKIT_ROLE_READONLY",
        "names the LOGIN read-only role(s), still subject to RLS (comma-separated; none: no such role)",
        "rtpm_grafana")
    # ---- row-level security: how the application tells PostgreSQL who is asking
    rls_model: RlsModel = setting(
        "tenant", "DBKIT_RLS_MODEL",
        "selects the RLS model: tenant (a tenant claim setting), jwt (JSON claims as PostgREST/Supabase "
        "set them) or none (no RLS: a single-tenant app)", "jwt")
    tenant_claim: Claim = setting(
        "app.tenant_id", "DBKIT_TENANT_CLAIM",
        "names the setting that carries the current tenant for RLS policies (model tenant)")
    user_claim: Claim = setting(
        "app.user_id", "DBKIT_USER_CLAIM", "names the setting that carries the current user for RLS policies "
        "(model tenant)")
    jwt_claims: Claim = setting(
        "request.jwt.claims", "DBKIT_JWT_CLAIMS",
        "names the setting that holds the JSON claims object (model jwt)")
    jwt_user_key: JsonKey = setting(
        "sub", "DBKIT_JWT_USER_KEY", "is the key of the JSON claims that holds the current user (model jwt)")
    jwt_tenant_key: JsonKey | None = setting(
        None, "DBKIT_JWT_TENANT_KEY",
        "is the key of the JSON claims that holds the current tenant or organisation (model jwt; unset: "
        "rows are owned per user)", "org_id")
    # ---- migrations
    migrations_dir: Path = setting(
        Path("migrations"), "DBKIT_MIGRATIONS_DIR",
        "points at the Alembic environment (env.py, versions/), relative to the project")
    version_table_schema: Ident = setting(
        "dbkit", "DBKIT_VERSION_TABLE_SCHEMA",
        "names the schema of Alembic's version table (public for a project that plain Alembic migrated)",
        "public")
    version_table: Ident = setting("alembic_version", "DBKIT_VERSION_TABLE", "names Alembic's version table")
    lock_timeout: Duration = setting(
        "5s", "DBKIT_LOCK_TIMEOUT", "bounds how long a migration statement waits for a table lock (0: forever)")
    statement_timeout: Duration = setting(
        "0", "DBKIT_STATEMENT_TIMEOUT", "bounds how long one migration statement may run (0: no limit)", "15min")
    migrate_set_role: Flag = setting(
        True, "DBKIT_MIGRATE_SET_ROLE", "makes migrations run as the owner role (SET ROLE) so it owns every object",
        "false")
    # ---- backups
    backup_uri: Text = setting(
        "backups", "DBKIT_BACKUP_URI",
        "says where `dbkit backup` writes (s3://bucket/prefix, file:///path or a path relative to the project)",
        "s3://acme-db-backups/prod")
    backup_stale_after: Duration = setting(
        "6h", "DBKIT_BACKUP_STALE_AFTER",
        "is the age after which an unfinished backup (no manifest, an open multipart upload, a .partial- "
        "file) counts as dead and is removed by `backup prune --apply` and the next successful backup", "12h")
    s3_endpoint: Text | None = setting(
        None, "S3_ENDPOINT", "points at an S3-compatible endpoint such as MinIO (unset: AWS)", "http://127.0.0.1:9000")
    s3_region: Text | None = setting(
        None, "S3_REGION", "names the S3 region (unset: boto3's default chain, e.g. AWS_REGION)", "eu-central-1")
    s3_access_key: Text | None = setting(
        None, "S3_ACCESS_KEY",
        "is the S3 access key (unset: boto3's standard chain, e.g. AWS_ACCESS_KEY_ID or an instance role)", "AKIA...",
        secret=True)
    s3_secret_key: Text | None = setting(
        None, "S3_SECRET_KEY", "is the S3 secret key (unset: boto3's standard chain)", "...", secret=True)
    s3_addressing_style: AddressingStyle = setting(
        "auto", "S3_ADDRESSING_STYLE", "selects S3 path-style or virtual-hosted addressing (MinIO usually needs path)",
        "path")
    age_recipients: Names = setting(
        (), "DBKIT_AGE_RECIPIENTS", "lists age public keys every backup is encrypted to (also --encrypt-to)", "age1...")
    age_identity_file: Path | None = setting(
        None, "DBKIT_AGE_IDENTITY_FILE", "points at the age identity (secret key) file used to decrypt backups",
        "~/.age/db.key")
    age_identity: Text | None = setting(
        None, "DBKIT_AGE_IDENTITY",
        "holds the age identity (AGE-SECRET-KEY-...) used to decrypt backups, when no file is used",
        "AGE-SECRET-KEY-1...", secret=True)
    # ---- seeding
    seed_maintenance_work_mem: Memory = setting(
        "512MB", "DBKIT_SEED_MAINTENANCE_WORK_MEM",
        "sizes maintenance_work_mem for index rebuilds after `dbkit seed --defer-indexes` (HNSW builds are "
        "much faster when the graph fits)", "1GB")
    seed_anchor: Anchor = setting(
        None, "DBKIT_SEED_ANCHOR",
        "fixes the \"now\" that time-based seeders count back from (ISO date or timestamp; unset: the start "
        "of the current day, UTC); same seed and same anchor give the same rows", "2026-01-01")
    lint_ignore: Names = setting(
        (), "DBKIT_LINT_IGNORE", "lists squawk rules that `dbkit migrate lint` ignores", "prefer-bigint-over-int")

    # ---- not settings: where they were resolved, and structure from [tool.dbkit.<table>]
    project_dir: Path = dataclasses.field(default_factory=Path.cwd)
    #: field name or password variable -> flag | env | .env.<env> | .env | pyproject (absent: default)
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: DBKIT_PASSWORD_<ROLE> (and [tool.dbkit.roles.<kind>] password_env) variables: secrets, never printed
    passwords: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    #: [tool.dbkit.roles]: what the role model says beyond the DBKIT_ROLE_* names (see dbkit.roles)
    roles_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: [tool.dbkit.rls]: per-table expectations of the RLS matrix (see dbkit.testing)
    rls: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: [tool.dbkit.variables] (dbkit._env_check), their (value, source): may be secrets; .env files' (name, file)
    variables: tuple[Any, ...] = ()
    variable_values: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict, repr=False)
    dotenv_keys: tuple[tuple[str, str], ...] = ()
    #: load_settings(lenient=True): the malformed settings (one line each), left at their default
    problems: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("dev_dir", "migrations_dir"):  # relative to the project
            object.__setattr__(self, name, self.project_dir / getattr(self, name))

    def password_variable_of(self, role: str) -> str:
        """The variable holding ``role``'s password: ``[tool.dbkit.roles.<kind>] password_env`` when the
        role model names one for it, else ``DBKIT_PASSWORD_<ROLE NAME IN CAPITALS>``."""
        for kind in ("owner", "enforce", "bypass", "readonly"):
            names = getattr(self, f"role_{kind}")
            if role in ((names,) if isinstance(names, str) else names):
                table = self.roles_config.get(kind)
                custom = table.get("password_env") if isinstance(table, Mapping) else None
                if isinstance(custom, Mapping):
                    custom = custom.get(role)
                if isinstance(custom, str) and custom:
                    return custom
        return password_variable(role)

    def password_for(self, role: str) -> str | None:
        """The password for ``role`` from its variable (:meth:`password_variable_of`), if set."""
        return self.passwords.get(self.password_variable_of(role)) or None

    @property
    def uses_dev_cluster(self) -> bool:
        """True when commands run against the embedded dev cluster."""
        return self.database_url is None and self.env == "dev"

    def require_database_url(self) -> DbUrl:
        """The configured URL, or a ConfigError saying it is needed (outside dev)."""
        if self.database_url is None:
            f = FIELDS_BY_NAME["database_url"]
            raise ConfigError(f.env, f"is not set and DBKIT_ENV={self.env} has no embedded cluster",
                              purpose="tells dbkit which PostgreSQL database to use", example=f.example)
        return self.database_url

    def environment_problems(self) -> list[str]:
        """What DBKIT_ENV=prod requires and is missing (empty elsewhere): see :func:`dbkit._env_check.prod_problems`."""
        return prod_problems(self)

    def require_environment(self, action: str) -> None:
        """Refuse a destructive ``action`` while DBKIT_ENV=prod requirements are unmet."""
        problems = self.environment_problems()
        if problems:
            raise Refused(f"{action} is refused: DBKIT_ENV=prod requirements are not met: {'; '.join(problems)}",
                          hint="fix them first (`dbkit check` lists them)")

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, printable value, source) for the role passwords and every setting, secrets masked."""
        rows = [(variable, "***" if value else "(empty)", self.sources.get(variable, "env"))
                for variable, value in sorted(self.passwords.items())]
        for f in FIELDS:
            value = getattr(self, f.name)
            if value is None:
                text = "(embedded dev cluster)" if f.name == "database_url" and self.env == "dev" else "(unset)"
            elif isinstance(value, DbUrl):
                text = value.masked
            elif f.secret:
                text = "***"
            else:
                text = _printable(value) or "(none)"
            rows.append((f.env, text, self.sources.get(f.name, "default")))
        return rows


FIELDS: tuple[Field, ...] = tuple(
    dataclasses.replace(f.metadata["dbkit"], name=f.name, default=f.default,
                        example=f.metadata["dbkit"].example or _printable(f.default))
    for f in dataclasses.fields(Settings) if "dbkit" in f.metadata)
FIELDS_BY_NAME = {f.name: f for f in FIELDS}
FIELDS_BY_ENV = {f.env: f for f in FIELDS}


# --------------------------------------------------------------------- where values come from

def load_settings(overrides: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None,
                  cwd: Path | None = None, lenient: bool = False) -> Settings:
    """Resolve every setting once: flag > env > .env.<env> > .env > [tool.dbkit] > default.

    ``overrides`` holds CLI flags by field name (``None`` means "not given").
    Raises :class:`ConfigError` (one line: variable, problem, purpose, example) for anything
    missing or malformed; with ``lenient`` a malformed value is left at its default and described in
    ``Settings.problems`` instead (``dbkit config check`` lists every problem).  The values of the
    application's variables (``[tool.dbkit.variables]``) are read, not judged: see dbkit._env_check.
    """
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for name in overrides:
        if name not in FIELDS_BY_NAME:
            raise ValueError(f"unknown setting {name!r}")
    project_dir = find_project_dir(cwd or Path.cwd(), environ)
    pyproject = read_pyproject(project_dir, FIELDS_BY_NAME, SUBTABLES)
    dotenv = _read_dotenv(project_dir / ".env")

    def by_name(variables: Mapping[str, str]) -> dict[str, Any]:
        return {FIELDS_BY_ENV[k].name: v for k, v in variables.items() if k in FIELDS_BY_ENV}

    # highest precedence first; DBKIT_ENV (from the others) decides which .env.<env> applies
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("flag", overrides), ("env", by_name(environ)), (".env", by_name(dotenv)),
        ("pyproject", {k: v for k, v in pyproject.items() if k in FIELDS_BY_NAME})]
    env = read_values(("env",), layers).get("env")
    try:
        env_file = f".env.{_validate({'env': env}, project_dir=project_dir).env}"
    except ConfigError:
        if not lenient:
            raise
        env_file = ".env.dev"
    env_dotenv = _read_dotenv(project_dir / env_file)
    layers.insert(2, (env_file, by_name(env_dotenv)))
    found = read_values(FIELDS_BY_NAME, layers)
    chosen = {name: found.get(name) for name in FIELDS_BY_NAME} | {"env": env}

    passwords: dict[str, str] = {}
    sources = {name: found[1] if found else "default" for name, found in chosen.items()}
    roles_config = pyproject.get("roles", {})
    # role passwords: DBKIT_PASSWORD_<ROLE>, and the variables [tool.dbkit.roles.<kind>] password_env names
    custom = set()
    for value in roles_config.values():
        variable = value.get("password_env") if isinstance(value, dict) else None
        custom |= {str(v) for v in variable.values()} if isinstance(variable, dict) else {str(variable or "")}
    for source, values in ((".env", dotenv), (env_file, env_dotenv), ("env", environ)):
        for key, value in values.items():
            if key.startswith(PASSWORD_PREFIX) or key in custom:
                passwords[key], sources[key] = value, source
    variables = parse_variables(pyproject.get("variables", {}), reserved={k: f.name for k, f in FIELDS_BY_ENV.items()})
    values = read_values(tuple(v.name for v in variables), [("env", environ), (env_file, env_dotenv), (".env", dotenv)])
    dotenv_keys = tuple((k, name) for name, values_ in ((".env", dotenv), (env_file, env_dotenv)) for k in values_)
    return _validate(chosen, lenient=lenient, project_dir=project_dir, sources=sources, passwords=passwords,
                     rls=pyproject.get("rls", {}), roles_config=roles_config, variables=variables,
                     variable_values=values, dotenv_keys=dotenv_keys)


def _validate(chosen: Mapping[str, tuple[Any, str] | None], *, lenient: bool = False, **extra: Any) -> Settings:
    """Settings from (raw value, source) per field; the first problem becomes one ConfigError line (with
    ``lenient``, every malformed setting is left at its default and listed in ``Settings.problems``)."""
    values = {name: found[0] for name, found in chosen.items() if found}
    try:
        return Settings(**values, **extra)
    except ValidationError as exc:
        errors = [(FIELDS_BY_NAME.get(str(e["loc"][0])), e) for e in exc.errors(include_url=False)]
        if any(f is None for f, _ in errors):  # not a setting: a caller passed a wrong type
            raise
        found = [config_error(f, e, chosen[f.name][1]) for f, e in errors]
        if not lenient:
            raise found[0] from None
        bad = {f.name for f, _ in errors}
        problems = tuple(dict.fromkeys(error.message for error in found))
        return Settings(**{name: v for name, v in values.items() if name not in bad}, **extra, problems=problems)


def settings_table_markdown() -> str:
    """The README's settings table, read from the declaration."""
    lines = ["| Variable | `[tool.dbkit]` key | Default | What it is for |", "|---|---|---|---|"]
    for f in FIELDS:
        default = "unset" if f.default in (None, ()) else f"`{_printable(f.default)}`"
        purpose = (f.purpose[0].upper() + f.purpose[1:]).replace("<", "\\<")
        lines.append(f"| `{f.env}` | `{f.name}` | {default} | {purpose} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(settings_table_markdown())
