"""A throwaway Redis Sentinel deployment for tests and benchmarks: a master, a replica and three
sentinels on free ports in a temp dir (short timeouts: a killed master is replaced in a few
seconds), every process killed on exit.

    with SentinelCluster() as cluster:
        env = {"REDIS_SENTINELS": cluster.sentinels_setting, "REDIS_SENTINEL_MASTER": cluster.name}
        ...
        cluster.kill_master()           # SIGKILL; the sentinels promote the replica
        cluster.wait_for_failover()     # the new master's address

Sentinel mode needs ``redis-sentinel`` or a ``redis-server`` that takes ``--sentinel`` (every
release since 2.8); :func:`sentinel_command` says which, or None.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nexus_core.testing.redis_server import INSTALL_HINT, RedisUnavailable, free_port


def sentinel_command(config: str = "sentinel.conf") -> list[str] | None:
    """How to start a sentinel with ``config`` here: ``redis-sentinel``, else
    ``redis-server <config> --sentinel``; None when neither exists."""
    found = shutil.which("redis-sentinel")
    if found:
        return [found, config]
    server = shutil.which("redis-server")
    return [server, config, "--sentinel"] if server else None


def _command(port: int, *words: str, timeout: float = 0.5) -> bytes:
    """One inline command to 127.0.0.1:port and its raw reply (no client library, so a
    half-started server cannot wedge a pooled connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(" ".join(words).encode() + b"\r\n")
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunk) < 65536:
                break
        return b"".join(chunks)


def _answers(port: int) -> bool:
    try:
        return _command(port, "PING").startswith(b"+PONG")
    except OSError:
        return False


class SentinelCluster:
    """Master + replica + three sentinels (quorum 2) monitoring them as ``name``."""

    def __init__(self, name: str = "nexus", *, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000) -> None:
        server = shutil.which("redis-server")
        sentinel = sentinel_command()
        if server is None or sentinel is None:
            raise RedisUnavailable(INSTALL_HINT)
        self.server = server
        self.name = name
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.dir = Path(tempfile.mkdtemp(prefix="nexus-sentinel-"))
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def sentinels_setting(self) -> str:
        """The REDIS_SENTINELS value for this deployment."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def _spawn(self, key: str, args: list[str]) -> None:
        log = open(self.dir / f"{key}.log", "wb")  # noqa: SIM115 - the process keeps it
        self.procs[key] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                           cwd=self.dir)
        log.close()

    def _redis(self, key: str, port: int, *extra: str) -> None:
        data = self.dir / key
        data.mkdir(exist_ok=True)
        self._spawn(key, [self.server, "--port", str(port), "--bind", "127.0.0.1",
                          "--dir", str(data), "--save", "", "--appendonly", "no",
                          "--maxmemory-policy", "noeviction", *extra])

    def start(self) -> SentinelCluster:
        try:
            self._redis("master", self.master_port)
            self._wait(self.master_port, "the master")
            self._redis("replica", self.replica_port,
                        "--replicaof", "127.0.0.1", str(self.master_port))
            self._wait(self.replica_port, "the replica")
            self._until(lambda: b"master_link_status:up" in _command(
                self.replica_port, "INFO", "replication"), "the replica to sync")
            for i, port in enumerate(self.sentinel_ports):
                conf = self.dir / f"sentinel-{i}.conf"  # sentinels rewrite their config file
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                    f"sentinel monitor {self.name} 127.0.0.1 {self.master_port} 2\n"
                    f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {self.name} 1\n")
                self._spawn(f"sentinel-{i}", sentinel_command(str(conf)) or [])
            for port in self.sentinel_ports:
                self._wait(port, f"the sentinel on port {port}")
            # A failover needs every sentinel to know the replica and its peers (hello
            # messages every 2 s): wait for that rather than for a fixed time.
            for port in self.sentinel_ports:
                self._until(functools.partial(self._knows_all, port),
                            f"the sentinel on port {port} to see the replica and its peers")
        except BaseException:
            self.cleanup()
            raise
        return self

    def _knows_all(self, port: int) -> bool:
        replicas = _command(port, "SENTINEL", "REPLICAS", self.name)
        peers = _command(port, "SENTINEL", "SENTINELS", self.name)
        return str(self.replica_port).encode() in replicas and peers.startswith(b"*2")

    def _wait(self, port: int, what: str) -> None:
        self._until(lambda: _answers(port), f"{what} to answer on port {port}")

    def _until(self, predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for key, proc in self.procs.items():
                if proc.poll() is not None and key != "killed-master":
                    log = (self.dir / f"{key}.log").read_text(errors="replace")[-400:]
                    raise RedisUnavailable(f"{key} exited with {proc.returncode}: {log}")
            try:
                if predicate():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RedisUnavailable(f"timed out after {timeout:.0f} s waiting for {what}")

    def master_address(self) -> tuple[str, int] | None:
        """The master the sentinels' majority names now (None: they disagree or cannot say)."""
        seen = []
        for port in self.sentinel_ports:
            try:
                reply = _command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
            except OSError:
                continue
            parts = reply.split(b"\r\n")
            if reply.startswith(b"*2") and len(parts) >= 5:
                seen.append((parts[2].decode(), int(parts[4])))
        for addr in seen:
            if seen.count(addr) >= 2:
                return addr
        return None

    def kill_master(self) -> int:
        """SIGKILL the current master process (no shutdown, no save); returns its port."""
        addr = self.master_address()
        port = addr[1] if addr else self.master_port
        key = "master" if port == self.master_port else "replica"
        self.procs[key].send_signal(signal.SIGKILL)
        self.procs[key].wait()
        self.procs["killed-master"] = self.procs.pop(key)
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> tuple[str, int]:
        """Block until the sentinels name a master other than ``old_port`` and it accepts
        writes; returns its address."""
        found: list[tuple[str, int]] = []

        def promoted() -> bool:
            addr = self.master_address()
            if addr is None or addr[1] == old_port:
                return False
            if b"role:master" not in _command(addr[1], "INFO", "replication"):
                return False
            found.append(addr)
            return True

        self._until(promoted, "the sentinels to promote the replica", timeout)
        return found[-1]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL does not block
                proc.wait(10)
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
