"""ghz runs: one call, fixed concurrency or a load schedule; summary + per-second timeline from ghz's
per-call details (its own percentiles count OK calls only; ours are computed the same way)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .common import ROOT


def ghz_bin() -> str:
    found = os.environ.get("INPLAY_GHZ_BIN") or str(Path.home() / ".cache" / "inplay" / "bin" / "ghz")
    if not Path(found).exists():
        raise SystemExit(f"ghz not found at {found} (./dev up builds it; INPLAY_GHZ_BIN overrides)")
    return found


def write_protoset(path: Path) -> Path:
    """A FileDescriptorSet of the bet, wallet and health services, from the generated modules.

    The server has reflection, but Python's reflection service does not resolve method-level symbols
    (ghz asks for ``pkg.Service.Method``), so ghz reads the descriptors from this file."""
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2

    from inplay.bets.v1 import bets_pb2
    from inplay.wallet.v1 import wallet_pb2

    seen: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd: Any) -> None:
        if fd.name in seen:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        seen[fd.name] = proto

    for module in (bets_pb2, wallet_pb2, health_pb2):
        add(module.DESCRIPTOR)
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=list(seen.values())).SerializeToString())
    return path


@dataclass
class Load:
    """Closed loop (``rps=0``: every worker calls back to back) or a rate, optionally stepped: ``rps`` for
    the first ``step_after_s`` seconds, then ``rps_end`` (the kickoff spike)."""

    concurrency: int
    duration_s: int
    rps: int = 0
    rps_end: int = 0
    step_after_s: int = 0
    connections: int = 0

    def args(self) -> list[str]:
        out = [
            "--concurrency",
            str(self.concurrency),
            "--connections",
            str(self.connections or min(self.concurrency, 10)),
            "--duration",
            f"{self.duration_s}s",
            # Wait for the calls in flight when the duration ends instead of cancelling them (which ghz
            # would report as Unavailable errors that the server never produced).
            "--duration-stop",
            "wait",
        ]
        if self.rps_end and self.step_after_s:
            out += [
                "--load-schedule",
                "step",
                "--load-start",
                str(self.rps),
                "--load-step",
                str(self.rps_end - self.rps),
                "--load-end",
                str(self.rps_end),
                "--load-step-duration",
                f"{self.step_after_s}s",
            ]
        elif self.rps:
            out += ["--rps", str(self.rps)]
        return out

    def offered(self, second: int) -> int:
        """Offered calls/s at ``second`` (0 = closed loop)."""
        if self.rps_end and self.step_after_s and second >= self.step_after_s:
            return self.rps_end
        return self.rps


@dataclass
class GhzResult:
    name: str
    call: str
    load: Load
    summary: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "call": self.call,
            "load": vars(self.load),
            "summary": self.summary,
            "timeline": self.timeline,
        }


def _ts(text: str) -> float:
    # ghz prints RFC 3339 with nanoseconds; Python parses microseconds.
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_ghz(
    name: str,
    call: str,
    target: str,
    protoset: Path,
    data: Any,
    metadata: dict[str, str],
    load: Load,
    out_dir: Path,
) -> GhzResult:
    """Runs ghz, keeps its raw JSON (gzipped) in ``out_dir`` and returns the summary + timeline."""
    data_file = out_dir / f"ghz-{name}.data.json"
    data_file.write_text(json.dumps(data))
    cmd = [
        ghz_bin(),
        "--insecure",
        "--protoset",
        str(protoset),
        "--call",
        call,
        "--data-file",
        str(data_file),
        "--metadata",
        json.dumps(metadata),
        "--timeout",
        "20s",
        "--format",
        "json",
        *load.args(),
        target,
    ]
    (out_dir / f"ghz-{name}.cmd").write_text(" ".join(cmd) + "\n")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=load.duration_s + 180)
    if not proc.stdout.strip():
        raise RuntimeError(f"ghz {name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with gzip.open(out_dir / f"ghz-{name}.json.gz", "wt") as f:
        f.write(proc.stdout)
    return summarize(name, call, load, json.loads(proc.stdout))


def details_of(out_dir: Path, name: str) -> tuple[list[dict[str, Any]], float]:
    """The per-call details that :func:`run_ghz` kept for run ``name``, and the first call's start time."""
    with gzip.open(out_dir / f"ghz-{name}.json.gz", "rt") as f:
        details: list[dict[str, Any]] = json.loads(f.read()).get("details") or []
    return details, min((_ts(d["timestamp"]) for d in details), default=0.0)


def in_window(
    details: list[dict[str, Any]], t0: float, lo: float, hi: float
) -> tuple[list[dict[str, Any]], list[float]]:
    """The calls started in [t0 + lo, t0 + hi), and the sorted latencies (ms) of the OK ones."""
    calls = [d for d in details if lo <= _ts(d["timestamp"]) - t0 < hi]
    return calls, sorted(d["latency"] / 1e6 for d in calls if d["status"] == "OK")


def summarize(name: str, call: str, load: Load, report: dict[str, Any]) -> GhzResult:
    details = report.get("details") or []
    wall_s = float(report.get("total", 0)) / 1e9 or float(load.duration_s)
    ok = sorted(d["latency"] / 1e6 for d in details if d["status"] == "OK")
    statuses: dict[str, int] = dict(report.get("statusCodeDistribution") or {})
    errors = dict(sorted((report.get("errorDistribution") or {}).items(), key=lambda kv: -kv[1])[:5])
    summary = {
        "calls": int(report.get("count", len(details))),
        "ok": len(ok),
        "wall_s": round(wall_s, 2),
        "calls_per_s": round(len(details) / wall_s, 1) if wall_s else 0.0,
        "ok_per_s": round(len(ok) / wall_s, 1) if wall_s else 0.0,
        "p50_ms": round(percentile(ok, 0.50), 2),
        "p95_ms": round(percentile(ok, 0.95), 2),
        "p99_ms": round(percentile(ok, 0.99), 2),
        "max_ms": round(ok[-1], 2) if ok else 0.0,
        "status": statuses,
        "errors": errors,
    }
    timeline: list[dict[str, Any]] = []
    if details:
        t0 = min(_ts(d["timestamp"]) for d in details)
        by_second: dict[int, list[dict[str, Any]]] = {}
        for d in details:
            by_second.setdefault(int(_ts(d["timestamp"]) - t0), []).append(d)
        # Whole seconds of the schedule only: the calls that were in flight when the duration ended (ghz
        # waits for them) are in the summary, not in a last, partial second.
        for second in range(min(max(by_second) + 1, load.duration_s)):
            calls = by_second.get(second, [])
            lat = sorted(d["latency"] / 1e6 for d in calls if d["status"] == "OK")
            timeline.append(
                {
                    "t": second,
                    "started": len(calls),
                    "ok": len(lat),
                    "errors": len(calls) - len(lat),
                    "offered": load.offered(second),
                    "p50_ms": round(percentile(lat, 0.5), 2),
                    "p99_ms": round(percentile(lat, 0.99), 2),
                }
            )
    return GhzResult(name, call, load, summary, timeline)
