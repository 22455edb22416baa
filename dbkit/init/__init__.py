"""``dbkit init``: what a project needs to use dbkit, written into its directory.

``alembic.ini``, ``migrations/`` (``env.py`` with dbkit's rails, ``script.py.mako``, ``models.py``
and a first revision: extensions, roles, the schema and one example table protected by the chosen
RLS model), ``seeds/`` with a seeder for that table, ``tests/test_rls.py`` for dbkit's pytest plugin,
``.env.example`` and ``[tool.dbkit]`` in ``pyproject.toml`` (created, or merged into an existing file
keeping its content and comments).  The templates are package data (``dbkit/templates/``).

Every option is checked before anything is written: a refusal writes nothing.  Files that exist
are skipped (and said so) unless ``force``; the policies of the first revision are literal SQL,
computed here from the RLS model (:class:`dbkit.rls.Claims`), and its grants come from the role
model (:func:`dbkit.roles.model`).  The library never prints: :func:`init` returns an
:class:`InitResult` that the CLI renders.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbkit.errors import UsageError
from dbkit.init._pyproject import pyproject_text
from dbkit.init._render import TABLE, Project, render_files
from dbkit.rls._claims import _KEY, _SETTING  # what Claims accepts: a custom setting name, a JSON key

__all__ = ["InitOptions", "InitResult", "FileResult", "init"]

MIGRATIONS_DIR = "migrations"

_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXTENSION = re.compile(r"[a-z_][a-z0-9_-]{0,62}")
_RESERVED_SCHEMAS = ("dbkit", "information_schema")
_EXAMPLE_ROLES = {"--owner-role": "app_owner", "--enforce-role": "app_rls", "--bypass-role": "app_full",
                  "--readonly-role": "app_readonly"}


@dataclass(frozen=True)
class InitOptions:
    """The options of ``dbkit init`` as given (None: not given, the default applies)."""

    schema: str = "app"
    rls: str = "tenant"  # tenant | jwt | none
    tenant_claim: str | None = None
    jwt_claims: str | None = None
    jwt_user_key: str | None = None
    jwt_tenant_key: str | None = None
    owner_role: str = "app_owner"
    enforce_role: str = "app_rls"
    bypass_role: str = "app_full"  # "none": the project has no bypass role
    readonly_role: str = "app_readonly"  # "none": no read-only role
    password_env: tuple[str, ...] = ()  # "ROLE=VAR", one per role
    extensions: str = "pgcrypto"  # comma-separated; "none" or empty: none
    force: bool = False


@dataclass(frozen=True)
class FileResult:
    """What happened to one file: written (new), overwritten (--force), merged ([tool.dbkit] added to an
    existing pyproject.toml) or skipped (``reason``: it exists, or the project is an existing one)."""

    path: str  # relative to the project directory, with /
    action: str
    reason: str = ""


@dataclass(frozen=True)
class InitResult:
    directory: Path
    files: tuple[FileResult, ...]
    next_steps: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)  # what [tool.dbkit] was written with

    @property
    def changed(self) -> bool:
        return any(f.action in ("written", "overwritten", "merged") for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "changed": self.changed,
                "files": [dataclasses.asdict(f) for f in self.files],
                "next_steps": list(self.next_steps), "settings": self.settings}


# --------------------------------------------------------------------- checking the options

def _names(option: str, value: str, *, optional: bool) -> tuple[str, ...]:
    """``--enforce-role api,ingest`` -> ("api", "ingest"); ``none`` -> () where the kind is optional."""
    text = value.strip()
    example = f"{option} {_EXAMPLE_ROLES[option]}"
    if text.lower() == "none":
        if optional:
            return ()
        raise UsageError(f"{option} cannot be none: every project needs this role; e.g. {example}")
    names = tuple(n.strip() for n in text.split(","))
    for name in names:
        if not _IDENT.fullmatch(name):
            raise UsageError(f"{option} {name!r} is not a lower-case SQL identifier (letters, digits, _; at most 63 "
                             f"characters, not starting with a digit); e.g. {example}")
        if name.startswith("pg_"):
            raise UsageError(f"{option} {name!r} starts with pg_, which PostgreSQL reserves for its own roles; "
                             f"choose another name")
    if len(set(names)) != len(names):
        raise UsageError(f"{option} {value!r} names a role twice")
    return names


def _check_claim(option: str, value: str) -> str:
    if not _SETTING.fullmatch(value):
        raise UsageError(f"{option} {value!r} is not a custom setting name (lower-case identifiers joined by dots); "
                         f"e.g. {option} {'request.jwt.claims' if 'jwt' in option else 'app.tenant_id'}")
    return value


def _check_key(option: str, value: str) -> str:
    if not _KEY.fullmatch(value):
        raise UsageError(f"{option} {value!r} is not a JSON key (letters, digits, _); e.g. {option} sub")
    return value


def _project(options: InitOptions) -> Project:
    """The options, checked and resolved: one UsageError line naming the option at the first problem."""
    schema = options.schema.strip()
    if not _IDENT.fullmatch(schema):
        raise UsageError(f"--schema {options.schema!r} is not a lower-case SQL identifier (letters, digits, _; at "
                         "most 63 characters); e.g. --schema app or --schema public")
    if schema.startswith("pg_") or schema in _RESERVED_SCHEMAS:
        raise UsageError(f"--schema {schema} is reserved (pg_*, information_schema, and dbkit for dbkit's own "
                         "bookkeeping); e.g. --schema app")
    model = options.rls
    if model not in ("tenant", "jwt", "none"):
        raise UsageError(f"--rls {model!r} is not one of tenant, jwt, none")
    given = {"--tenant-claim": options.tenant_claim, "--jwt-claims": options.jwt_claims,
             "--jwt-user-key": options.jwt_user_key, "--jwt-tenant-key": options.jwt_tenant_key}
    for option, value in given.items():
        belongs = "tenant" if option == "--tenant-claim" else "jwt"
        if value is not None and model != belongs:
            raise UsageError(f"{option} applies to --rls {belongs} only (this is --rls {model}); leave it out "
                             f"or pass --rls {belongs}")
    tenant_claim = _check_claim("--tenant-claim", options.tenant_claim or "app.tenant_id")
    jwt_claims = _check_claim("--jwt-claims", options.jwt_claims or "request.jwt.claims")
    jwt_user_key = _check_key("--jwt-user-key", options.jwt_user_key or "sub")
    jwt_tenant_key = _check_key("--jwt-tenant-key", options.jwt_tenant_key) if options.jwt_tenant_key else None

    roles = {kind: _names(f"--{kind}-role", getattr(options, f"{kind}_role"), optional=kind in ("bypass", "readonly"))
             for kind in ("owner", "enforce", "bypass", "readonly")}
    if len(roles["owner"]) != 1:
        raise UsageError(f"--owner-role {options.owner_role!r} names several roles; a project has one owner role")
    seen: dict[str, str] = {}
    for kind, names in roles.items():
        for name in names:
            if name in seen:
                raise UsageError(f"--{kind}-role {name} is already the {seen[name]} role: one role cannot be of two "
                                 f"kinds; e.g. --{kind}-role {name}_{kind}")
            seen[name] = kind
    passwords = _password_envs(options.password_env, seen)
    extensions = _extensions(options.extensions)
    return Project(schema=schema, rls=model, tenant_claim=tenant_claim, jwt_claims=jwt_claims,
                   jwt_user_key=jwt_user_key, jwt_tenant_key=jwt_tenant_key, roles=roles,
                   password_env=passwords, extensions=extensions, migrations_dir=MIGRATIONS_DIR,
                   date=datetime.now(UTC).date().isoformat())


def _password_envs(items: tuple[str, ...], kinds: dict[str, str]) -> dict[str, str]:
    """``--password-env ROLE=VAR`` -> {role: VAR}; the role must be a LOGIN role of the model."""
    from dbkit.config import FIELDS_BY_ENV

    found: dict[str, str] = {}
    for item in items:
        role, sep, variable = (part.strip() for part in item.partition("="))
        if not sep or not role or not variable:
            raise UsageError(f"--password-env {item!r} is not ROLE=VARIABLE; e.g. --password-env "
                             "app_rls=POSTGRES_USER_RLS_PASS")
        if role not in kinds:
            raise UsageError(f"--password-env {item!r} names {role}, which is not a role of this project (roles: "
                             f"{', '.join(kinds)})")
        if kinds[role] == "owner":
            raise UsageError(f"--password-env {item!r}: {role} is the owner role, which cannot log in and has no "
                             "password; name a LOGIN role (enforce, bypass or readonly)")
        if not _ENV.fullmatch(variable):
            raise UsageError(f"--password-env {item!r}: {variable!r} is not an environment variable name (letters, "
                             "digits, _); e.g. POSTGRES_USER_RLS_PASS")
        if variable in FIELDS_BY_ENV:
            raise UsageError(f"--password-env {item!r}: {variable} is a dbkit setting, not a free variable for a "
                             "password; e.g. POSTGRES_USER_RLS_PASS")
        if role in found:
            raise UsageError(f"--password-env names {role} twice ({found[role]} and {variable})")
        if variable in found.values():
            raise UsageError(f"--password-env {variable} is given for two roles; each role needs its own variable")
        found[role] = variable
    return found


def _extensions(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(n.strip() for n in text.split(","))
    for name in names:
        if not _EXTENSION.fullmatch(name):
            raise UsageError(f"--extensions has {name!r}, not an extension name (lower-case letters, digits, _ and -); "
                             "e.g. --extensions pgcrypto,vector,timescaledb")
    if len(set(names)) != len(names):
        raise UsageError(f"--extensions {text!r} names an extension twice")
    return names


# --------------------------------------------------------------------- writing

def _write(path: Path, text: str) -> None:
    from dbkit.roles._common import _write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, text, 0o644, encoding="utf-8")


NEXT_STEPS = (
    "dbkit dev up          # the embedded PostgreSQL in .dbkit/ (or set DATABASE_URL in .env)",
    "dbkit migrate         # extensions, roles, schema and the example table",
    "dbkit roles check     # the roles and grants match the role model",
    "dbkit rls audit       # every table is protected as the RLS model says",
    "dbkit seed            # example data",
    "pytest                # tests/ (pip install 'dbkit[testing]')",
)
ADOPT_STEPS = (
    "# {migrations}/env.py: end it with `from dbkit.migrate.env import run` and `run(target_metadata=<your MetaData>)`",
    "dbkit migrate status  # the revision plain Alembic recorded (version_table_schema = public)",
    "dbkit migrate         # upgrades from there, with dbkit's rails",
    "dbkit roles check     # the roles and grants match the role model",
    "dbkit rls audit       # every table is protected as the RLS model says",
    "# tests/: `from dbkit.testing import test_rls_matrix, test_rls_escalation  # noqa: F401` (dbkit[testing])",
)
#: the files about the example table, not written into an existing Alembic project
_EXAMPLE_FILES = ("models.py", "0001_initial.py", f"{TABLE}.py", "test_rls.py")


def _plan_file(directory: Path, rel: str, text: str, force: bool) -> tuple[FileResult, str | None]:
    path = directory / rel
    if path.is_dir():
        raise UsageError(f"{path} is a directory where dbkit init writes a file; move it away first")
    if not path.exists():
        return FileResult(rel, "written"), text
    old = path.read_text(encoding="utf-8", errors="replace")
    if old == text:
        return FileResult(rel, "skipped", "exists with the same content"), None
    if force:
        return FileResult(rel, "overwritten"), text
    if rel.endswith("/env.py") and "dbkit.migrate.env" not in old:
        return FileResult(rel, "skipped", "exists without dbkit's rails: end it with `from dbkit.migrate.env import "
                          "run` and `run(target_metadata=<your MetaData>)` (--force replaces it)"), None
    return FileResult(rel, "skipped", "exists (--force overwrites it)"), None


def _write_all(directory: Path, writes: list[tuple[str, str]]) -> None:
    """Write every file, or (an OSError half-way) none: the ones already written are put back as they were."""
    from dbkit.errors import OperationFailed

    done: list[tuple[Path, str | None]] = []
    folders = {(directory / rel).parent for rel, _ in writes}
    created = sorted({d for f in folders for d in (f, *f.parents) if not d.exists()}, key=lambda d: -len(d.parts))
    try:
        for rel, text in writes:
            path = directory / rel
            old = path.read_text(encoding="utf-8") if path.is_file() else None
            _write(path, text)  # atomic: a failed write leaves nothing behind
            done.append((path, old))
    except OSError as exc:
        for path, old in reversed(done):
            if old is None:
                path.unlink(missing_ok=True)
            else:
                _write(path, old)
        for folder in created:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise OperationFailed(f"cannot write {exc.filename or directory}: {exc.strerror or exc}; nothing was "
                              "written") from None


def _script_location(directory: Path) -> str:
    """The script directory of an existing Alembic project (``script_location`` of its ``alembic.ini``, e.g.
    ``alembic`` after ``alembic init alembic``) when it is a folder of the project with ``versions/``;
    otherwise ``migrations``."""
    import configparser

    ini = directory / "alembic.ini"
    if not ini.is_file():
        return MIGRATIONS_DIR
    parser = configparser.ConfigParser(defaults={"here": str(directory.resolve())})
    try:
        parser.read(ini, encoding="utf-8")
        location = parser.get("alembic", "script_location", fallback="")
    except (configparser.Error, UnicodeDecodeError):
        return MIGRATIONS_DIR
    if not location or (re.match(r"[\w.]+:", location) and not Path(location).is_absolute()):
        return MIGRATIONS_DIR  # "package:folder" (a package resource) is not a folder of the project
    path = (directory / location).resolve()
    try:
        rel = path.relative_to(directory.resolve()).as_posix()
    except ValueError:  # outside the project
        return MIGRATIONS_DIR
    return rel if rel != "." and (path / "versions").is_dir() else MIGRATIONS_DIR


def init(directory: Path, options: InitOptions) -> InitResult:
    """Write the project files into ``directory`` (created if missing).  Raises UsageError, having written
    nothing, when an option or the directory cannot be used.

    In an existing Alembic project (the ``versions/`` of ``alembic.ini``'s ``script_location``, or of
    ``migrations/``, holds revisions, none of them dbkit init's) the
    example table's files are not written, and ``[tool.dbkit]`` points at plain Alembic's version table
    (``version_table_schema = "public"``)."""
    project = _project(options)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--dir {directory} is not a directory; pass the project's directory")
    project = dataclasses.replace(project, migrations_dir=_script_location(directory))
    # revisions of an existing Alembic project: files in versions/ when dbkit init's own first one is not there
    versions = directory / project.migrations_dir / "versions"
    existing = sorted(p.name for p in versions.glob("*.py") if not p.name.startswith("__")) \
        if versions.is_dir() and not (versions / "0001_initial.py").exists() else []
    project = dataclasses.replace(project, adopting=bool(existing))
    files, section, new_pyproject = render_files(project)
    plan: list[tuple[FileResult, str | None]] = []
    for rel, text in files.items():
        if existing and rel.rpartition("/")[2] in _EXAMPLE_FILES:
            plan.append((FileResult(rel, "skipped", f"an existing Alembic project ({project.migrations_dir}/versions/"
                                    f"{existing[0]}): no example table"), None))
        else:
            plan.append(_plan_file(directory, rel, text, options.force))
    pyproject = directory / "pyproject.toml"
    text, action, reason = pyproject_text(pyproject, section, new_pyproject, options.force)
    if text is not None and pyproject.exists() and pyproject.read_text(encoding="utf-8") == text:
        text, action, reason = None, "skipped", "exists with the same content"
    plan.append((FileResult("pyproject.toml", action, reason), text))
    _write_all(directory, [(r.path, content) for r, content in plan if content is not None])  # all checked: write
    steps = tuple(step.replace("{migrations}", project.migrations_dir) for step in ADOPT_STEPS) if existing \
        else NEXT_STEPS
    return InitResult(directory.resolve(), tuple(r for r, _ in plan), steps, project.tool_settings())
