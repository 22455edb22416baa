"""One finding of ``dbkit rls audit`` and the table of codes (see :mod:`dbkit.rls._audit`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ERROR, WARN = "error", "warn"

#: code -> severity, in report order
CODES: dict[str, str] = {
    "enforce_role_missing": ERROR,
    "enforce_role_privileged": ERROR,
    "schema_missing": ERROR,
    "table_without_rls": ERROR,
    "policy_without_rls": ERROR,
    "reachable_without_rls": ERROR,
    "view_bypasses_rls": ERROR,
    "statistics_visible": ERROR,
    "chunks_exposed": ERROR,
    "permissive_true_policy": ERROR,
    "rls_not_forced": WARN,
    "rls_without_policy": WARN,
}
_ORDER = {code: i for i, code in enumerate(CODES)}


@dataclass(frozen=True)
class Finding:
    """One problem: ``table`` is None for role- and schema-level findings."""

    code: str
    schema: str | None
    table: str | None
    message: str
    fix: str
    role: str | None = None

    @property
    def severity(self) -> str:
        return CODES[self.code]

    @property
    def target(self) -> str:
        """``app.users``, ``role app_rls`` or ``schema app``."""
        if self.table is not None:
            return f"{self.schema}.{self.table}"
        if self.role is not None:
            return f"role {self.role}"
        return f"schema {self.schema}"

    def line(self) -> str:
        """One line for humans: ``error table_without_rls app.t: message; fix: …``."""
        return f"{self.severity} {self.code} {self.target}: {self.message}; fix: {self.fix}"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "schema": self.schema, "table": self.table,
                "role": self.role, "message": self.message, "fix": self.fix}
