"""The Envoy config rendered from gateway/envoy.yaml (a string.Template) for one EdgeSettings."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from string import Template
from typing import Any

from inplay_edge.keys import SigningKey, ensure_keys, mint_token, write_if_changed
from inplay_edge.settings import DEMO_USERS, EdgeSettings, repo_root

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
<p>The web bet slip is not built. Run <code>python -m inplay_edge web</code> and restart Envoy.</p>
"""


def _web_dir(settings: EdgeSettings) -> Path:
    dist = settings.web_dist
    if all((dist / name).is_file() for name in WEB_FILES.values()):
        return dist.resolve()
    fallback = settings.keys_dir.parent / "web-fallback"
    fallback.mkdir(parents=True, exist_ok=True)
    write_if_changed(fallback / "index.html", _FALLBACK_INDEX.encode())
    write_if_changed(fallback / "app.js", b"")
    write_if_changed(fallback / "app.css", b"")
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


def shed_status_bin(retry_after_ms: int) -> str:
    """grpc-status-details-bin of the edge's admission answer: google.rpc.Status (RESOURCE_EXHAUSTED) with
    ErrorInfo(OVERLOADED, shed_by=edge) and RetryInfo, the same shape the service's own admission answers."""
    import base64

    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    info = error_details_pb2.ErrorInfo(
        reason="OVERLOADED",
        domain="inplay.dev",
        metadata={"shed_by": "edge", "retry_after_ms": str(retry_after_ms)},
    )
    delay = duration_pb2.Duration(seconds=retry_after_ms // 1000, nanos=(retry_after_ms % 1000) * 1_000_000)
    details = []
    for message in (info, error_details_pb2.RetryInfo(retry_delay=delay)):
        packed = any_pb2.Any()
        packed.Pack(message, deterministic=True)  # a map field: the rendered file must not vary per run
        details.append(packed)
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=SHED_MESSAGE, details=details)
    return base64.b64encode(status.SerializeToString(deterministic=True)).decode().rstrip("=")


SHED_MESSAGE = "overloaded: nothing was done; retry with the same idempotency key after the retry delay"


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
        "BET_MAX_IN_FLIGHT": str(settings.bet_max_in_flight),
        "BET_RETRY_AFTER_MS": str(settings.bet_retry_after_ms),
        "BET_SHED_MESSAGE": _yaml_str(SHED_MESSAGE),
        "BET_SHED_STATUS_BIN": _yaml_str(shed_status_bin(settings.bet_retry_after_ms)),
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
