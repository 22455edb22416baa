"""Roles as data: the role model (:mod:`dbkit.roles._model`), the SQL generated from it
(:mod:`dbkit.roles._sql`), and the verbs behind ``dbkit roles apply|list|check``.

* :func:`apply` creates the model's roles or corrects their attributes, runs the optional
  extra files in ``sql/roles/``, and sets the LOGIN roles' passwords from their variables
  (``DBKIT_PASSWORD_<ROLE>`` by default): libpq computes the SCRAM-SHA-256 verifier and only
  that is sent, so neither the server log nor ``ps`` can show the password; then it closes
  the paths around RLS in the database (:mod:`dbkit.rls._isolation`);
* :func:`list_roles` describes the configured roles (JSON-ready);
* :func:`check` lists the drift from the model: roles, attributes, memberships, passwords,
  and the grants, ownership and default privileges in ``DBKIT_SCHEMA``.

The migration runner, the offline script and ``op.apply_roles()`` use :func:`statements`.
"""

from __future__ import annotations

from dbkit.roles._apply import apply
from dbkit.roles._check import check, list_roles
from dbkit.roles._model import DML, KINDS, TABLE_GRANTS, RoleModel, model, parse_attributes, role_files
from dbkit.roles._scram import parse_scram_verifier, saslprep, scram_sha256_verifier, scram_verify
from dbkit.roles._sql import model_statements

__all__ = ["KINDS", "DML", "TABLE_GRANTS", "RoleModel", "model", "parse_attributes", "statements",
    "model_statements", "apply", "list_roles", "check", "expected_grants", "allowed_default_privileges",
    "scram_sha256_verifier", "scram_verify", "parse_scram_verifier", "saslprep"]


def expected_grants(settings, tables) -> dict[str, dict[str, frozenset[str]]]:
    """``{role name: {table: privileges}}`` the model grants on ``tables`` (see :class:`RoleModel`)."""
    return model(settings).expected_grants(tables)


def allowed_default_privileges(settings) -> dict[str, frozenset[str]]:
    return model(settings).allowed_default_privileges()


def statements(settings) -> list[str]:
    """Every statement that applies the roles, without passwords: the model's, then ``sql/roles/``."""
    return [*model_statements(model(settings)), *(f.sql for f in role_files(settings))]
