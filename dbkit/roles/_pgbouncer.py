"""PgBouncer's ``auth_file`` (``userlist.txt``) from the role model.

One line per LOGIN role that takes a password (the enforce, bypass and readonly roles; never the owner),
holding the SCRAM-SHA-256 verifier ``dbkit roles apply`` set, never a password::

    "rtpm_api" "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"

With ``auth_type = scram-sha-256`` PgBouncer checks a client's password against that verifier and logs in
to PostgreSQL with the keys the client's own SCRAM exchange gave it (PgBouncer 1.14+), so no file holds a
plaintext password.  The verifiers live in ``pg_authid``, which only a superuser may read.

A line is refused rather than written when PgBouncer could not use it: a role that does not exist or has
no password, a verifier that is not SCRAM-SHA-256 (an old md5 password), or, when the role's password
variable is set, a verifier that was not made from that password (``dbkit roles apply`` was not run since
it changed): the file would let the old password in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def auth_file_line(name: str, verifier: str) -> str:
    """``"name" "verifier"``, as PgBouncer reads its auth_file (a double quote inside a field is doubled)."""
    return " ".join('"' + field.replace('"', '""') + '"' for field in (name, verifier))


def userlist(settings, conn=None, roles: Sequence[str] | None = None) -> str:
    """The auth_file text for ``roles`` (default: every LOGIN role of the model that takes a password), in
    the model's order, ending with a newline.  ``conn``: a superuser's psycopg connection (one is opened
    from the settings when None).  Raises ConfigError / OperationFailed with one line naming the fix."""
    from dbkit.errors import ConfigError, OperationFailed, UsageError
    from dbkit.roles._common import _connection, _stored_passwords, password_of
    from dbkit.roles._model import model
    from dbkit.roles._scram import parse_scram_verifier, scram_verify

    logins = model(settings).logins()
    by_name = {r.name: r for r in logins}
    wanted = [r.name for r in logins] if roles is None else list(dict.fromkeys(roles))
    for name in wanted:
        if name not in by_name:
            raise UsageError(f"{name} is not a LOGIN role of the role model that takes a password "
                             f"(those are: {', '.join(by_name) or 'none'})")
    if not wanted:
        raise UsageError("the role model has no LOGIN role that takes a password: PgBouncer has no one to let in")
    with _connection(settings, conn) as c:
        stored = _stored_passwords(c, wanted)
        who = c.info.user
    if stored is None:
        raise ConfigError("DATABASE_URL", f"connects as {who}, who cannot read pg_authid",
                          purpose="reads the SCRAM verifiers PgBouncer checks passwords against (a superuser's "
                          "connection)", example="DATABASE_URL=postgresql://postgres@db.internal:5432/rtpm")
    lines = []
    for name in wanted:
        role = by_name[name]
        if name not in stored:
            raise OperationFailed(f"role {name} does not exist in the database's cluster",
                                  hint="create it with `dbkit roles apply` (or `dbkit migrate`)")
        verifier = stored[name]
        variable = role.password_env  # set for every role logins() returns (model())
        if not verifier:
            raise ConfigError(variable, f"was not applied: role {name} has no password, so PgBouncer could never "
                              "let it in", example=f"{variable}=<a long random secret>, then `dbkit roles apply`")
        if parse_scram_verifier(verifier) is None:
            raise OperationFailed(f"role {name}'s password is not stored as SCRAM-SHA-256 (PgBouncer's "
                                  "scram-sha-256 auth needs it)", hint=f"set {variable} and run `dbkit roles apply`")
        password = password_of(settings, role)
        if password is not None and not scram_verify(password, verifier):
            raise OperationFailed(f"role {name}'s stored password was not made from {variable} (it changed since "
                                  "the last `dbkit roles apply`)", hint="run `dbkit roles apply` first")
        lines.append(auth_file_line(name, verifier))
    return "\n".join(lines) + "\n"


def write_userlist(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file in the same directory, renamed) with mode 0600:
    verifiers are secrets (they allow offline password guessing)."""
    from dbkit.errors import ConfigError
    from dbkit.roles._common import _write_atomically

    target = Path(path)
    if not target.parent.is_dir():
        raise ConfigError(str(path), f"cannot be written: directory {target.parent} does not exist",
                          example="pgbouncer/userlist.txt (create the directory first)")
    _write_atomically(target, text, 0o600)
    return target
