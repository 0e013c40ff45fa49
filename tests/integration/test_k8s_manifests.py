"""k8s/: kustomize renders the base and the dev overlay; every document validates (offline) against the
Kubernetes JSON schemas; the operational invariants hold; the Envoy ConfigMap is in sync and valid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("INPLAY_CACHE", Path.home() / ".cache" / "inplay"))
KUSTOMIZE_VERSION = "v5.7.1"
K8S_VERSION = "1.33.0"


@pytest.fixture(scope="module")
def kustomize() -> str:
    found = shutil.which("kustomize")
    if found:
        return found
    binary = CACHE / "bin" / "kustomize"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["go", "install", f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"],
            env={**os.environ, "GOBIN": str(binary.parent)},
            check=True,
            timeout=900,
        )
    return str(binary)


def build(kustomize: str, overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([kustomize, "build", str(ROOT / "k8s" / overlay)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["base", "overlays/dev"])
def test_every_manifest_is_valid(kustomize: str, overlay: str) -> None:
    docs = build(kustomize, overlay)
    assert len(docs) > 20
    for doc in docs:
        validate(doc)
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ConfigMap",
    } <= kinds


def test_invalid_manifests_are_rejected() -> None:
    bad_field = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "three", "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad_field)
    unknown_field = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(unknown_field)


def test_operational_invariants(kustomize: str) -> None:
    docs = build(kustomize, "base")
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    services = [
        n for n, d in by_kind["Deployment"].items() if d["metadata"]["labels"].get("inplay.dev/tier") == "service"
    ]
    assert sorted(services) == ["bet-api", "feed-ingest", "odds-api", "settlement"]
    for name in services:
        container = by_kind["Deployment"][name]["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["grpc"]["port"] == 50051, name
        assert container["livenessProbe"]["grpc"]["port"] == 50051, name
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        assert name in by_kind["PodDisruptionBudget"], name
    bet_hpa = by_kind["HorizontalPodAutoscaler"]["bet-api"]["spec"]["metrics"]
    assert {m["type"] for m in bet_hpa} == {"Resource", "Pods"}
    assert by_kind["Service"]["envoy"]["spec"]["type"] == "LoadBalancer"
    assert by_kind["StatefulSet"]["cassandra"]["spec"]["replicas"] == 3
    kafka_env = {
        e["name"]: e.get("value")
        for e in by_kind["StatefulSet"]["kafka"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert kafka_env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and kafka_env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("inplay-config"))
    assert config["data"]["INPLAY_CASSANDRA_CONSISTENCY"] == "LOCAL_QUORUM"
    assert "'dc1': 3" in config["data"]["INPLAY_CASSANDRA_REPLICATION"]
    policies = by_kind["NetworkPolicy"]
    services_ingress = policies["services-from-envoy-only"]["spec"]["ingress"][0]["from"]
    assert services_ingress == [{"podSelector": {"matchLabels": {"inplay.dev/tier": "edge"}}}]


def test_envoy_configmap_is_rendered_from_the_gateway_and_valid(stack_env: dict[str, str]) -> None:
    subprocess.run([sys.executable, str(ROOT / "k8s" / "render_envoy.py"), "--check"], check=True)
    envoy = stack_env.get("INPLAY_ENVOY_BIN") or shutil.which("envoy")
    assert envoy, "envoy binary not installed (./dev up envoy)"
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(ROOT / "k8s" / "base" / "envoy" / "envoy.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
