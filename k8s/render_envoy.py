"""Renders k8s/base/envoy/envoy.yaml from the gateway template (the one source of the edge's filter chain).

    .venv/bin/python k8s/render_envoy.py          # rewrite the file
    .venv/bin/python k8s/render_envoy.py --check  # exit 1 if the committed file is out of date (CI)

Differences from the single-process dev edge: Envoy listens on 0.0.0.0:8080 in its pod; each gRPC service
routes to its own headless Kubernetes Service (STRICT_DNS cluster per role: every ready pod, health-checked
with grpc.health.v1); the admin interface stays on 127.0.0.1:9901 and a read-only listener on :9902 serves
only /ready and /stats/prometheus (kubelet probes, Prometheus);
the issuer's public keys come from k8s/base/envoy/jwks.example.json (replace with your issuer's JWKS); the
browser bet slip's static files are not served by Envoy here (static hosting / CDN).
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "k8s" / "base" / "envoy" / "envoy.yaml"
JWKS = ROOT / "k8s" / "base" / "envoy" / "jwks.example.json"

# gRPC service -> Kubernetes Service (deployment role) that serves it.
ROUTES = {
    "inplay.bets.v1.BetService": "bet-api",
    "inplay.wallet.v1.WalletService": "admin-api",
    "inplay.odds.v1.OddsService": "odds-api",
    "inplay.feed.v1.FeedService": "feed-ingest",
    "inplay.admin.v1.AdminService": "admin-api",
    "inplay.settlement.v1.SettlementService": "settlement",
}
DEFAULT_ROLE = "bet-api"  # health and reflection
PROBE_PORT = 9902


def role_of(match: dict[str, Any]) -> str:
    text = str(match.get("prefix") or match.get("path") or match.get("safe_regex", {}).get("regex", ""))
    text = text.replace("\\.", ".")
    for service, role in ROUTES.items():
        if service in text:
            return role
    return DEFAULT_ROLE


def drop_static_pages(node: Any) -> None:
    """In the cluster the browser bet slip is static hosting's job (CDN), not Envoy's: drop the dev edge's
    direct_response routes that serve files from the repository checkout."""
    if isinstance(node, dict):
        routes = node.get("routes")
        if isinstance(routes, list):
            node["routes"] = [
                r for r in routes if not (isinstance(r, dict) and "filename" in str(r.get("direct_response", "")))
            ]
        for value in node.values():
            drop_static_pages(value)
    elif isinstance(node, list):
        for value in node:
            drop_static_pages(value)


def add_probe_listener(config: dict[str, Any]) -> None:
    """A plain HTTP listener on 0.0.0.0:9902 forwarding GET /ready and /stats/prometheus to the admin
    interface (which stays on 127.0.0.1: its other endpoints change state)."""
    admin = config["admin"]["address"]["socket_address"]
    admin["address"] = "127.0.0.1"
    get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    routes: list[dict[str, Any]] = [
        {"match": {"path": path, "headers": get}, "route": {"cluster": "envoy_admin", "timeout": "2s"}}
        for path in ("/ready", "/stats/prometheus")
    ]
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "probes",
        "codec_type": "HTTP1",
        "route_config": {"virtual_hosts": [{"name": "probes", "domains": ["*"], "routes": routes}]},
        "http_filters": [router],
    }
    config["static_resources"]["listeners"].append(
        {
            "name": "probes",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": PROBE_PORT}},
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
            ],
        }
    )
    config["static_resources"]["clusters"].append(
        {
            "name": "envoy_admin",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "envoy_admin",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}}}
                        ]
                    }
                ],
            },
        }
    )


def render() -> str:
    sys.path.insert(0, str(ROOT / "services"))
    from inplay_edge import EdgeSettings
    from inplay_edge import render as render_edge

    # The dataclass defaults, not the environment: the output must not depend on who renders it.
    settings = replace(
        EdgeSettings(),
        keys_dir=ROOT / ".stack" / "keys",
        web_dist=ROOT / "gateway" / "web" / "dist",
        dev_tokens=False,
        listen_address="0.0.0.0",
        listen_port=8080,
        admin_port=9901,
        upstream_host="bet-api",
        upstream_port=50051,
        jwks_file=str(JWKS),
        web_origins=("https://app.inplay.example",),
        access_log="/dev/stdout",
        bet_global_rate=120_000,
        bet_global_burst=240_000,
    )
    config = yaml.safe_load(render_edge(settings))
    clusters = config["static_resources"]["clusters"]
    template = next(c for c in clusters if c["name"] == "inplay_grpc")
    clusters.remove(template)
    for role in sorted(set(ROUTES.values())):
        cluster = copy.deepcopy(template)
        name = role.replace("-", "_")
        cluster["name"] = name
        cluster["type"] = "STRICT_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
        cluster["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": role, "port_value": 50051}}}}
                    ]
                }
            ],
        }
        clusters.append(cluster)

    def rewrite(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "match" in node
                and isinstance(node.get("route"), dict)
                and node["route"].get("cluster") == "inplay_grpc"
            ):
                node["route"]["cluster"] = role_of(node["match"]).replace("-", "_")
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)

    rewrite(config)
    drop_static_pages(config)
    add_probe_listener(config)
    header = "# Generated by k8s/render_envoy.py from gateway/envoy.yaml; do not edit by hand.\n"
    return header + yaml.safe_dump(config, sort_keys=False, width=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT} is out of date: run .venv/bin/python k8s/render_envoy.py")
        return
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
