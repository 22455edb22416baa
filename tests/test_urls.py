import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbkit._urls import mask_secrets, mask_url, parse_database_url
from dbkit.errors import ConfigError

pytestmark = pytest.mark.unit


def test_parse_full_url():
    u = parse_database_url("postgresql://app:s%40cret@db.example.com:6432/appdb?sslmode=require")
    assert (u.user, u.password, u.hosts, u.port, u.dbname) == ("app", "s@cret", ("db.example.com",), 6432, "appdb")
    assert dict(u.query) == {"sslmode": "require"}
    assert str(u) == "postgresql://app:***@db.example.com:6432/appdb?sslmode=require"
    assert "s%40cret" not in repr(u)


@pytest.mark.parametrize("url", [
    "postgres://u@localhost/db",
    "postgresql+psycopg://u:p@localhost:5432/db",
    "postgresql:///db?host=/var/run/postgresql",
    "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
    "postgresql://u@[::1]:5432/db",
])
def test_parse_accepts_libpq_and_sqlalchemy_forms(url):
    u = parse_database_url(url)
    assert u.conninfo.startswith("postgresql://")
    assert u.sqlalchemy_url.startswith("postgresql+psycopg://")


@pytest.mark.parametrize("url, problem", [
    ("", "it is empty"),
    ("localhost:5432/db", "expected a URL starting with postgresql://"),
    ("mysql://u:p@h/db", "scheme 'mysql' is not PostgreSQL"),
    ("postgresql+foo://u@h/db", "unknown driver 'foo'"),
    ("postgresql://u@h:notaport/db", "port 'notaport' is not a number"),
    ("postgresql://u@h:70000/db", "port '70000' is not a number between 1 and 65535"),
    ("postgresql://u@:5432/db", "empty host name"),
])
def test_parse_rejects_malformed_urls_naming_the_variable(url, problem):
    with pytest.raises(ConfigError) as err:
        parse_database_url(url, variable="DATABASE_URL")
    msg = str(err.value)
    assert msg.startswith("DATABASE_URL is malformed")
    assert problem in msg
    assert "example: postgresql://" in msg
    assert err.value.exit_code == 2


def test_malformed_url_error_never_shows_the_password():
    with pytest.raises(ConfigError) as err:
        parse_database_url("mysql://root:TopSecret1@h/db")
    assert "TopSecret1" not in str(err.value)


def test_with_dbname_keeps_everything_else():
    u = parse_database_url("postgresql://a:b@h:1/x?sslmode=disable").with_dbname("other db")
    assert u.dbname == "other db" and u.password == "b" and u.port == 1
    assert dict(u.query) == {"sslmode": "disable"}


@pytest.mark.parametrize("url, expected", [
    ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("postgresql://h/db?password=pw&sslmode=require", "postgresql://h/db?password=***&sslmode=require"),
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("not a url", "not a url"),
])
def test_mask_url(url, expected):
    assert mask_url(url) == expected


def test_mask_secrets_in_free_text():
    text = ("could not connect to postgresql://app:hunter2@db:5432/x and "
            "host=db password=hunter3 user=app; AWS_SECRET_ACCESS_KEY=abc123")
    masked = mask_secrets(text)
    for secret in ("hunter2", "hunter3", "abc123"):
        assert secret not in masked
    assert "postgresql://app:***@db:5432/x" in masked


@pytest.mark.parametrize("sql", [
    "ALTER ROLE app_rls PASSWORD 'hunter2'",
    "CREATE ROLE reporting LOGIN ENCRYPTED PASSWORD 'it''s hunter2' VALID UNTIL 'infinity'",
    "create user mapping for app server remote options (user 'app', password 'hunter2')",
    "ALTER ROLE app_rls PASSWORD E'hun\\'ter2'",
])
def test_mask_secrets_masks_sql_password_literals(sql):
    """A failing statement is quoted in messages, logs and rehearse reports: its password literal is not."""
    masked = mask_secrets(f"revision 0002 failed: syntax error; statement: {sql}; next")
    assert "hunter2" not in masked and "ter2" not in masked
    assert "'***'" in masked and masked.endswith("; next")
    assert mask_secrets("ALTER ROLE x PASSWORD NULL") == "ALTER ROLE x PASSWORD NULL"
    assert "VALID UNTIL 'infinity'" in mask_secrets(sql) or "VALID UNTIL" not in sql


_pw = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="@/?#[]%:"),
              min_size=6, max_size=30)


@given(password=_pw, user=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True))
def test_masking_never_leaks_a_password(password, user):
    url = f"postgresql://{user}:{password}@db.internal:5432/app"
    assert password not in mask_url(url).replace(f"{user}:", "", 1).split("@")[0] + mask_url(url).split("@", 1)[1]
    assert password not in mask_secrets(f"error talking to {url}: timeout")


def test_first_line_masks_and_defaults():
    from dbkit._urls import first_line

    assert first_line("\n  \nFATAL: password for postgresql://u:pw@h/db\nsecond") == "FATAL: password for postgresql://u:***@h/db"
    assert first_line("", "no message") == "no message"


