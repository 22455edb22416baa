"""The RLS model: how the application tells PostgreSQL who is asking, and the SQL policies use to read it.

=======  ==========================================================================================
tenant   one setting per claim: ``set_config('app.tenant_id', <tenant>, true)`` (and ``app.user_id``);
         policies compare ``(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)``
jwt      one setting holding a JSON object, as PostgREST and Supabase pass a JWT's claims:
         ``set_config('request.jwt.claims', '{"sub": …, "org_id": …}', true)``; policies read a key,
         ``(SELECT NULLIF(NULLIF(current_setting('request.jwt.claims', true), '')::json ->> 'sub', '')::uuid)``
none     no RLS (a single-tenant application): nothing is set, the audit says RLS is not used
=======  ==========================================================================================

Rows are owned per *tenant* (a tenant/organisation column) or per *user* (a user column, e.g. the
JWT ``sub``).  An unset or empty claim reads as NULL, so a policy comparing a column with it matches
no row: fail closed.  Claim values are always bound parameters (``set_config(%s, %s, true)``), never
SQL text; the setting names and JSON keys in :meth:`Claims.predicate` are validated identifiers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: what rows can be owned by
OWNERS = ("tenant", "user")

_SETTING = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CAST = re.compile(r"[a-z_][a-z0-9_ ]*(\[\])?")


@dataclass(frozen=True)
class Claims:
    """The configured RLS model (:func:`claims` builds it from the settings)."""

    model: str = "tenant"  # tenant | jwt | none
    tenant_setting: str = "app.tenant_id"
    user_setting: str = "app.user_id"
    jwt_setting: str = "request.jwt.claims"
    jwt_user_key: str = "sub"
    jwt_tenant_key: str | None = None

    def __post_init__(self) -> None:
        if self.model not in ("tenant", "jwt", "none"):
            raise ValueError(f"RLS model must be tenant, jwt or none, not {self.model!r}")
        for name in (self.tenant_setting, self.user_setting, self.jwt_setting):
            if not _SETTING.fullmatch(name):
                raise ValueError(f"{name!r} is not a custom setting name such as app.tenant_id")
        for key in (self.jwt_user_key, self.jwt_tenant_key):
            if key is not None and not _KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not a JSON key (letters, digits, _)")

    @property
    def uses_rls(self) -> bool:
        return self.model != "none"

    @property
    def default_owner(self) -> str:
        """What rows are owned by unless a table says otherwise: per user under a JWT model without a
        tenant key, else per tenant."""
        return "user" if self.model == "jwt" and self.jwt_tenant_key is None else "tenant"

    def owners(self) -> tuple[str, ...]:
        """The owners this model can express."""
        if self.model == "none":
            return ()
        return ("user",) if self.default_owner == "user" else OWNERS

    def assignments(self, tenant: Any = None, user: Any = None) -> list[tuple[str, str]]:
        """``[(setting, value), …]`` to pass to ``set_config(setting, value, true)``: every setting the
        model uses, so a claim left out is cleared (empty), never inherited from an outer scope."""
        if self.model == "tenant":
            return [(self.tenant_setting, _text(tenant)), (self.user_setting, _text(user))]
        if self.model == "jwt":
            if tenant is not None and self.jwt_tenant_key is None:
                raise ValueError("a tenant was given, but the JWT model has no tenant key "
                                 "(set DBKIT_JWT_TENANT_KEY, e.g. org_id)")
            pairs = ((self.jwt_user_key, user), (self.jwt_tenant_key, tenant))  # a tenant has a key (checked above)
            payload = {key: _text(value) for key, value in pairs if value is not None}
            return [(self.jwt_setting, json.dumps(payload, separators=(",", ":")) if payload else "")]
        return []

    def set_sql(self) -> str:
        """``SELECT set_config(%s, %s, true), …`` for :meth:`assignments` (flattened parameters)."""
        n = len(self.assignments())
        return "SELECT " + ", ".join(["set_config(%s, %s, true)"] * n) if n else ""

    def parameters(self, tenant: Any = None, user: Any = None) -> list[str]:
        return [part for pair in self.assignments(tenant, user) for part in pair]

    def predicate(self, owner: str = "tenant", cast: str | None = "uuid") -> str:
        """The SQL expression a policy compares the owner column with, evaluated once per query
        (a sub-select), NULL when the claim is unset or empty.  ``cast``: the column's type
        (``uuid``, ``bigint``, ``text``…; None for text)."""
        if owner not in OWNERS:
            raise ValueError(f"owner must be tenant or user, not {owner!r}")
        if cast is not None and not _CAST.fullmatch(cast):
            raise ValueError(f"{cast!r} is not a type name such as uuid, bigint or text")
        suffix = f"::{cast}" if cast and cast != "text" else ""
        if self.model == "tenant":
            name = self.tenant_setting if owner == "tenant" else self.user_setting
            return f"(SELECT NULLIF(current_setting('{name}', true), ''){suffix})"
        if self.model == "jwt":
            key = self.jwt_user_key if owner == "user" else self.jwt_tenant_key
            if key is None:
                raise ValueError("the JWT model has no tenant key: rows can only be owned per user "
                                 "(set DBKIT_JWT_TENANT_KEY, e.g. org_id)")
            return (f"(SELECT NULLIF(NULLIF(current_setting('{self.jwt_setting}', true), '')::json ->> '{key}', '')"
                    f"{suffix})")
        raise ValueError("the RLS model is none: there is no claim to compare with")

    def describe(self) -> str:
        if self.model == "tenant":
            return f"tenant claim {self.tenant_setting} (user: {self.user_setting})"
        if self.model == "jwt":
            tenant = f", tenant key {self.jwt_tenant_key}" if self.jwt_tenant_key else ""
            return f"JSON claims in {self.jwt_setting} (user key {self.jwt_user_key}{tenant})"
        return "none (RLS is not used)"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def claims(settings) -> Claims:
    """The RLS model of the settings (``DBKIT_RLS_MODEL`` and the claim settings)."""
    return Claims(settings.rls_model, settings.tenant_claim, settings.user_claim, settings.jwt_claims,
                  settings.jwt_user_key, settings.jwt_tenant_key)
