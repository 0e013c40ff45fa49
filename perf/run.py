"""One entry point for the perf scenarios, each run beside its same-run baselines.

    set -a; . .stack/env; set +a
    .venv/bin/python perf/run.py [steady kickoff settlement odds envoy core] [--duration 15] [--bets 50000]

Scenarios (each script measures its own baselines in the same run):
  steady      ghz PlaceBet (unary, group-committed) and PlaceBets (batch) at fixed concurrency;
              baselines: grpc.health.v1 Check on the same server, raw Cassandra inserts of the same rows
  kickoff     ghz PlaceBet ramping x10 (50 -> 500 calls/s in 10 s), same baselines
  settlement  N bets on one event settled by a run; baseline: raw driver reads + writes of the same rows
  odds        feed ingest updates/s and StreamOdds fan-out p50/p99; baselines: raw Redis / raw Kafka
  envoy       added latency of Envoy per call (direct vs through Envoy, alternating rounds)
  core        Rust core vs the pure-Python reference (batch validation, settlement evaluation)
Writes perf/results/<timestamp>/{report.json, report.md, latency.png}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"
SCENARIOS = ["steady", "kickoff", "settlement", "odds", "envoy", "core"]


def run(cmd: list[str], timeout: int) -> tuple[int, str]:
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    print(f"  {' '.join(cmd[1:3])}: exit {proc.returncode} in {time.time() - started:.0f} s")
    return proc.returncode, proc.stdout[-4000:] + proc.stderr[-2000:]


def scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    py = sys.executable
    if name in ("steady", "kickoff"):
        cmd = [py, "perf/bench_bets.py", "--scenario", name, "--duration", str(args.duration)]
        code, out = run(cmd, 900)
        file = RESULTS / f"bets-{name}.json"
    elif name == "settlement":
        code, out = run([py, "perf/bench_settlement.py", "--bets", str(args.bets)], 1800)
        file = RESULTS / "settlement.json"
    elif name == "odds":
        code, out = run([py, "perf/bench_odds.py"], 900)
        file = RESULTS / "odds.json"
    elif name == "envoy":
        code, out = run([py, "perf/bench_envoy.py"], 900)
        file = RESULTS / "envoy.json"
    else:
        code, out = run([py, "perf/bench_core.py"], 600)
        file = RESULTS / "core.json"
    result: dict[str, Any] = {"exit": code}
    if code == 0 and file.exists():
        result["data"] = json.loads(file.read_text())
    else:
        result["output"] = out
    return result


def latency_rows(report: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    rows = []
    for name in ("steady", "kickoff"):
        data = report.get(name, {}).get("data") or {}
        for key, value in data.items():
            if isinstance(value, dict) and "p50_ms" in value:
                rows.append((f"{name}:{key}", value["p50_ms"], value["p95_ms"], value["p99_ms"]))
    return rows


def plot(rows: list[tuple[str, float, float, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    labels = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 2))
    for i, (_label, p50, p95, p99) in enumerate(rows):
        ax.barh(i, p99, color="#f4a261", label="p99" if i == 0 else None)
        ax.barh(i, p95, color="#e9c46a", label="p95" if i == 0 else None)
        ax.barh(i, p50, color="#2a9d8f", label="p50" if i == 0 else None)
        ax.text(p99, i, f" {p50:.0f}/{p95:.0f}/{p99:.0f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("latency (ms), p50 / p95 / p99")
    ax.set_title("Inplay perf: same-run baselines vs bet placement")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Inplay perf report ({report['started']})", "", f"load average at start: {report['loadavg']}", ""]
    for name, result in report.items():
        if not isinstance(result, dict) or "exit" not in result:
            continue
        lines.append(f"## {name} (exit {result['exit']})")
        data = result.get("data")
        if name in ("steady", "kickoff") and data:
            lines.append("| run | calls/s | accepted bets/s | p50 ms | p95 ms | p99 ms | status codes |")
            lines.append("| --- | --- | --- | --- | --- | --- | --- |")
            for key, value in data.items():
                if isinstance(value, dict) and "p50_ms" in value:
                    lines.append(
                        f"| {key} | {value['rps']} | {value.get('bets_per_s', '-')} | {value['p50_ms']} "
                        f"| {value['p95_ms']} | {value['p99_ms']} | {value['status']} |"
                    )
            raw = data.get("baseline_raw_cassandra_inserts", {})
            if raw:
                lines.append(f"| baseline_raw_cassandra_inserts | - | {raw['bets_per_s']} | - | - | - | - |")
        elif data is not None:
            lines += ["```json", json.dumps(data, indent=2)[:3000], "```"]
        else:
            lines += ["```", str(result.get("output", ""))[-1500:], "```"]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run Inplay's perf scenarios with same-run baselines")
    parser.add_argument("scenarios", nargs="*", default=["steady", "kickoff"], choices=SCENARIOS)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--bets", type=int, default=50_000, help="settlement scenario size")
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": stamp, "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    for name in args.scenarios or ["steady", "kickoff"]:
        print(f"scenario {name}")
        report[name] = scenario(name, args)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(markdown(report))
    plot(latency_rows(report), out_dir / "latency.png")
    latest = RESULTS / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink() if latest.is_symlink() else shutil.rmtree(latest)
    latest.symlink_to(out_dir.name)
    print(f"report: {out_dir / 'report.md'}")
    if any(isinstance(v, dict) and v.get("exit") for v in report.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