# --------------------------------------------------------------------- hardening: malformed URLs

# Password characters that cannot collide with the fixed text of the error message (its example
# URL, the variable name, "%2F"...), so "no 3-character piece of the password" is a real claim.
_SECRET_CHARS = "QXZJKVWY!$~" + "/#?@"
_tricky_pw = st.text(alphabet=_SECRET_CHARS, min_size=3, max_size=40).filter(lambda p: any(c in p for c in "/#?@"))


@given(password=_tricky_pw, user=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
       port=st.sampled_from(["", ":5432"]), query=st.sampled_from(["", "?sslmode=require"]))
def test_unencoded_reserved_characters_in_a_password_never_reach_the_error(password, user, port, query):
    url = f"postgresql://{user}:{password}@db.example{port}/appdb{query}"
    try:
        parsed = parse_database_url(url)
    except ConfigError as err:
        msg = str(err)
        assert "\n" not in msg and msg.startswith("DATABASE_URL is malformed")
        assert "percent-encode" in msg
        leaked = [password[i:i + 3] for i in range(len(password) - 2) if password[i:i + 3] in msg]
        assert not leaked, (leaked, msg)
        assert f"//{user}:" not in msg
    else:  # what parses must mean what libpq will understand: the password as written
        assert parsed.password == password and parsed.hosts == ("db.example",)


@given(userinfo=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=6, max_size=30))
def test_the_user_info_of_a_url_that_does_not_parse_is_never_shown(userinfo):
    url = f"postgresql://{userinfo}@db.example/appdb"
    try:
        parse_database_url(url)
    except ConfigError as err:
        assert userinfo not in str(err) and "\n" not in str(err)


@pytest.mark.parametrize("url", [
    "postgresql://tricky:ab/Secr3tSlash@db/app",
    "postgresql://u:Secr3t#Hash@db/app",
    "postgresql://u:5432?Secr3tQ@db/app",
    "postgresql://u:Secr3t@At@db/app",
    "postgresql://u:Secr3t[x@db/app",
])
def test_reserved_characters_in_the_password_get_one_percent_encode_line(url):
    with pytest.raises(ConfigError) as err:
        parse_database_url(url)
    msg = str(err.value)
    assert "Secr3t" not in msg and "tricky" not in msg and "\n" not in msg
    assert "'postgresql://***@db/app'" in msg and "percent-encode it: '/' as %2F" in msg


@pytest.mark.parametrize("url, problem", [
    ("postgresql://u@db/app?foo=bar", "?foo= is not a libpq connection parameter"),
    ("postgresql://u@db/app%zz", "a '%' in the database name is not followed by two hex digits"),
    ("postgresql://u%zz@db/app", "a '%' in the user name is not followed by two hex digits"),
    ("postgresql://u:pw%zz@db/app", "a '%' in the password is not followed by two hex digits"),
    ("postgresql://u@d%zzb/app", "a '%' in the host name is not followed by two hex digits"),
    ("postgresql://u@db/app?sslmode=%zz", "a '%' in the query string is not followed by two hex digits"),
    ("postgresql://u@db/a%ff", "the percent-escapes in the database name are not UTF-8"),
    ("postgresql://u@db/app\udcff", "it is not valid UTF-8 text"),
    ("postgresql://u@db/app\x00", "it contains a control character"),
    ("postgresql://u@db/app#frag", "a database URL takes no #fragment"),
    ("postgresql://u@db/" + "d" * 64, "the database name is 64 bytes, over PostgreSQL's limit of 63"),
    ("postgresql://u@db/" + "é" * 32, "the database name is 64 bytes, over PostgreSQL's limit of 63"),
])
def test_urls_libpq_would_reject_are_config_errors(url, problem):
    with pytest.raises(ConfigError) as err:
        parse_database_url(url)
    msg = str(err.value)
    assert msg.startswith("DATABASE_URL is malformed") and problem in msg and "\n" not in msg
    assert "pw" not in msg.split("example:")[0]
    assert err.value.exit_code == 2


def test_a_long_url_is_not_echoed_whole():
    with pytest.raises(ConfigError) as err:
        parse_database_url("postgresql://u@db/app?" + "x" * 100_000)
    assert len(str(err.value)) < 400 and "…" in str(err.value)


@pytest.mark.parametrize("url", [
    "postgresql://u@db/app?application_name=me@laptop",  # '@' in a query value: libpq takes it
    "postgresql://u@db/app?ssl=true",                     # libpq's URI-only alias of sslmode=require
    "postgresql://u:p%2F%23%3F%40w@db/app",               # reserved characters, encoded
    "postgresql://u@db/" + "d" * 63,
])
def test_valid_urls_stay_valid(url):
    u = parse_database_url(url)
    from psycopg.conninfo import conninfo_to_dict

    assert conninfo_to_dict(u.conninfo)  # libpq agrees


def test_encoded_password_round_trips():
    assert parse_database_url("postgresql://u:p%2F%23%3F%40w@db/app").password == "p/#?@w"
