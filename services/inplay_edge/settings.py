"""Edge settings (``INPLAY_EDGE_*``, read through inplay.config's registry) and the checkout root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inplay.config import setting_bool, setting_int, setting_str

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
    env = setting_str("INPLAY_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "gateway" / "envoy.yaml").is_file():
        return here
    return Path.cwd().resolve()


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
    # Admission control at the edge (docs/reliability.md): bet calls in flight to the upstream cluster (all its
    # hosts together); more are answered RESOURCE_EXHAUSTED + RetryInfo(bet_retry_after_ms) by Envoy itself.
    bet_max_in_flight: int = 256
    bet_retry_after_ms: int = 1000
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
        port = setting_int("INPLAY_EDGE_PORT", 18080)
        default_origins = f"http://localhost:{port},http://127.0.0.1:{port},http://localhost:5173"
        upstream = setting_str("INPLAY_EDGE_UPSTREAM", f"127.0.0.1:{setting_int('INPLAY_GRPC_PORT', 50051)}")
        host, _, up_port = upstream.rpartition(":")
        return cls(
            listen_address=setting_str("INPLAY_EDGE_ADDRESS", "127.0.0.1"),
            listen_port=port,
            admin_port=setting_int("INPLAY_EDGE_ADMIN_PORT", 19901),
            upstream_host=host or "127.0.0.1",
            upstream_port=int(up_port),
            web_origins=tuple(
                o.strip() for o in setting_str("INPLAY_EDGE_WEB_ORIGINS", default_origins).split(",") if o.strip()
            ),
            issuer=setting_str("INPLAY_JWT_ISSUER", DEFAULT_ISSUER),
            audience=setting_str("INPLAY_JWT_AUDIENCE", DEFAULT_AUDIENCE),
            jwt_max_lifetime_s=setting_int("INPLAY_EDGE_JWT_MAX_LIFETIME_S", 86_400),
            jwks_file=setting_str("INPLAY_EDGE_JWKS_FILE", ""),
            keys_dir=Path(setting_str("INPLAY_EDGE_KEYS_DIR", str(root / ".stack" / "keys"))),
            bet_user_rate=setting_int("INPLAY_EDGE_BET_RATE_PER_USER", 20),
            bet_user_burst=setting_int(
                "INPLAY_EDGE_BET_BURST_PER_USER", setting_int("INPLAY_EDGE_BET_RATE_PER_USER", 20)
            ),
            bet_global_rate=setting_int("INPLAY_EDGE_BET_RATE_GLOBAL", 2000),
            bet_global_burst=setting_int(
                "INPLAY_EDGE_BET_BURST_GLOBAL", 2 * setting_int("INPLAY_EDGE_BET_RATE_GLOBAL", 2000)
            ),
            bet_max_users=setting_int("INPLAY_EDGE_BET_MAX_USERS", 100_000),
            bet_max_in_flight=setting_int("INPLAY_EDGE_BET_MAX_IN_FLIGHT"),
            bet_retry_after_ms=setting_int("INPLAY_EDGE_BET_RETRY_AFTER_MS"),
            stream_idle_timeout_s=setting_int("INPLAY_EDGE_STREAM_IDLE_TIMEOUT_S", 300),
            health_interval_s=setting_int("INPLAY_EDGE_HEALTH_INTERVAL_S", 5),
            max_connections=setting_int("INPLAY_EDGE_MAX_CONNECTIONS", 50_000),
            access_log=setting_str("INPLAY_EDGE_ACCESS_LOG", "/dev/stdout"),
            web_dist=Path(setting_str("INPLAY_EDGE_WEB_DIST", str(root / "gateway" / "web" / "dist"))),
            dev_tokens=setting_bool("INPLAY_EDGE_DEV_TOKENS"),
            demo_event_id=setting_str("INPLAY_EDGE_DEMO_EVENT", ""),
        )
