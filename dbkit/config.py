"""Settings: resolved once into a frozen dataclass.

Precedence, highest first (the way click documents it):

1. a command-line flag (``dbkit --env staging …``)
2. the process environment (``DBKIT_ENV=staging``)
3. ``.env.<DBKIT_ENV>`` in the project directory (e.g. ``.env.test``)
4. ``.env`` in the project directory
5. ``[tool.dbkit]`` in the project's ``pyproject.toml`` (keys are the field names)
6. the default

The project directory is ``DBKIT_PROJECT_DIR`` or the nearest directory at or
above the current one that holds a ``pyproject.toml``.

Every setting is listed once, in :data:`FIELDS`; the README's settings table is
generated from it (``python -m dbkit.config``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbkit.errors import ConfigError
from dbkit.urls import DbUrl, parse_database_url

__all__ = ["ENVIRONMENTS", "FIELDS", "Field", "Settings", "load_settings", "parse_dotenv", "find_project_dir",
           "password_variable"]

ENVIRONMENTS = ("dev", "test", "staging", "prod")
PASSWORD_PREFIX = "DBKIT_PASSWORD_"
#: [tool.dbkit.<name>] tables: structure that is not a single setting
SUBTABLES = ("rls", "roles")


def password_variable(role: str) -> str:
    """``app_rls`` -> ``DBKIT_PASSWORD_APP_RLS``: where a role's password comes from."""
    return PASSWORD_PREFIX + role.upper()


@dataclass(frozen=True)
class Field:
    name: str  # attribute and [tool.dbkit] key
    env: str  # environment / .env variable
    kind: str  # str | int | list | path | url | choice
    default: Any
    purpose: str  # completes "it ..." in error messages
    example: str
    secret: bool = False
    choices: tuple[str, ...] = ()


