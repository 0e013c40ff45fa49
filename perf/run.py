"""One entry point for Inplay's perf scenarios, each run beside its same-run baselines.

    ./dev up && set -a && . .stack/env && set +a
    .venv/bin/python perf/run.py                                  # steady + kickoff, ~2 min
    .venv/bin/python perf/run.py steady kickoff settlement odds envoy core --duration 30

Scenarios:
  steady      ghz PlaceBet (unary, group-committed) at fixed concurrency, then PlaceBets (--batch slips per
              call); baselines: ghz grpc.health.v1 Health/Check on the same server, raw Cassandra writes of
              the same rows (perf/scenarios/cassandra_baseline.py)
  kickoff     ghz PlaceBet at --kickoff-base-rps for --kickoff-pre seconds, then x--kickoff-factor at once;
              baselines: Health/Check with the same schedule, raw Cassandra writes
  settlement  perf/bench_settlement.py --bets N (its own raw-driver baseline), if present
  odds        perf/bench_odds.py (raw Redis / Kafka baselines), if present
  envoy       perf/bench_envoy.py (direct vs through Envoy, alternating rounds), if present
  core        perf/bench_core.py (Rust core vs the pure-Python reference), if present

Writes perf/results/<timestamp>/{report.json, report.md, latency.png} (+ raw ghz JSON and server logs);
perf/results/latest points at the newest. See perf/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"
GHZ_SCENARIOS = ("steady", "kickoff")
SCRIPTS = {
    "settlement": "bench_settlement.py",
    "odds": "bench_odds.py",
    "envoy": "bench_envoy.py",
    "core": "bench_core.py",
}
SCENARIOS = [*GHZ_SCENARIOS, *SCRIPTS]

sys.path.insert(0, str(ROOT / "perf"))
sys.path.insert(0, str(ROOT / "services"))


def script_scenario(name: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Runs one of the other benchmarks (owned by their features) as a subprocess; its JSON is embedded."""
    script = ROOT / "perf" / SCRIPTS[name]
    if not script.exists():
        return {"skipped": f"{script.relative_to(ROOT)} not present"}
    out = out_dir / f"{name}.json"
    cmd = [sys.executable, str(script)]
    if name == "settlement":
        cmd += ["--bets", str(args.settlement_bets), "--out", str(out)]
    elif name in ("odds", "envoy"):
        cmd += ["--out", str(out)]
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    (out_dir / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if name == "core":  # writes perf/results/core.json, no --out
        produced = RESULTS / "core.json"
        if produced.exists() and produced.stat().st_mtime >= started:
            out.write_text(produced.read_text())
    result: dict[str, Any] = {"exit": proc.returncode, "seconds": round(time.time() - started, 1)}
    if proc.returncode == 0 and out.exists():
        result["data"] = json.loads(out.read_text())
    else:
        result["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    print(f"    exit {proc.returncode} in {result['seconds']} s", flush=True)
    return result


def fmt_status(status: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(status.items(), key=lambda kv: -kv[1])) or "-"


def ghz_markdown(name: str, data: dict[str, Any]) -> list[str]:
    lines = [
        "| run | role | OK calls/s | accepted bets/s | client p50 / p95 / p99 ms | server p50 / p99 ms "
        "| status codes (client) | rejected by reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in data["runs"]:
        s, srv, bets = run["summary"], run.get("server_latency", {}), run.get("bets", {})
        lines.append(
            f"| {run['name']} | {run['role']} | {s['ok_per_s']} | {bets.get('accepted_per_s', '-')} "
            f"| {s['p50_ms']} / {s['p95_ms']} / {s['p99_ms']} | {srv.get('p50_ms', '-')} / {srv.get('p99_ms', '-')} "
            f"| {fmt_status(s['status'])} | {fmt_status(bets.get('rejected', {}))} |"
        )
    raw = data.get("raw_cassandra", {})
    for key in ("raw_journal_batches", "raw_journal_batches_no_cas", "raw_logged_batches", "raw_rows_unbatched"):
        if key in raw:
            lines.append(
                f"| {key} ({raw['bets']} bets) | baseline | - | {raw[key]['bets_per_s']} | - | - "
                f"| failed {raw[key]['failed']} | - |"
            )
    runs = {r["name"]: r for r in data["runs"]}
    health = next(r for r in data["runs"] if r["role"] == "baseline")
    notes = []
    for run in data["runs"]:
        if run["role"] != "subject":
            continue
        if run["load"]["rps"]:  # a fixed offered rate: compare latency, not rate
            ratio = run["summary"]["p99_ms"] / max(health["summary"]["p99_ms"], 1e-9)
            notes.append(f"{run['name']}: client p99 {ratio:.0f}x the health check's at the same offered rate")
            continue
        ratio = run["summary"]["ok_per_s"] / max(health["summary"]["ok_per_s"], 1e-9)
        notes.append(f"{run['name']}: {ratio:.0%} of the health-check call rate")
        for key, what in (("raw_journal_batches", "raw journal-batch"), ("raw_logged_batches", "old per-bet")):
            if key in raw:
                bets_ratio = run["bets"]["accepted_per_s"] / max(raw[key]["bets_per_s"], 1e-9)
                notes.append(f"{run['name']}: {bets_ratio:.0%} of the {what} write rate")
        journal = run.get("journal") or {}
        if journal.get("batches"):
            commit = journal.get("commit") or {}
            notes.append(
                f"{run['name']}: {journal['batches']} journal batches, {journal['mean_batch']} slips each on "
                f"average, commit p50 {commit.get('p50_ms')} ms, p99 {commit.get('p99_ms')} ms"
            )
        split = run.get("cpu_us_per_bet") or {}
        if split.get("total"):
            roles = ", ".join(f"{r} {v}" for r, v in split.items() if r not in ("total", "bound_bets_per_s"))
            notes.append(
                f"{run['name']}: CPU per accepted bet (µs) {roles}; total {split['total']} -> this box's cores "
                f"bound the run at {split['bound_bets_per_s']} bets/s"
            )
        lag = run.get("projection_lag") or {}
        if lag:
            notes.append(f"{run['name']}: projection lag p50 {lag.get('p50_ms')} ms, p99 {lag.get('p99_ms')} ms")
    for run in runs.values():
        for phase, p in (run.get("phases") or {}).items():
            notes.append(
                f"{run['name']} {phase}: offered {p['offered_per_s']}/s, achieved {p['ok_per_s']}/s, "
                f"p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, errors {p['errors']}"
            )
    lines += ["", *[f"- {n}" for n in notes]]
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Inplay perf report {report['started']}",
        "",
        f"Host: {report['cpus']} CPUs, load average (1/5/15 min) at start {report['loadavg']}. Every figure sits "
        "beside a baseline measured in the same run on the same (shared) machine; compare with the baseline.",
        "",
    ]
    if any(n in GHZ_SCENARIOS and "runs" in r for n, r in report["scenarios"].items()):
        lines += ["![latency](latency.png)", ""]
    for name, result in report["scenarios"].items():
        lines.append(f"## {name}")
        if "error" in result:
            lines += ["", f"failed: `{result['error']}`", ""]
        elif name in GHZ_SCENARIOS:
            lines += ghz_markdown(name, result)
        elif "skipped" in result:
            lines.append(result["skipped"])
        elif "data" in result:
            lines += ["```json", json.dumps(result["data"], indent=2)[:4000], "```"]
        else:
            lines += [f"exit {result.get('exit')}", "```", str(result.get("output_tail", ""))[-1500:], "```"]
        lines.append("")
    return "\n".join(lines)


def plot(report: dict[str, Any], out: Path) -> None:
    """Per ghz scenario: latency per second (p50 solid, p99 dashed; OK calls) and OK calls per second, each
    run beside its baselines; the kickoff's offered rate as a grey step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [(n, r) for n, r in report["scenarios"].items() if n in GHZ_SCENARIOS and "runs" in r]
    if not scenarios:
        return
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(14, 4.2 * len(scenarios)), squeeze=False)
    colors = ["#264653", "#e76f51", "#2a9d8f", "#8338ec", "#e9c46a"]
    for row, (name, data) in enumerate(scenarios):
        lat_ax, rate_ax = axes[row]
        for i, run in enumerate(data["runs"]):
            tl = run["timeline"]
            if not tl:
                continue
            t = [p["t"] for p in tl]
            color = colors[i % len(colors)]
            label = f"{run['name']} ({run['role']})"
            lat_ax.plot(t, [p["p50_ms"] or float("nan") for p in tl], color=color, label=label)
            lat_ax.plot(t, [p["p99_ms"] or float("nan") for p in tl], color=color, linestyle="--")
            rate_ax.plot(t, [p["ok"] for p in tl], color=color, label=label)
            if run["role"] == "subject" and run.get("phases"):
                rate_ax.step(t, [p["offered"] for p in tl], where="post", color="grey", linestyle=":", label="offered")
        lat_ax.set_yscale("log")
        lat_ax.set_title(f"{name}: client latency per second, OK calls (p50 solid, p99 dashed)")
        lat_ax.set_xlabel("seconds into the run")
        lat_ax.set_ylabel("ms (log)")
        lat_ax.grid(True, which="both", alpha=0.3)
        lat_ax.legend(fontsize=7)
        rate_ax.set_yscale("log")
        rate_ax.set_title(f"{name}: OK calls per second")
        rate_ax.set_xlabel("seconds into the run")
        rate_ax.set_ylabel("calls/s (log)")
        rate_ax.grid(True, which="both", alpha=0.3)
        rate_ax.legend(fontsize=7)
    fig.suptitle(f"Inplay perf {report['started']} — {report['cpus']} CPUs, load {report['loadavg'][0]}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run Inplay's perf scenarios with same-run baselines",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Scenarios:")[1] if __doc__ else None,
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"{', '.join(SCENARIOS)}; default: steady kickoff"
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per ghz run (default 15)")
    parser.add_argument("--concurrency", type=int, default=50, help="ghz workers for the closed-loop runs")
    parser.add_argument("--batch", type=int, default=100, help="slips per PlaceBets call")
    parser.add_argument("--batch-concurrency", type=int, default=10, help="ghz workers for PlaceBets")
    parser.add_argument("--accounts", type=int, default=200, help="funded accounts the load is spread over")
    parser.add_argument(
        "--processes", type=int, default=1, help="server processes sharing the port (steady; one journal shard each)"
    )
    parser.add_argument("--profile", default="", metavar="PY_SPY", help="py-spy binary: sample the server per run")
    parser.add_argument(
        "--runs", default="", help="steady: comma-separated subset of placebet,open,placebets (Health/Check always)"
    )
    parser.add_argument("--kickoff-base-rps", type=int, default=25)
    parser.add_argument("--kickoff-factor", type=int, default=10)
    parser.add_argument("--kickoff-pre", type=int, default=5, help="seconds at the base rate before the spike")
    parser.add_argument("--settlement-bets", type=int, default=20_000)
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    names = args.scenarios or list(GHZ_SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {SCENARIOS}")
    if any(n in GHZ_SCENARIOS for n in names) and args.duration <= args.kickoff_pre and "kickoff" in names:
        parser.error("--duration must be longer than --kickoff-pre")

    from scenarios import bets
    from scenarios.common import stack_env
    from scenarios.ghz import ghz_bin, write_protoset

    stack_env()  # fail early without the stack's variables
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started": stamp,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "args": vars(args),
        "scenarios": {},
    }
    options = bets.Options(
        duration_s=args.duration,
        concurrency=args.concurrency,
        batch=args.batch,
        batch_concurrency=args.batch_concurrency,
        accounts=args.accounts,
        kickoff_base_rps=args.kickoff_base_rps,
        kickoff_factor=args.kickoff_factor,
        kickoff_pre_s=args.kickoff_pre,
        processes=args.processes,
        profiler=args.profile,
        runs=tuple(r for r in args.runs.split(",") if r),
    )
    protoset = write_protoset(out_dir / "inplay.protoset") if any(n in GHZ_SCENARIOS for n in names) else None
    failed = False
    for name in names:
        print(f"scenario {name}", flush=True)
        try:
            if name in GHZ_SCENARIOS:
                assert protoset is not None
                ghz_bin()
                runner = bets.steady if name == "steady" else bets.kickoff
                report["scenarios"][name] = runner(out_dir, protoset, options)
            else:
                report["scenarios"][name] = script_scenario(name, args, out_dir)
                failed |= bool(report["scenarios"][name].get("exit"))
        except Exception as exc:  # report what ran; the exit code says something failed
            failed = True
            report["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"    failed: {exc}", flush=True)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown(report))
    plot(report, out_dir / "latency.png")
    latest = RESULTS / "latest"
    if latest.is_symlink():
        latest.unlink()
    if not latest.exists():
        latest.symlink_to(out_dir.name)
    print(f"report: {out_dir / 'report.md'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
