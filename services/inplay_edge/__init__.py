"""The edge (Envoy) tooling: config rendering, dev JWT keys and tokens, the web bet slip build, running Envoy.

It lives outside the runtime package ``inplay`` (the wheel ships without it); only the demo entry point
imports it, to put Envoy in front of the embedded stack.

    python -m inplay_edge render --out FILE [--dev-tokens]   the Envoy config from gateway/envoy.yaml
    python -m inplay_edge keys                              dev ES256 key pair + JWKS under .stack/keys/
    python -m inplay_edge mint --sub alice [--roles operator] [--ttl 3600] [--aud inplay] [--expired]
    python -m inplay_edge web [--force]                     npm ci + codegen + esbuild -> gateway/web/dist
    python -m inplay_edge run [--dev-tokens] [--no-web]     render, start envoy, wait until ready

Settings come from ``INPLAY_*`` variables (``EdgeSettings.from_env``). The dev key pair is for local use
only: ``.stack/`` is gitignored, and a real deployment points ``INPLAY_EDGE_JWKS_FILE`` at its identity
provider's JWKS.

Modules: ``settings`` (EdgeSettings from ``INPLAY_EDGE_*``), ``keys`` (dev keys, JWKS, tokens), ``render``
(the Envoy config), ``web`` (the bet slip build), ``envoy`` (run and wait for Envoy; the demo's edge),
``__main__`` (the command line).
"""

from inplay_edge.envoy import (
    EdgeForDemo,
    envoy_binary,
    free_port,
    run,
    start_envoy,
    upstream_healthy,
    validate,
    wait_ready,
)
from inplay_edge.keys import SigningKey, ensure_keys, generate_signing_key, mint_token, public_jwk
from inplay_edge.render import dev_tokens_body, render, write_rendered
from inplay_edge.settings import DEMO_USERS, EdgeSettings, repo_root
from inplay_edge.web import build_web

__all__ = [
    "DEMO_USERS",
    "EdgeForDemo",
    "EdgeSettings",
    "SigningKey",
    "build_web",
    "dev_tokens_body",
    "ensure_keys",
    "envoy_binary",
    "free_port",
    "generate_signing_key",
    "mint_token",
    "public_jwk",
    "render",
    "repo_root",
    "run",
    "start_envoy",
    "upstream_healthy",
    "validate",
    "wait_ready",
    "write_rendered",
]
