"""docker-compose.yml cannot run on these machines (no Docker engine), so check it as data."""

import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_and_healthchecks(compose):
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "pgbouncer"} <= set(services)
    assert "timescaledb-ha" in services["postgres"]["image"]
    for name in ("postgres", "minio", "pgbouncer"):
        assert services[name]["healthcheck"]["test"], name
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["pgbouncer"]["profiles"] == ["pooler"]
    assert services["pgbouncer"]["environment"]["POOL_MODE"] == "transaction"
    assert set(compose["volumes"]) == {"pgdata", "minio"}


def test_ports_bind_to_loopback_only(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_no_secret_literals(compose):
    for name, svc in compose["services"].items():
        env = svc.get("environment", {})
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET|KEY", key):
                assert str(value).startswith("${"), f"{name}.{key} holds a literal secret; take it from .env"