FIELDS: tuple[Field, ...] = (
    Field(
        "env", "DBKIT_ENV", "choice", "dev",
        "selects the environment's safety rules and its .env.<env> file", "DBKIT_ENV=staging",
        choices=ENVIRONMENTS,
    ),
    Field(
        "database_url", "DATABASE_URL", "url", None,
        "tells dbkit which PostgreSQL database to use (unset in dev: the embedded cluster)",
        "DATABASE_URL=postgresql://app:secret@db.internal:5432/app", secret=True,
    ),
    Field(
        "direct_database_url", "DIRECT_DATABASE_URL", "url", None,
        "is a direct connection (not through PgBouncer) for migrations, seeding, backups and restores",
        "DIRECT_DATABASE_URL=postgresql://app:secret@db.internal:5432/app", secret=True,
    ),
    Field(
        "pgbouncer_ports", "DBKIT_PGBOUNCER_PORTS", "list", ("6432",),
        "lists ports that mean PgBouncer: dbkit warns when a command that needs a direct connection uses one",
        "DBKIT_PGBOUNCER_PORTS=6432,6433",
    ),
    Field(
        "extensions", "DBKIT_EXTENSIONS", "list", ("vector", "timescaledb", "pgcrypto"),
        "lists the PostgreSQL extensions the application needs", "DBKIT_EXTENSIONS=vector,timescaledb,pgcrypto",
    ),
    Field(
        "connect_timeout", "DBKIT_CONNECT_TIMEOUT", "int", 5,
        "bounds, in seconds, how long dbkit waits for a connection", "DBKIT_CONNECT_TIMEOUT=10",
    ),
    Field(
        "dev_dir", "DBKIT_DEV_DIR", "path", Path(".dbkit"),
        "holds the embedded dev cluster (data, socket, log), relative to the project", "DBKIT_DEV_DIR=.dbkit",
    ),
    Field(
        "dev_port", "DBKIT_DEV_PORT", "int", 0,
        "fixes the dev cluster's TCP port on 127.0.0.1 (0: pick a free one once and keep it)",
        "DBKIT_DEV_PORT=54329",
    ),
    Field(
        "dev_database", "DBKIT_DEV_DATABASE", "str", "dbkit",
        "names the database dbkit creates in the dev cluster", "DBKIT_DEV_DATABASE=app",
    ),
    Field(
        "pg_bindir", "DBKIT_PG_BINDIR", "path", None,
        "points at the PostgreSQL server programs (initdb, pg_ctl, postgres) for the dev cluster",
        "DBKIT_PG_BINDIR=/usr/lib/postgresql/15/bin",
    ),
    # ---- schema and roles (the role model: owner / enforce / bypass / readonly)
    Field(
        "schema", "DBKIT_SCHEMA", "ident", "app",
        "names the schema that holds the application's tables", "DBKIT_SCHEMA=app",
    ),
    Field(
        "role_owner", "DBKIT_ROLE_OWNER", "ident", "app_owner",
        "names the NOLOGIN role that owns every table (migrations run as it)", "DBKIT_ROLE_OWNER=app_owner",
    ),
    Field(
        "role_enforce", "DBKIT_ROLE_ENFORCE", "ident", "app_rls",
        "names the LOGIN role the application connects as, always subject to RLS",
        "DBKIT_ROLE_ENFORCE=cognitive_engine_rls",
    ),
    Field(
        "role_bypass", "DBKIT_ROLE_BYPASS", "ident", "app_full",
        "names the LOGIN BYPASSRLS role for trusted workers", "DBKIT_ROLE_BYPASS=cognitive_engine_full",
    ),
    Field(
        "role_readonly", "DBKIT_ROLE_READONLY", "ident", "app_readonly",
        "names the LOGIN read-only role (still subject to RLS)", "DBKIT_ROLE_READONLY=app_readonly",
    ),
    Field(
        "tenant_claim", "DBKIT_TENANT_CLAIM", "claim", "app.tenant_id",
        "names the setting that carries the current tenant for RLS policies", "DBKIT_TENANT_CLAIM=app.tenant_id",
    ),
    Field(
        "user_claim", "DBKIT_USER_CLAIM", "claim", "app.user_id",
        "names the setting that carries the current user for RLS policies", "DBKIT_USER_CLAIM=app.user_id",
    ),
    # ---- migrations
    Field(
        "migrations_dir", "DBKIT_MIGRATIONS_DIR", "path", Path("migrations"),
        "points at the Alembic environment (env.py, versions/), relative to the project",
        "DBKIT_MIGRATIONS_DIR=migrations",
    ),
    Field(
        "lock_timeout", "DBKIT_LOCK_TIMEOUT", "duration", "5s",
        "bounds how long a migration statement waits for a table lock (0: forever)", "DBKIT_LOCK_TIMEOUT=5s",
    ),
    Field(
        "statement_timeout", "DBKIT_STATEMENT_TIMEOUT", "duration", "0",
        "bounds how long one migration statement may run (0: no limit)", "DBKIT_STATEMENT_TIMEOUT=15min",
    ),
    Field(
        "migrate_set_role", "DBKIT_MIGRATE_SET_ROLE", "bool", True,
        "makes migrations run as the owner role (SET ROLE) so it owns every object",
        "DBKIT_MIGRATE_SET_ROLE=false",
    ),
    # ---- backups
    Field(
        "backup_uri", "DBKIT_BACKUP_URI", "str", "backups",
        "says where `dbkit backup` writes (s3://bucket/prefix, file:///path or a path relative to the project)",
        "DBKIT_BACKUP_URI=s3://acme-db-backups/prod",
    ),
    Field(
        "backup_stale_after", "DBKIT_BACKUP_STALE_AFTER", "duration", "6h",
        "is the age after which an unfinished backup (no manifest, an open multipart upload, a .partial- file) "
        "counts as dead and is removed by `backup prune --apply` and the next successful backup",
        "DBKIT_BACKUP_STALE_AFTER=12h",
    ),
    Field(
        "s3_endpoint", "S3_ENDPOINT", "str", None,
        "points at an S3-compatible endpoint such as MinIO (unset: AWS)", "S3_ENDPOINT=http://127.0.0.1:9000",
    ),
    Field(
        "s3_region", "S3_REGION", "str", None,
        "names the S3 region (unset: boto3's default chain, e.g. AWS_REGION)", "S3_REGION=eu-central-1",
    ),
    Field(
        "s3_access_key", "S3_ACCESS_KEY", "str", None,
        "is the S3 access key (unset: boto3's standard chain, e.g. AWS_ACCESS_KEY_ID or an instance role)",
        "S3_ACCESS_KEY=AKIA...", secret=True,
    ),
    Field(
        "s3_secret_key", "S3_SECRET_KEY", "str", None,
        "is the S3 secret key (unset: boto3's standard chain)", "S3_SECRET_KEY=...", secret=True,
    ),
    Field(
        "s3_addressing_style", "S3_ADDRESSING_STYLE", "choice", "auto",
        "selects S3 path-style or virtual-hosted addressing (MinIO usually needs path)", "S3_ADDRESSING_STYLE=path",
        choices=("auto", "path", "virtual"),
    ),
    Field(
        "age_recipients", "DBKIT_AGE_RECIPIENTS", "list", (),
        "lists age public keys every backup is encrypted to (also --encrypt-to)", "DBKIT_AGE_RECIPIENTS=age1...",
    ),
    Field(
        "age_identity_file", "DBKIT_AGE_IDENTITY_FILE", "path", None,
        "points at the age identity (secret key) file used to decrypt backups", "DBKIT_AGE_IDENTITY_FILE=~/.age/db.key",
    ),
    Field(
        "age_identity", "DBKIT_AGE_IDENTITY", "str", None,
        "holds the age identity (AGE-SECRET-KEY-...) used to decrypt backups, when no file is used",
        "DBKIT_AGE_IDENTITY=AGE-SECRET-KEY-1...", secret=True,
    ),
    # ---- seeding
    Field(
        "seed_maintenance_work_mem", "DBKIT_SEED_MAINTENANCE_WORK_MEM", "memory", "512MB",
        "sizes maintenance_work_mem for index rebuilds after `dbkit seed --defer-indexes` (HNSW builds "
        "are much faster when the graph fits)", "DBKIT_SEED_MAINTENANCE_WORK_MEM=1GB",
    ),
    Field(
        "lint_ignore", "DBKIT_LINT_IGNORE", "list", (),
        "lists squawk rules that `dbkit migrate lint` ignores", "DBKIT_LINT_IGNORE=prefer-bigint-over-int",
    ),
)
FIELDS_BY_NAME = {f.name: f for f in FIELDS}
FIELDS_BY_ENV = {f.env: f for f in FIELDS}


