"""python -m inplay_edge: the edge tooling's command line (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from inplay_edge.envoy import run
from inplay_edge.keys import ensure_keys, mint_token
from inplay_edge.render import write_rendered
from inplay_edge.settings import PRIVATE_KEY_FILE, EdgeSettings, repo_root
from inplay_edge.web import build_web

# ------------------------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inplay_edge", description="Inplay edge (Envoy) tooling")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_render = sub.add_parser("render", help="render the Envoy config")
    p_render.add_argument("--out", required=True, type=Path)
    p_render.add_argument("--dev-tokens", action="store_true", help="serve demo bettor tokens at /dev/tokens.json")
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
    p_run.add_argument("--background", action="store_true", help="return once ready (pid in .stack/envoy.pid)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = repo_root()
    settings = EdgeSettings.from_env(root)
    if getattr(args, "dev_tokens", False):
        settings = replace(settings, dev_tokens=True)
    if args.cmd == "render":
        print(write_rendered(settings, args.out))
    elif args.cmd == "keys":
        key = ensure_keys(settings.keys_dir)
        print(json.dumps(key.jwks, indent=2))
        print(f"private key: {settings.keys_dir / PRIVATE_KEY_FILE} (never commit it)", file=sys.stderr)
    elif args.cmd == "mint":
        roles = [r.strip() for r in args.roles.split(",")]
        audience, issuer = args.aud or settings.audience, args.iss or settings.issuer
        key = ensure_keys(settings.keys_dir)
        print(mint_token(key, args.sub, roles=roles, ttl_s=args.ttl, audience=audience, issuer=issuer,
                         expired=args.expired))  # fmt: skip
    elif args.cmd == "web":
        print(build_web(root, force=args.force))
    else:
        stack = root / ".stack"
        return run(settings, out=args.out or stack / "envoy.yaml", log_file=stack / "logs" / "envoy.log",
                   build=not args.no_web, foreground=not args.background, pid_file=stack / "envoy.pid")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
