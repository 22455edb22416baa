import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbkit.errors import ConfigError
from dbkit.urls import mask_secrets, mask_url, parse_database_url

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


_pw = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="@/?#[]%:"),
              min_size=6, max_size=30)


@given(password=_pw, user=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True))
def test_masking_never_leaks_a_password(password, user):
    url = f"postgresql://{user}:{password}@db.internal:5432/app"
    assert password not in mask_url(url).replace(f"{user}:", "", 1).split("@")[0] + mask_url(url).split("@", 1)[1]
    assert password not in mask_secrets(f"error talking to {url}: timeout")


def test_first_line_masks_and_defaults():
    from dbkit.urls import first_line

    assert first_line("\n  \nFATAL: password for postgresql://u:pw@h/db\nsecond") == "FATAL: password for postgresql://u:***@h/db"
    assert first_line("", "no message") == "no message"
