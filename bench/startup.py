"""`switchboard up` from nothing to ready, then again on the same home, and its idle memory.

The first start in a fresh home includes initdb, the migrations and loading the personas;
the second (after a clean Ctrl+C) starts the stopped servers again. "Ready" is the first
200 from /healthz. Target: ≤ 10 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from bench._common import emit, free_port, say, temp_home

READY_TIMEOUT = 120.0
IDLE_SECONDS = 3.0
SWITCHBOARD = Path(sys.executable).with_name("switchboard")


def environment(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SWITCHBOARD_HOME": str(home),
        "SWITCHBOARD_MODEL": "openai/fake-model",
        # Nothing listens on the discard port: no request leaves the machine.
        "SWITCHBOARD_LLM_API_BASE": "http://127.0.0.1:9/v1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(home: Path, port: int, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Spawn `switchboard up`; returns it and the seconds until /healthz answered."""
    started = time.monotonic()
    with log.open("ab") as out:
        # cwd=home: a .env file wherever the benchmark runs must not change the settings.
        up = subprocess.Popen(
            [str(SWITCHBOARD), "up", "--port", str(port)],
            env=environment(home),
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    while not healthy(port):
        if up.poll() is not None or time.monotonic() - started > READY_TIMEOUT:
            stop(up)
            raise SystemExit(f"`switchboard up` did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return up, time.monotonic() - started


def stop(up: subprocess.Popen[bytes]) -> float:
    """Ctrl+C, as a person would; returns the seconds until it exited."""
    started = time.monotonic()
    up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=60)
    except subprocess.TimeoutExpired:
        say("WARNING: `switchboard up` ignored SIGINT for 60 s; killing it")
        up.kill()
        up.wait()
    return time.monotonic() - started


def service_processes(home: Path) -> list[psutil.Process]:
    """The embedded Postgres (postmaster and its children) and Valkey of ``home``, if running."""
    found = []
    for pid_file in (home / "postgres" / "postmaster.pid", home / "valkey" / "valkey.pid"):
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            process = psutil.Process(int(pid_file.read_text().split()[0]))
            found += [process, *process.children(recursive=True)]
    return found


def rss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return round(total / 2**20, 1)


def reap_leftovers(home: Path) -> int:
    """Kill embedded servers a stopped `up` left behind; returns how many there were."""
    leftovers = [p for p in service_processes(home) if p.is_running()]
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(leftovers, timeout=10)
    if leftovers:
        say(f"WARNING: {len(leftovers)} embedded server processes outlived `switchboard up`")
    return len(leftovers)


def main() -> None:
    if os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL"):
        say("note: DATABASE_URL/REDIS_URL are set, so `up` joins those servers (no initdb)")
    with temp_home() as home:
        port, log = free_port(), home / "up.log"
        say(f"cold start in {home} on port {port}")
        up, cold = start(home, port, log)
        say(f"ready in {cold:.2f} s (fresh home: initdb, migrations, personas)")
        stopped_cold = stop(up)
        leftovers = reap_leftovers(home)
        say(f"stopped in {stopped_cold:.2f} s; warm start on the same home")
        up, warm = start(home, port, log)
        say(f"ready in {warm:.2f} s; idling {IDLE_SECONDS:g} s")
        time.sleep(IDLE_SECONDS)
        idle_rss = rss_mb([psutil.Process(up.pid)])
        services = service_processes(home)
        services_rss = rss_mb(services)
        stopped_warm = stop(up)
        leftovers += reap_leftovers(home)
    say(
        f"cold {cold:.2f} s, warm {warm:.2f} s (target <= 10 s: "
        f"{'met' if max(cold, warm) <= 10 else 'MISSED'}); idle RSS: up {idle_rss} MB, "
        f"Postgres + Valkey ({len(services)} processes) {services_rss} MB"
    )
    emit(
        "startup",
        cold_first_run_s=round(cold, 2),
        warm_s=round(warm, 2),
        idle_rss_mb=idle_rss,
        services_rss_mb=services_rss,
        stop_s=round(max(stopped_cold, stopped_warm), 2),
        leftover_processes=leftovers,
    )


if __name__ == "__main__":
    main()
