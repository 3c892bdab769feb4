"""docker-compose.yml is valid and wires the production services together.

Validation uses the real Compose implementation (Debian's `docker-compose`, v1.29): its
`config` command checks the file against the Compose schema and prints it normalised,
which is what the assertions read. No Docker engine is needed.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed: run scripts/install-system-deps.sh "
            "(or `apt-get install docker-compose`)"
        )
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"docker-compose config rejected the file:\n{result.stderr}"
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services[name]


def command(compose: dict[str, Any], name: str) -> list[str]:
    cmd = service(compose, name)["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def environment(compose: dict[str, Any], name: str) -> dict[str, str | None]:
    env = service(compose, name).get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def test_services_exist(compose: dict[str, Any]) -> None:
    assert {"postgres", "redis", "switchboard", "worker"} <= set(compose["services"])


def test_app_commands(compose: dict[str, Any]) -> None:
    assert command(compose, "switchboard") == ["switchboard", "up", "--host", "0.0.0.0"]
    assert command(compose, "worker") == ["switchboard", "worker"]


def test_app_and_worker_share_one_build(compose: dict[str, Any]) -> None:
    app, worker = service(compose, "switchboard"), service(compose, "worker")
    assert "build" in app
    assert worker["image"] == app["image"]


def _published(port: str | dict[str, Any]) -> tuple[str, int]:
    """(host address, container port) of a ``ports`` entry, long or short syntax."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), int(port["target"])
    parts = str(port).split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else ""), int(parts[-1])


def test_web_port_published_on_loopback_only(compose: dict[str, Any]) -> None:
    # The web chat has no login: other machines reach it only through a reverse proxy.
    ports = [_published(p) for p in service(compose, "switchboard")["ports"]]
    assert ports == [("127.0.0.1", 8765)]


def test_the_public_host_name_reaches_the_app(compose: dict[str, Any]) -> None:
    assert "SWITCHBOARD_WEB_HOSTS" in environment(compose, "switchboard")


@pytest.mark.parametrize("name", ["switchboard", "worker"])
def test_urls_point_at_compose_services(compose: dict[str, Any], name: str) -> None:
    env = environment(compose, name)
    database = urlsplit(env["DATABASE_URL"] or "")
    redis = urlsplit(env["REDIS_URL"] or "")
    assert (database.scheme, database.hostname, database.port) == ("postgresql", "postgres", 5432)
    assert database.path == "/switchboard"
    assert database.password == environment(compose, "postgres")["POSTGRES_PASSWORD"]
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)


@pytest.mark.parametrize("name", ["switchboard", "worker"])
def test_app_waits_for_healthy_backends(compose: dict[str, Any], name: str) -> None:
    depends_on = service(compose, name)["depends_on"]
    for backend in ("postgres", "redis"):
        assert depends_on[backend]["condition"] == "service_healthy"
        assert "healthcheck" in service(compose, backend)


def test_postgres_has_pgvector(compose: dict[str, Any]) -> None:
    assert "pgvector" in service(compose, "postgres")["image"]


def test_readme_documents_the_commands() -> None:
    path = ROOT / "README.md"
    assert path.is_file(), "README.md is missing"
    readme = path.read_text(encoding="utf-8")
    for cmd in ("switchboard up", "switchboard worker"):
        assert cmd in readme, f"README.md should show how to run `{cmd}`"
