"""CPU seconds by process role during one load run: where a bet's CPU goes on a box that runs everything.

On this project's 2-core box the server, the stores and the load generator share the cores, so the rate a
run reaches is bounded by the sum of every process's CPU per bet, not by the server's alone. Each run's
report gives that split (µs of CPU per accepted bet by role) and the bound it implies: ``cores / Σ``.

Roles: ``server`` (the measured server processes), ``cassandra``, ``kafka``, ``redis`` (the stack's
processes, found by their command lines), ``envoy`` (the edge, when a run goes through it), ``ghz`` (the
load generator: CPU of children reaped during the run, ``RUSAGE_CHILDREN``), ``other`` (everything else on
the box: other engineers' work shows here).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable

TICK = os.sysconf("SC_CLK_TCK")


def _role(cmdline: str) -> str:
    if "CassandraDaemon" in cmdline or "cassandra" in cmdline.split(" ", 1)[0] or "-Dcassandra" in cmdline:
        return "cassandra"
    if "kafka.Kafka" in cmdline or "kafka-server" in cmdline:
        return "kafka"
    if cmdline.startswith("redis-server") or "/redis-server" in cmdline.split(" ", 1)[0]:
        return "redis"
    if cmdline.split(" ", 1)[0].endswith("/envoy"):
        return "envoy"
    return "other"


def snapshot(server_pids: Iterable[int]) -> dict[str, float]:
    """CPU seconds (user + system) so far, summed by role, for every live process on the box."""
    servers = set(server_pids)
    me = os.getpid()
    out: dict[str, float] = {"server": 0.0, "cassandra": 0.0, "kafka": 0.0, "redis": 0.0, "envoy": 0.0, "other": 0.0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        seconds = (int(fields[11]) + int(fields[12])) / TICK
        role = "server" if int(entry) in servers else _role(cmdline)
        out[role] += seconds
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["ghz"] = usage.ru_utime + usage.ru_stime
    return out


def per_bet(before: dict[str, float], after: dict[str, float], bets: int) -> dict[str, float]:
    """µs of CPU per accepted bet by role between two snapshots, with the total and the rate bound it
    implies on this box's cores. Processes that started during the run count from zero; ``other`` can be
    skewed by processes that ended during it (their CPU leaves the sum)."""
    if bets <= 0:
        return {}
    out = {role: round(max(0.0, after[role] - before.get(role, 0.0)) * 1e6 / bets) for role in after}
    total = sum(out.values())
    out["total"] = total
    cores = os.cpu_count() or 1
    out["bound_bets_per_s"] = round(cores * 1e6 / total) if total else 0
    return out
