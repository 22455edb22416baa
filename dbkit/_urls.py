"""Database URL parsing, validation and password masking (pure functions).

Every URL or DSN dbkit prints goes through :func:`mask_url` (one URL) or
:func:`mask_secrets` (free text such as an error message).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from dbkit.errors import ConfigError

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
        if self.password is None:
            return self
        parts = urlsplit(self.raw)
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{hostinfo}"
        return parse_database_url(f"{parts.scheme}://{netloc}{parts.path}" + (f"?{parts.query}" if parts.query else ""))

    def with_dbname(self, dbname: str) -> DbUrl:
        return parse_database_url(_rebuild(self.raw, path="/" + quote(dbname, safe="")))

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"DbUrl({self.masked!r})"


def _rebuild(url: str, *, scheme: str | None = None, path: str | None = None) -> str:
    """Replace the scheme and/or path of a URL, keeping an empty netloc (``postgresql:///db``); a DbUrl has no
    fragment (:func:`_parse` refuses one)."""
    parts = urlsplit(url)
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme or parts.scheme}://{parts.netloc}{parts.path if path is None else path}{query}"


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters with "…" (a 100 KB argument is not echoed whole)."""
    return text if len(text) <= limit else text[:limit] + "…"


def few(items: list[str], shown: int = 3, sep: str = "; ") -> str:
    """The first ``shown`` of ``items`` and how many more: ``a; b; c; 2 more``."""
    return sep.join(items[:shown]) + (f"{sep}{len(items) - shown} more" if len(items) > shown else "")


def _redacted(url: str) -> str:
    """What an error may show of a URL that did not parse: nothing of the user-info.

    Everything between ``://`` and the LAST ``@`` is replaced by ``***`` (a password with an unencoded
    ``/``, ``?``, ``#`` or ``@`` cannot be told apart from the host part, so all of it goes), other
    passwords (``?password=``) are masked, and the result is clipped.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        return clip(f"{scheme}{sep}{MASK}@{rest.rpartition('@')[2]}")
    return clip(mask_url(url))


def _bad(problem: str, url: str, variable: str) -> ConfigError:
    # !r escapes control characters and undecodable bytes, so the message stays one printable line
    return ConfigError(variable, f"is malformed ({problem}): {_redacted(url)!r}" if problem else
                       f"is malformed: {_redacted(url)!r} has {_ENCODE_HINT}",
                       purpose="tells dbkit which PostgreSQL database to use", example=EXAMPLE_URL)


_ENCODE_HINT = ("a reserved character in its user name or password (so where the host starts is unclear); "
                "percent-encode it: '/' as %2F, '?' as %3F, '#' as %23, '@' as %40, '%' as %25")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are silently truncated


def has_surrogates(text: str) -> bool:
    """True for a str holding bytes that were not UTF-8 (argv/environ decode them as lone surrogates)."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _decode(part: str, what: str) -> str:
    """Percent-decode one URL component; raises ValueError with a problem text that never quotes ``part``."""
    if _BAD_ESCAPE.search(part):
        raise ValueError(f"a '%' in the {what} is not followed by two hex digits; percent-encode '%' as %25")
    try:
        return unquote(part, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"the percent-escapes in the {what} are not UTF-8") from None


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    """The connection parameters this libpq knows (asked once, only for URLs with a query string)."""
    from psycopg import pq

    return frozenset(d.keyword.decode() for d in pq.Conninfo.get_defaults()) | {"ssl"}


def parse_database_url(url: str, *, variable: str = "DATABASE_URL") -> DbUrl:
    """Validate a PostgreSQL URL and split it into its parts.

    Accepts ``postgresql://``, ``postgres://`` and SQLAlchemy's
    ``postgresql+psycopg://`` forms, several ``host:port`` pairs and
    ``?host=/socket/dir``.  Raises :class:`ConfigError` naming ``variable``.
    """
    url = url.strip()
    if not url:
        raise _bad("it is empty", url, variable)
    if has_surrogates(url):
        raise _bad("it is not valid UTF-8 text", url, variable)
    if _CONTROL.search(url):
        raise _bad("it contains a control character", url, variable)
    if "://" not in url:
        raise _bad("expected a URL starting with postgresql://", url, variable)
    try:
        return _parse(url)
    except ValueError as exc:
        # Whatever went wrong, a '/', '?', '#', '@' or '%' before the last '@' means the user-info may
        # hold an unencoded character: then the problem text could quote part of the password (a
        # "port" cut out of it), so say only what to do.
        userinfo = url.partition("://")[2].rpartition("@")[0]
        if any(ch in userinfo for ch in "/?#@[]"):
            raise _bad("", url, variable) from None
        raise _bad(str(exc), url, variable) from None


def _parse(url: str) -> DbUrl:
    """The parse proper; every problem is a ValueError whose text is safe to show (no user-info)."""
    parts = urlsplit(url)
    scheme, _, driver = parts.scheme.partition("+")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme {clip(parts.scheme, 20)!r} is not PostgreSQL")
    if driver and driver not in DRIVERS:
        raise ValueError(f"unknown driver {clip(driver, 20)!r}")
    if parts.fragment or url.endswith("#"):
        raise ValueError("a database URL takes no #fragment")
    userinfo, _, hostinfo = parts.netloc.rpartition("@")  # no '@': ("", "", netloc)
    if "@" in userinfo:
        raise ValueError("an unencoded '@' in the user name or password")
    user, colon, password = userinfo.partition(":")
    user = _decode(user, "user name")
    password = _decode(password, "password")
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
                raise ValueError(f"port {clip(port_text, 20)!r} is not a number between 1 and 65535")
            port = port if port is not None else int(port_text)
        if not host:
            raise ValueError("empty host name")
        hosts.append(_decode(host, "host name"))
    for piece in parts.query.split("&"):
        _decode(piece, "query string")
    try:
        query = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query),
                                errors="strict"))
    except ValueError:
        raise ValueError("the query string is not key=value pairs") from None
    unknown = [k for k, _ in query if k not in _libpq_keywords()]  # no query: psycopg is not imported
    if unknown:
        raise ValueError(f"?{clip(unknown[0], 40)}= is not a libpq connection parameter "
                         "such as sslmode, connect_timeout or application_name")
    dbname = _decode(parts.path[1:], "database name") if parts.path.startswith("/") and len(parts.path) > 1 else None
    if dbname and "/" in dbname:
        raise ValueError("the database name contains '/'")
    if dbname and len(dbname.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"the database name is {len(dbname.encode())} bytes, over PostgreSQL's limit of "
                         f"{MAX_NAME_BYTES}")
    return DbUrl(raw=url, user=user or None, password=password if colon else None, hosts=tuple(hosts), port=port,
                 dbname=dbname, query=query)


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
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*/")
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


# SQL: ALTER/CREATE ROLE … [ENCRYPTED] PASSWORD '…', OPTIONS (password '…') of user mappings and servers
_SQL_PW = re.compile(r"(?P<pre>\bpassword\s+)(?:E'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*')(?!')", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """Mask passwords inside free text: URLs with credentials, ``password=...`` pairs and SQL's
    ``PASSWORD '...'`` literals (a failing statement is quoted in messages)."""
    text = _URL_PW.sub(lambda m: f"{m['pre']}{MASK}{m['post']}", text)
    text = _SQL_PW.sub(lambda m: f"{m['pre']}'{MASK}'", text)
    return _KV_PW.sub(lambda m: f"{m['pre']}{m['q']}{MASK}{m['q']}", text)
