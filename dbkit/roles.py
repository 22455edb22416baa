"""Roles as code: ``sql/roles/NN_<kind>.sql``, one idempotent file per role.

``<kind>`` is one of owner, enforce, bypass, readonly; dbkit replaces
``{{role}}`` in the file with the role name from the settings
(``DBKIT_ROLE_<KIND>``, validated as a plain lower-case identifier, so the
substitution cannot inject SQL).  Passwords never appear in these files.

This module applies the files (used by the migration runner and by the
``apply_roles`` migration operation).  Listing, drift checks and passwords come
with the roles issue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dbkit.errors import ConfigError

__all__ = ["KINDS", "RoleFile", "role_files", "render", "role_names"]

KINDS = ("owner", "enforce", "bypass", "readonly")
_FILE = re.compile(r"^(\d+)_([a-z]+)\.sql$")


@dataclass(frozen=True)
class RoleFile:
    path: Path
    kind: str
    role: str
    sql: str


def role_names(settings) -> dict[str, str]:
    """``{"owner": "app_owner", "enforce": "app_rls", ...}`` from the settings."""
    return {kind: getattr(settings, f"role_{kind}") for kind in KINDS}


def roles_dir(settings) -> Path:
    return settings.project_dir / "sql" / "roles"


def render(text: str, role: str) -> str:
    return text.replace("{{role}}", role)


def role_files(settings, directory: Path | None = None) -> list[RoleFile]:
    """The role files in name order, rendered with the configured role names."""
    directory = directory or roles_dir(settings)
    names = role_names(settings)
    files = []
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m or m.group(2) not in KINDS:
            raise ConfigError(
                str(path), f"is not named NN_<kind>.sql with kind one of {', '.join(KINDS)}",
                example="sql/roles/20_enforce.sql",
            )
        kind = m.group(2)
        files.append(RoleFile(path, kind, names[kind], render(path.read_text(), names[kind])))
    if not files:
        raise ConfigError(str(directory), "holds no role files", example="sql/roles/10_owner.sql")
    return files