@dataclass(frozen=True)
class Settings:
    """Resolved settings.  Build with :func:`load_settings`; never mutate."""

    env: str = "dev"
    database_url: DbUrl | None = None
    direct_database_url: DbUrl | None = None
    pgbouncer_ports: tuple[str, ...] = ("6432",)
    extensions: tuple[str, ...] = ("vector", "timescaledb", "pgcrypto")
    connect_timeout: int = 5
    dev_dir: Path = Path(".dbkit")
    dev_port: int = 0
    dev_database: str = "dbkit"
    pg_bindir: Path | None = None
    schema: str = "app"
    role_owner: str = "app_owner"
    role_enforce: str = "app_rls"
    role_bypass: str = "app_full"
    role_readonly: str = "app_readonly"
    tenant_claim: str = "app.tenant_id"
    user_claim: str = "app.user_id"
    migrations_dir: Path = Path("migrations")
    lock_timeout: str = "5s"
    statement_timeout: str = "0"
    migrate_set_role: bool = True
    lint_ignore: tuple[str, ...] = ()
    seed_maintenance_work_mem: str = "512MB"
    backup_uri: str = "backups"
    backup_stale_after: str = "6h"
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key: str | None = field(default=None, repr=False)
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_addressing_style: str = "auto"
    age_recipients: tuple[str, ...] = ()
    age_identity_file: Path | None = None
    age_identity: str | None = field(default=None, repr=False)
    project_dir: Path = field(default_factory=Path.cwd)
    sources: Mapping[str, str] = field(default_factory=dict)
    #: DBKIT_PASSWORD_<ROLE> variables (env, .env.<env>, .env): secrets, never printed
    passwords: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: [tool.dbkit.roles]: what the role model says beyond the DBKIT_ROLE_* names (see dbkit.roles)
    roles_config: Mapping[str, Any] = field(default_factory=dict)
    #: [tool.dbkit.rls]: per-table expectations of the RLS matrix (see dbkit.testing)
    rls: Mapping[str, Any] = field(default_factory=dict)

    def password_for(self, role: str) -> str | None:
        """The password for ``role`` from ``DBKIT_PASSWORD_<ROLE NAME IN CAPITALS>``, if set."""
        return self.passwords.get(password_variable(role)) or None

    @property
    def uses_dev_cluster(self) -> bool:
        """True when commands run against the embedded dev cluster."""
        return self.database_url is None and self.env == "dev"

    def require_database_url(self) -> DbUrl:
        """The configured URL, or a ConfigError saying it is needed (outside dev)."""
        if self.database_url is None:
            f = FIELDS_BY_NAME["database_url"]
            raise ConfigError(
                f.env,
                f"is not set and DBKIT_ENV={self.env} has no embedded cluster",
                purpose="tells dbkit which PostgreSQL database to use",
                example=f.example.split("=", 1)[1],
            )
        return self.database_url

    def environment_problems(self) -> list[str]:
        """What DBKIT_ENV=prod requires and is missing (empty elsewhere): TLS to non-local hosts,
        a non-local backup target, passwords for the LOGIN roles."""
        if self.env != "prod":
            return []
        problems = []
        for variable, url in (("DATABASE_URL", self.database_url), ("DIRECT_DATABASE_URL", self.direct_database_url)):
            if url is not None and not url.is_local and url.sslmode not in ("require", "verify-ca", "verify-full"):
                problems.append(f"{variable} must use TLS (sslmode=require or stricter) for {url.masked}")
        if "://" not in self.backup_uri or self.backup_uri.startswith("file://"):
            problems.append(f"DBKIT_BACKUP_URI={self.backup_uri} is on this machine; prod backups go to s3://…")
        for role in (self.role_enforce, self.role_bypass, self.role_readonly):
            if not self.password_for(role):
                problems.append(f"{password_variable(role)} is not set (the {role} role's password)")
        return problems

    def require_environment(self, action: str) -> None:
        """Refuse a destructive ``action`` while DBKIT_ENV=prod requirements are unmet."""
        problems = self.environment_problems()
        if problems:
            from dbkit.errors import Refused

            raise Refused(f"{action} is refused: DBKIT_ENV=prod requirements are not met: {'; '.join(problems)}",
                          hint="fix them first (`dbkit check` lists them)")

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, printable value, source) for every setting, secrets masked."""
        rows = []
        for variable in sorted(self.passwords):
            rows.append((variable, "***" if self.passwords[variable] else "(empty)",
                         self.sources.get(variable, "env")))
        for f in FIELDS:
            value = getattr(self, f.name)
            if value is None:
                text = "(embedded dev cluster)" if f.name == "database_url" and self.env == "dev" else "(unset)"
            elif f.secret and not isinstance(value, DbUrl):
                text = "***"
            elif isinstance(value, DbUrl):
                text = value.masked
            elif isinstance(value, tuple):
                text = ",".join(value) or "(none)"
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            rows.append((f.env, text, self.sources.get(f.name, "default")))
        return rows


# --------------------------------------------------------------------- .env files

_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*?)\s*$")


def parse_dotenv(text: str, *, filename: str = ".env") -> dict[str, str]:
    """Parse a .env file: ``KEY=value`` lines, ``export`` prefix, quotes, ``#`` comments.

    A line that is neither blank, a comment nor an assignment is a ConfigError
    naming the file and line.
    """
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _DOTENV_LINE.match(line)
        if not m:
            raise ConfigError(
                f"{filename}:{lineno}",
                "is not a KEY=value line",
                example="DATABASE_URL=postgresql://app:secret@localhost:5432/app",
            )
        value = m["value"]
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = value.find(quote, 1)
            if end == -1:
                raise ConfigError(f"{filename}:{lineno}", f"has an unterminated {quote} quote",
                                  example=f"{m['key']}={quote}value{quote}")
            inner = value[1:end]
            if quote == '"':
                inner = inner.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            value = inner
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        values[m["key"]] = value
    return values


def _read_dotenv(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read ({exc.strerror})") from None
    return parse_dotenv(text, filename=path.name)


# --------------------------------------------------------------------- pyproject

def find_project_dir(start: Path, environ: Mapping[str, str]) -> Path:
    """``DBKIT_PROJECT_DIR``, else the nearest directory with a pyproject.toml, else ``start``."""
    explicit = environ.get("DBKIT_PROJECT_DIR")
    if explicit:
        return Path(explicit).resolve()
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / "pyproject.toml").is_file():
            return d
    return start


def _read_pyproject(project_dir: Path) -> dict[str, Any]:
    path = project_dir / "pyproject.toml"
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML ({exc})") from None
    section = data.get("tool", {}).get("dbkit", {})
    table: dict[str, Any] = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if isinstance(value, dict):
            if name not in SUBTABLES:
                raise ConfigError(f"[tool.dbkit.{key}]", f"in {path.name} is not a known table "
                                  f"(known: {', '.join(f'[tool.dbkit.{t}]' for t in SUBTABLES)})")
            table[name] = value
            continue
        if name not in FIELDS_BY_NAME:
            known = ", ".join(sorted(FIELDS_BY_NAME))
            raise ConfigError(f"[tool.dbkit] {key}", f"in {path.name} is not a known setting (known: {known})")
        table[name] = value
    return table


# --------------------------------------------------------------------- conversion

_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_CLAIM = re.compile(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*")
_DURATION = re.compile(r"\d+(ms|s|min|h|d)?")
_MEMORY = re.compile(r"\d+(kB|MB|GB|TB)")

def _convert(f: Field, value: Any, where: str) -> Any:
    """Turn a raw value (str from env/.env, or a TOML value) into the field's type."""
    label = f.env if where in ("env", "flag") or where.startswith(".env") else f"[tool.dbkit] {f.name}"
    if where.startswith(".env"):
        label = f"{f.env} (from {where})"
    example = f.example.split("=", 1)[1] if "=" in f.example else f.example
    if f.kind == "choice":
        text = str(value).strip().lower()
        if text not in f.choices:
            raise ConfigError(label, f"is {value!r}, not one of {', '.join(f.choices)}", purpose=f.purpose, example=example)
        return text
    if f.kind == "int":
        if isinstance(value, bool):
            raise ConfigError(label, f"is {value!r}, not a whole number", purpose=f.purpose, example=example)
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ConfigError(label, f"is {value!r}, not a whole number", purpose=f.purpose, example=example) from None
        if number < 0:
            raise ConfigError(label, f"is {number}, must not be negative", purpose=f.purpose, example=example)
        return number
    if f.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(label, f"is {value!r}, not true or false", purpose=f.purpose, example=example)
    if f.kind in ("ident", "claim"):
        text = str(value).strip()
        pattern = _IDENT if f.kind == "ident" else _CLAIM
        if not pattern.fullmatch(text):
            what = ("a lower-case SQL identifier (letters, digits, _; at most 63)" if f.kind == "ident"
                    else "a custom setting name such as app.tenant_id")
            raise ConfigError(label, f"is {value!r}, not {what}", purpose=f.purpose, example=example)
        return text
    if f.kind == "memory":
        text = str(value).strip().replace(" ", "")
        if not _MEMORY.fullmatch(text):
            raise ConfigError(label, f"is {value!r}, not a PostgreSQL memory size (e.g. 512MB, 1GB)",
                              purpose=f.purpose, example=example)
        return text
    if f.kind == "duration":
        text = str(value).strip().replace(" ", "")
        if not _DURATION.fullmatch(text):
            raise ConfigError(label, f"is {value!r}, not a PostgreSQL duration (e.g. 5s, 500ms, 2min, 0)",
                              purpose=f.purpose, example=example)
        return text
    if f.kind == "list":
        items = value if isinstance(value, list) else str(value).split(",")
        return tuple(str(i).strip() for i in items if str(i).strip())
    if f.kind == "url":
        text = str(value).strip()
        if not text:
            return None
        return parse_database_url(text, variable=label)
    if f.kind == "path":
        text = str(value).strip()
        return Path(text) if text else None
    return str(value)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve every setting once: flag > env > .env.<env> > .env > [tool.dbkit] > default.

    ``overrides`` holds CLI flags by field name (``None`` means "not given").
    Raises :class:`ConfigError` for anything missing or malformed.
    """
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for name in overrides:
        if name not in FIELDS_BY_NAME:
            raise ValueError(f"unknown setting {name!r}")
    project_dir = find_project_dir(cwd or Path.cwd(), environ)
    pyproject = _read_pyproject(project_dir)
    dotenv = _read_dotenv(project_dir / ".env")

    layers: list[tuple[str, Mapping[str, Any]]] = []  # lowest precedence first, keyed by field name

    def by_name(values: Mapping[str, str]) -> dict[str, str]:
        return {FIELDS_BY_ENV[k].name: v for k, v in values.items() if k in FIELDS_BY_ENV}

    layers.append(("pyproject", {k: v for k, v in pyproject.items() if k in FIELDS_BY_NAME}))
    layers.append((".env", by_name(dotenv)))
    # DBKIT_ENV decides which .env.<env> applies, so resolve it from the layers above first.
    env_layers = [*layers, ("env", by_name(environ)), ("flag", overrides)]
    env_value, env_source = "dev", "default"
    for source, values in env_layers:
        if "env" in values and str(values["env"]).strip():
            env_value, env_source = values["env"], source
    env_name = _convert(FIELDS_BY_NAME["env"], env_value, env_source)
    env_file = f".env.{env_name}"
    layers.append((env_file, by_name(_read_dotenv(project_dir / env_file))))
    layers.append(("env", by_name(environ)))
    layers.append(("flag", overrides))

    resolved: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f in FIELDS:
        value, source = f.default, "default"
        for layer_source, values in layers:
            if f.name in values:
                raw = values[f.name]
                if isinstance(raw, str) and raw.strip() == "" and f.kind != "str":
                    continue  # FOO= (empty) means unset, as in most tools
                value, source = _convert(f, raw, layer_source), layer_source
        resolved[f.name] = value
        sources[f.name] = source
    resolved["env"] = env_name
    sources["env"] = env_source
    passwords: dict[str, str] = {}
    roles_config = pyproject.get("roles", {})
    # role passwords: DBKIT_PASSWORD_<ROLE>, and the variables [tool.dbkit.roles.<kind>] password_env names
    custom = {str(v.get("password_env")) for v in roles_config.values() if isinstance(v, dict) and v.get("password_env")}
    for source, values in ((".env", dotenv), (env_file, _read_dotenv(project_dir / env_file)), ("env", environ)):
        for key, value in values.items():
            if key.startswith(PASSWORD_PREFIX) or key in custom:
                passwords[key] = value
                sources[key] = source
    for name in ("dev_dir", "migrations_dir"):
        if not resolved[name].is_absolute():
            resolved[name] = project_dir / resolved[name]
    if resolved["dev_port"] > 65535:
        raise ConfigError(FIELDS_BY_NAME["dev_port"].env, f"is {resolved['dev_port']}, above 65535",
                          example="54329")
    return Settings(**resolved, project_dir=project_dir, sources=sources, passwords=passwords,
                    rls=pyproject.get("rls", {}), roles_config=roles_config)


def settings_table_markdown() -> str:
    """The README's settings table, generated from :data:`FIELDS`."""
    lines = ["| Variable | `[tool.dbkit]` key | Default | What it is for |", "|---|---|---|---|"]
    for f in FIELDS:
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        if isinstance(default, bool):
            default = str(default).lower()
        default = "unset" if default is None or default == "" else f"`{default}`"
        purpose = (f.purpose[0].upper() + f.purpose[1:]).replace("<", "\\<")
        lines.append(f"| `{f.env}` | `{f.name}` | {default} | {purpose} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(settings_table_markdown())
