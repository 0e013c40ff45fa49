"""k8s/: kustomize renders the base, the overlays and the monitoring rules; every document validates offline
against the Kubernetes JSON schemas (``kubernetes-validate``, which ships them); the operational invariants
hold; the Envoy ConfigMap is in sync with the gateway and valid for Envoy. An invalid manifest fails
(negative cases below, including one that goes through the same kustomize build)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from inplay.adapters.migrations import replication_map

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CACHE = Path(os.environ.get("INPLAY_CACHE") or Path.home() / ".cache" / "inplay")
KUSTOMIZE_VERSION = "v5.7.1"
K8S_VERSION = "1.33.0"  # a schema version kubernetes-validate ships (offline)
TARGETS = ["base", "overlays/dev", "overlays/prod", "monitoring"]
# services/inplay/app.py: the gRPC roles INPLAY_SERVICES selects from.
ROLES = {"bets", "wallet", "odds", "feed", "admin", "settlement"}

Docs = list[dict[str, Any]]
Build = Callable[[Path], Docs]


@pytest.fixture(scope="module")
def build() -> Build:
    """``kustomize build`` (PATH, then the cached binary), else ``kubectl kustomize``, else installs the pinned
    kustomize with ``go install`` into ${INPLAY_CACHE:-~/.cache/inplay}/bin (Go module proxy)."""
    cached = CACHE / "bin" / "kustomize"
    found = shutil.which("kustomize") or (str(cached) if cached.exists() else None)
    cmd: list[str]
    if found:
        cmd = [found, "build"]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize"]
    else:
        cached.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["go", "install", f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"],
            env={**os.environ, "GOBIN": str(cached.parent)},
            check=True,
            timeout=900,
        )
        cmd = [str(cached), "build"]

    def run(path: Path) -> Docs:
        out = subprocess.run([*cmd, str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    return run


def validate(doc: dict[str, Any]) -> None:
    """Schema validation; strict: unknown fields are errors too."""
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def index(docs: Docs) -> dict[str, dict[str, dict[str, Any]]]:
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return by_kind


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def config_data(docs: Docs) -> dict[str, str]:
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("inplay-config")]
    assert len(cms) == 1
    return dict(cms[0]["data"])


# ---------------------------------------------------------------------------------------------- validity


@pytest.mark.parametrize("target", TARGETS)
def test_every_manifest_is_valid(build: Build, target: str) -> None:
    docs = build(K8S / target)
    assert docs
    for doc in docs:
        validate(doc)
    if target != "monitoring":
        kinds = {d["kind"] for d in docs}
        assert {
            "Deployment",
            "StatefulSet",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "ConfigMap",
            "Namespace",
        } <= kinds


def test_invalid_manifests_are_rejected() -> None:
    wrong_type = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "three", "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type)
    unknown_field = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(unknown_field)
    missing_required = {  # a container needs a name
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"containers": [{"image": "inplay:0.1.0"}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(missing_required)


@pytest.mark.parametrize(
    "patch",
    [
        # a wrong type, through kustomize
        [{"op": "replace", "path": "/spec/replicas", "value": "four"}],
        # a misspelt probe field (what a hand edit of services.yaml could do)
        [{"op": "add", "path": "/spec/template/spec/containers/0/readinessProbe/grpcc", "value": {"port": 1}}],
    ],
    ids=["wrong-type", "unknown-field"],
)
def test_a_broken_overlay_fails_the_same_pipeline(build: Build, tmp_path: Path, patch: list[dict[str, Any]]) -> None:
    overlay = tmp_path / "broken"
    overlay.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "base", overlay)],
        "patches": [{"target": {"kind": "Deployment", "name": "bet-api"}, "patch": yaml.safe_dump(patch)}],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    docs = build(overlay)
    broken = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "bet-api")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


# ------------------------------------------------------------------------------------------- invariants


def test_service_roles(build: Build) -> None:
    """One Deployment per role, every gRPC role served exactly once, native gRPC probes, hardened pods."""
    docs = build(K8S / "base")
    by_kind = index(docs)
    deployments = by_kind["Deployment"]
    tier = {n: d["metadata"]["labels"].get("inplay.dev/tier") for n, d in deployments.items()}
    services = sorted(n for n, t in tier.items() if t == "service")
    assert services == ["admin-api", "bet-api", "feed-ingest", "odds-api", "settlement"]
    assert tier["settlement-worker"] == "worker" and tier["changelog-writer"] == "worker" and tier["envoy"] == "edge"
    served: list[str] = []
    for name in services:
        (container,) = containers(deployments[name])
        assert container["command"][:3] == ["python", "-m", "inplay.server"], name
        roles = env_of(container)["INPLAY_SERVICES"].split(",")
        assert set(roles) <= ROLES, name
        served += roles
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == 50051, (name, probe)
        assert env_of(container)["INPLAY_METRICS_PORT"] == "9100", name
        svc = by_kind["Service"][name]["spec"]
        assert svc["clusterIP"] == "None" and svc["ports"][0]["port"] == 50051, name  # headless for Envoy
        pdb = by_kind["PodDisruptionBudget"][name]["spec"]
        assert pdb["selector"]["matchLabels"] == deployments[name]["spec"]["selector"]["matchLabels"], name
    assert sorted(served) == sorted(ROLES), "each gRPC service in exactly one Deployment"
    worker = containers(deployments["settlement-worker"])[0]
    assert worker["command"] == ["python", "-m", "inplay.worker", "serve"]
    assert "settlement-worker" in by_kind["PodDisruptionBudget"]
    # the feed's change log is written from Kafka by its own pods, off the ingest hot path
    writer = containers(deployments["changelog-writer"])[0]
    assert writer["command"] == ["python", "-m", "inplay.worker", "changelog"]
    assert "changelog-writer" in by_kind["PodDisruptionBudget"]
    (ingest,) = containers(deployments["feed-ingest"])
    assert env_of(ingest)["INPLAY_FEED_CHANGE_LOG"] == "kafka"


def test_every_pod_is_sized_and_hardened(build: Build) -> None:
    docs = build(K8S / "base")
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        name = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        for c in pod["containers"]:
            assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"], name
            assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"], name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        if doc["kind"] == "Deployment":  # our image and Envoy: read-only root, no API token
            assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in pod["containers"]), name
            assert pod["automountServiceAccountToken"] is False, name


def test_autoscaling_on_cpu_and_bets_per_second(build: Build) -> None:
    by_kind = index(build(K8S / "base"))
    hpas = by_kind["HorizontalPodAutoscaler"]
    assert {"bet-api", "odds-api", "admin-api", "feed-ingest", "envoy"} <= set(hpas)
    for hpa in hpas.values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in by_kind["Deployment"]
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    (pods,) = [m for m in hpas["bet-api"]["spec"]["metrics"] if m["type"] == "Pods"]
    # The metric the HPA asks for is the one the prometheus-adapter rule (k8s/monitoring) produces.
    adapter = next(d for d in build(K8S / "monitoring") if d["kind"] == "ConfigMap")
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert pods["pods"]["metric"]["name"] in {r["name"]["as"] for r in rules}
    assert any("inplay_bets_accepted_total" in r["seriesQuery"] for r in rules)


def test_data_engines_replication(build: Build) -> None:
    docs = build(K8S / "base")
    by_kind = index(docs)
    sts = by_kind["StatefulSet"]
    for name in ("cassandra", "kafka"):
        assert sts[name]["spec"]["replicas"] == 3, name
        anti = sts[name]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
        assert by_kind["Service"][name]["spec"]["clusterIP"] == "None", name
    config = config_data(docs)
    assert config["INPLAY_CASSANDRA_CONSISTENCY"] == "LOCAL_QUORUM"
    assert replication_map(config["INPLAY_CASSANDRA_REPLICATION"]) == ("{'class': 'NetworkTopologyStrategy', 'dc1': 3}")
    cassandra_env = env_of(containers(sts["cassandra"])[0])
    assert cassandra_env["CASSANDRA_DC"] == config["INPLAY_CASSANDRA_DC"] == "dc1"
    assert len(config["INPLAY_CASSANDRA_HOSTS"].split(",")) == 3
    kafka = env_of(containers(sts["kafka"])[0])
    assert kafka["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and kafka["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
    assert kafka["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    assert len(kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == 3
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16  # KRaft wants a UUID
    redis_args = " ".join(containers(sts["redis"])[0]["args"])
    assert "--appendonly yes" in redis_args and "--replicaof redis-0.redis" in redis_args
    assert sts["redis"]["spec"]["replicas"] == 2


def test_network_policies(build: Build) -> None:
    policies = index(build(K8S / "base"))["NetworkPolicy"]
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    services = policies["services-from-envoy-only"]["spec"]
    assert services["podSelector"]["matchLabels"] == {"inplay.dev/tier": "service"}
    grpc_rule = services["ingress"][0]
    assert grpc_rule["from"] == [{"podSelector": {"matchLabels": {"inplay.dev/tier": "edge"}}}]
    assert grpc_rule["ports"] == [{"port": 50051, "protocol": "TCP"}]
    assert all("namespaceSelector" in f for rule in services["ingress"][1:] for f in rule["from"])  # Prometheus
    data = policies["data-from-services-only"]["spec"]
    allowed = {f["podSelector"]["matchLabels"]["inplay.dev/tier"] for f in data["ingress"][0]["from"]}
    assert allowed == {"service", "worker", "data"}


def test_references_resolve(build: Build) -> None:
    """ConfigMaps (hash-suffixed by the generators) and Envoy's upstream clusters point at real objects."""
    docs = build(K8S / "base")
    by_kind = index(docs)
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        refs = [e["configMapRef"]["name"] for c in pod["containers"] for e in c.get("envFrom", [])]
        refs += [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
        for ref in refs:
            assert ref in by_kind["ConfigMap"], (doc["metadata"]["name"], ref)
    envoy_cm = next(cm for name, cm in by_kind["ConfigMap"].items() if name.startswith("envoy-config"))
    envoy = yaml.safe_load(envoy_cm["data"]["envoy.yaml"])
    listeners = {lst["name"]: lst for lst in envoy["static_resources"]["listeners"]}
    edge_port = listeners["inplay_edge"]["address"]["socket_address"]["port_value"]
    envoy_deploy = containers(by_kind["Deployment"]["envoy"])[0]
    ports = {p["containerPort"] for p in envoy_deploy["ports"]}
    assert {edge_port, listeners["probes"]["address"]["socket_address"]["port_value"]} == ports
    assert (
        envoy_deploy["readinessProbe"]["httpGet"]["port"]
        == listeners["probes"]["address"]["socket_address"]["port_value"]
    )
    assert envoy["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    lb = by_kind["Service"]["envoy"]["spec"]
    assert lb["type"] == "LoadBalancer" and lb["ports"][0]["targetPort"] == edge_port
    upstreams = {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        for c in envoy["static_resources"]["clusters"]
        if c["name"] != "envoy_admin"
    }
    for cluster, address in upstreams.items():
        svc = by_kind["Service"][address["address"]]
        assert svc["spec"]["clusterIP"] == "None", cluster
        assert address["port_value"] in {p["port"] for p in svc["spec"]["ports"]}, cluster


def test_dev_overlay_fits_one_node(build: Build) -> None:
    docs = build(K8S / "overlays/dev")
    by_kind = index(docs)
    assert all(d["metadata"].get("namespace", "inplay-dev") == "inplay-dev" for d in docs)
    assert {d["spec"]["replicas"] for d in by_kind["Deployment"].values()} == {1}
    assert {d["spec"]["replicas"] for d in by_kind["StatefulSet"].values()} == {1}
    config = config_data(docs)
    assert config["INPLAY_CASSANDRA_CONSISTENCY"] == "LOCAL_ONE" and config["INPLAY_CASSANDRA_HOSTS"].count(",") == 0
    kafka = env_of(containers(by_kind["StatefulSet"]["kafka"])[0])
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "0@kafka-0.kafka:9093"
    assert kafka["KAFKA_MIN_INSYNC_REPLICAS"] == "1" and kafka["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "1"


# ---------------------------------------------------------------------------------------------- envoy


def test_envoy_configmap_is_rendered_from_the_gateway_and_valid(stack_env: dict[str, str]) -> None:
    check = subprocess.run(
        [sys.executable, str(K8S / "render_envoy.py"), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert check.returncode == 0, check.stderr + check.stdout
    envoy = stack_env.get("INPLAY_ENVOY_BIN") or shutil.which("envoy")
    assert envoy, "envoy binary not installed (./dev up)"
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(K8S / "base" / "envoy" / "envoy.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
