"""SCRAM-SHA-256: verifiers are made by libpq (``PQencryptPasswordConn``, through psycopg), as
psql's ``\\password`` does, so only the verifier is ever sent.  Checking whether a stored
verifier was made from a password (so ``roles apply`` changes nothing when nothing changed,
and ``roles check`` can report a different password) needs the same derivation done here:
:func:`scram_verify` (with :func:`saslprep`, PostgreSQL's ``pg_saslprep``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stringprep
import unicodedata

SCRAM_ITERATIONS = 4096
SCRAM_SALT_BYTES = 16
_SCRAM = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")

_SASL_PROHIBITED = (
    stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22, stringprep.in_table_c3,
    stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
    stringprep.in_table_c8, stringprep.in_table_c9, stringprep.in_table_a1,
)


def saslprep(password: str) -> bytes:
    """The bytes PostgreSQL hashes for ``password`` (its ``pg_saslprep``, RFC 4013).

    Like PostgreSQL: an ASCII password is used as it is; otherwise non-ASCII spaces
    map to a space, "commonly mapped to nothing" characters are dropped, the result is
    NFKC-normalized and then checked for prohibited, unassigned (Unicode 3.2) and
    mixed-direction characters.  When SASLprep rejects the password (or it is empty
    after mapping, or not valid UTF-8), PostgreSQL uses the original bytes, and so do we.
    Python's ``stringprep`` module provides the RFC 3454 tables; normalization uses
    Python's Unicode database, which agrees with PostgreSQL's for every character
    assigned in Unicode 3.2 (later ones are rejected as unassigned before it matters).
    """
    try:
        raw = password.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the environment (surrogateescape)
        return password.encode("utf-8", "surrogateescape")
    if password.isascii():
        return raw
    mapped = "".join(" " if stringprep.in_table_c12(c) else c
                     for c in password if not stringprep.in_table_b1(c))
    if not mapped:
        return raw
    prepared = unicodedata.normalize("NFKC", mapped)
    if any(check(c) for c in prepared for check in _SASL_PROHIBITED):
        return raw
    if any(stringprep.in_table_d1(c) for c in prepared):
        if any(stringprep.in_table_d2(c) for c in prepared):
            return raw
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            return raw
    return prepared.encode("utf-8")


def _scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


def scram_sha256_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677).

    ``SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>``;
    a random 16-byte salt unless one is given.  Sending this instead of the password
    (``ALTER ROLE … PASSWORD '<verifier>'``) is what psql's ``\\password`` does.
    """
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = os.urandom(SCRAM_SALT_BYTES) if salt is None else salt
    stored_key, server_key = _scram_keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def parse_scram_verifier(verifier: str | None) -> tuple[int, bytes, bytes, bytes] | None:
    """``(iterations, salt, stored_key, server_key)``, or None when it is not a SCRAM-SHA-256 verifier."""
    m = _SCRAM.match(verifier or "")
    if not m:
        return None
    try:
        return int(m.group(1)), *(base64.b64decode(g, validate=True) for g in m.group(2, 3, 4))
    except ValueError:
        return None


def scram_verify(password: str, verifier: str | None) -> bool:
    """Whether ``verifier`` (as stored in pg_authid) was made from ``password``."""
    parsed = parse_scram_verifier(verifier)
    if parsed is None:
        return False
    iterations, salt, stored_key, server_key = parsed
    if iterations < 1:
        return False
    mine_stored, mine_server = _scram_keys(password, salt, iterations)
    return hmac.compare_digest(mine_stored, stored_key) and hmac.compare_digest(mine_server, server_key)


def encrypt_password(conn, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier for ``password``, made by libpq on ``conn`` (nothing is sent)."""
    verifier = conn.pgconn.encrypt_password(password.encode("utf-8", "surrogateescape"), role.encode(),
                                            b"scram-sha-256")
    return verifier.decode("ascii")
