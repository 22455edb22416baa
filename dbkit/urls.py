"""Database URL parsing, validation and password masking (pure functions).

Every URL or DSN dbkit prints goes through :func:`mask_url` (one URL) or
:func:`mask_secrets` (free text such as an error message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from dbkit.errors import ConfigError

__all__ = [
    "MASK",
    "DbUrl",
    "parse_database_url",
    "mask_url",
    "mask_secrets",
    "first_line",
]

MASK = "***"
SCHEMES = ("postgresql", "postgres")
DRIVERS = ("psycopg", "psycopg2", "asyncpg", "pg8000")
EXAMPLE_URL = "postgresql://app:secret@localhost:5432/app"

_SECRET_QUERY_KEYS = {"password", "sslpassword", "secret", "secret_key", "token"}


@dataclass(frozen=True)
class DbUrl:
    """A validated PostgreSQL URL.  ``str()`` is masked; use :attr:`raw` to connect."""

    raw: str
    user: str | None
    password: str | None
    hosts: tuple[str, ...]
    port: int | None
    dbname: str | None
    query: tuple[tuple[str, str], ...]

    @property
    def conninfo(self) -> str:
        """The URL as libpq/psycopg accepts it (no SQLAlchemy ``+driver``)."""
        return _rebuild(self.raw, scheme="postgresql")

    @property
    def sqlalchemy_url(self) -> str:
        """The URL for SQLAlchemy 2 with the psycopg 3 driver."""
        return _rebuild(self.raw, scheme="postgresql+psycopg")

    @property
    def masked(self) -> str:
        return mask_url(self.raw)

    @property
    def is_local(self) -> bool:
        """Loopback hosts and unix sockets (no host, or a host that is a directory)."""
        hosts = list(self.hosts) or [v for k, v in self.query if k == "host"] or [""]
        return all(h in ("localhost", "127.0.0.1", "::1", "") or h.startswith("/") for h in hosts)

    @property
    def sslmode(self) -> str | None:
        return dict(self.query).get("sslmode")

    def without_password(self) -> DbUrl:
        """The same URL with no password (for command lines; pass the password another way)."""
        parts = urlsplit(self.raw)
        userinfo, at, hostinfo = parts.netloc.rpartition("@")
        if not at or ":" not in userinfo:
            return self
        netloc = f"{userinfo.split(':', 1)[0]}@{hostinfo}"
        return parse_database_url(f"{parts.scheme}://{netloc}{parts.path}" + (f"?{parts.query}" if parts.query else ""))

    def with_dbname(self, dbname: str) -> DbUrl:
        return parse_database_url(_rebuild(self.raw, path="/" + quote(dbname, safe="")))

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"DbUrl({self.masked!r})"


def _rebuild(url: str, *, scheme: str | None = None, path: str | None = None) -> str:
    """Replace the scheme and/or path of a URL, keeping an empty netloc (``postgresql:///db``)."""
    parts = urlsplit(url)
    new_scheme = scheme or parts.scheme
    new_path = parts.path if path is None else path
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{new_scheme}://{parts.netloc}{new_path}{query}{fragment}"


def _bad(problem: str, url: str, variable: str) -> ConfigError:
    return ConfigError(
        variable,
        f"is malformed ({problem}): {mask_url(url)!r}",
        purpose="tells dbkit which PostgreSQL database to use",
        example=EXAMPLE_URL,
    )


def parse_database_url(url: str, *, variable: str = "DATABASE_URL") -> DbUrl:
    """Validate a PostgreSQL URL and split it into its parts.

    Accepts ``postgresql://``, ``postgres://`` and SQLAlchemy's
    ``postgresql+psycopg://`` forms, several ``host:port`` pairs and
    ``?host=/socket/dir``.  Raises :class:`ConfigError` naming ``variable``.
    """
    url = url.strip()
    if not url:
        raise _bad("it is empty", url, variable)
    if "://" not in url:
        raise _bad("expected a URL starting with postgresql://", url, variable)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _bad(str(exc), url, variable) from None
    scheme, _, driver = parts.scheme.partition("+")
    if scheme not in SCHEMES:
        raise _bad(f"scheme {parts.scheme!r} is not PostgreSQL", url, variable)
    if driver and driver not in DRIVERS:
        raise _bad(f"unknown driver {driver!r}", url, variable)
    netloc = parts.netloc
    userinfo, at, hostinfo = netloc.rpartition("@")
    if not at:
        userinfo, hostinfo = "", netloc
    user, colon, password = userinfo.partition(":")
    hosts: list[str] = []
    port: int | None = None
    for hostport in hostinfo.split(",") if hostinfo else []:
        if hostport.startswith("["):  # IPv6 literal
            host, _, rest = hostport[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = hostport.partition(":")
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise _bad(f"port {port_text!r} is not a number between 1 and 65535", url, variable)
            port = port if port is not None else int(port_text)
        if not host:
            raise _bad("empty host name", url, variable)
        hosts.append(unquote(host))
    try:
        query = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError:
        raise _bad("the query string is not key=value pairs", url, variable) from None
    dbname = unquote(parts.path[1:]) if parts.path.startswith("/") and len(parts.path) > 1 else None
    if dbname and "/" in dbname:
        raise _bad("the database name contains '/'", url, variable)
    return DbUrl(
        raw=url,
        user=unquote(user) or None,
        password=unquote(password) if colon else None,
        hosts=tuple(hosts),
        port=port,
        dbname=dbname,
        query=query,
    )


def mask_url(url: str) -> str:
    """Return ``url`` with its password (and secret query parameters) replaced by ``***``.

    Never raises: text that is not a URL is returned with :func:`mask_secrets` applied.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_secrets(url)
    if not parts.scheme or not parts.netloc and not parts.query:
        return mask_secrets(url)
    netloc = parts.netloc
    userinfo, at, hostinfo = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode(
                [(k, MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*/"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# scheme://user:password@  (password up to the last '@' before the host part)
_URL_PW = re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]*(?:@[^\s@/]*)*?)(?P<post>@[^\s@]+)")
# key=value / key: value forms used by libpq DSNs, env dumps and tools
_KV_PW = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd|sslpassword|secret_key|secret|aws_secret_access_key|s3_secret_key)\s*[=:]\s*)"
    r"(?P<q>['\"]?)(?P<pw>[^\s'\"&,;]+)(?P=q)",
    re.IGNORECASE,
)


def first_line(text: str, default: str = "") -> str:
    """The first non-empty line of ``text`` (an error message, a tool's stderr), passwords masked."""
    for line in str(text).splitlines():
        if line.strip():
            return mask_secrets(line.strip())
    return default


def mask_secrets(text: str) -> str:
    """Mask passwords inside free text: URLs with credentials and ``password=...`` pairs."""
    text = _URL_PW.sub(lambda m: f"{m['pre']}{MASK}{m['post']}", text)
    return _KV_PW.sub(lambda m: f"{m['pre']}{m['q']}{MASK}{m['q']}", text)
