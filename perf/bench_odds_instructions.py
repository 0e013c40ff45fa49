"""Instructions per ingested update: a measure of the pipeline's CPU cost that this noisy 2-core box does not
move (wall rates and CPU times of the same tree have varied 1.6x within an hour here; instruction counts
vary well under 1 %).

The pipeline runs over the real Redis (its Lua scripts, redis-py) with an in-memory list in place of Kafka
and the change log (the change-log writer's mode), under valgrind's callgrind. Per tree, four runs:

- ``pipeline`` N and ``pipeline`` M: build the mapping and M or N alpha price updates (as perf/bench_odds.py
  does), then ingest them;
- ``generate`` N and ``generate`` M: the same set-up and message generation, without the ingest.

Instructions per update = ((P(N) - P(M)) - (G(N) - G(M))) / (N - M): start-up, imports and generation
cancel out. Trees are compared in the same run (``--tree`` repeated; a tree is a checkout with the built
extension and generated stubs, e.g. ``git worktree add /tmp/base REV`` plus ``services/inplay/_core.abi3.so``
and ``services/inplay/*/v1`` copied in).

    set -a; . .stack/env; set +a
    .venv/bin/python perf/bench_odds_instructions.py                       # this checkout
    .venv/bin/python perf/bench_odds_instructions.py --tree /tmp/base --tree .

About 2.5 minutes per tree. Needs valgrind; PYTHONHASHSEED is fixed so set and dict layouts repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


class ListBus:
    """Kafka's place: the records are kept (the count is checked), never sent."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def publish(self, messages: Sequence[Any]) -> None:
        self.messages.extend(messages)

    async def deliver(self, messages: Sequence[Any], timeout_s: float = 10.0) -> None:
        self.messages.extend(messages)

    async def flush(self, timeout_s: float = 10.0) -> None:
        return None

    async def close(self) -> None:
        return None


async def inner(root: Path, phase: str, n: int, events: int) -> None:
    """One measured process: set-up and generation, then (phase ``pipeline``) the ingest."""
    sys.path[:0] = [str(root / "services"), str(root / "perf")]
    import bench_odds

    from inplay.adapters.memory_odds import MemoryMarketChangeLog
    from inplay.adapters.redis_odds import RedisFeedMappings, RedisOddsCache
    from inplay.domain.feed.mapping import FeedMappingService
    from inplay.domain.feed.pipeline import FeedPipeline, RawMessage
    from inplay.domain.feed.rules import FeedRules
    from inplay.domain.markets import ChangeRecorder, MarketControl
    from inplay.server import tune_gc

    tune_gc()
    tag = f"i{uuid.uuid4().hex[:6]}"
    doc = json.loads(json.dumps(bench_odds.mapping(events, "TAG")).replace("TAG", tag))
    msgs = [
        RawMessage(m.provider, m.payload.replace(b"TAG", tag.encode()), m.received_at_ms)
        for m in bench_odds.updates(events, n, bench_odds.now_ms() - 600_000)
    ]
    prefix = f"bench:{tag}:"
    cache = await RedisOddsCache.connect(os.environ["INPLAY_REDIS_URL"], prefix)
    mappings = FeedMappingService(RedisFeedMappings(cache.client, prefix))
    await mappings.load(doc)
    bus = ListBus()
    control = MarketControl(cache, ChangeRecorder(MemoryMarketChangeLog(), bus, "bench.", log_from_bus=True))
    rules = FeedRules(lag_inplay_ms=10**9, failover_lag_ms=10**9, heartbeat_timeout_ms=10**9)
    pipe = FeedPipeline(cache, bus, mappings, control, rules, "bench.")
    if phase == "pipeline":
        summary = await pipe.ingest(msgs)
        assert summary.accepted == n, summary
        assert len(bus.messages) >= n, len(bus.messages)  # an odds record per update (+ reception logs)
    keys = [k async for k in cache.client.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(keys), 500):
        await cache.client.delete(*keys[start : start + 500])
    await cache.close()


def instructions(tree: Path, phase: str, n: int, events: int) -> int:
    """Instructions callgrind counted for one ``inner`` run (the whole process)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/out",
            sys.executable,
            str(HERE),
            "--inner",
            phase,
            "--updates",
            str(n),
            "--events",
            str(events),
            "--root",
            str(tree),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{phase} {n} in {tree} failed:\n{done.stderr[-3000:]}")
        hit = re.search(r"Collected : ([\d,]+)", done.stderr)
        if hit is None:
            raise RuntimeError(f"no callgrind total in:\n{done.stderr[-2000:]}")
        return int(hit.group(1).replace(",", ""))


def measure(tree: Path, big: int, small: int, events: int) -> dict[str, Any]:
    started = time.perf_counter()
    counts = {f"{p}_{k}": instructions(tree, p, k, events) for p in ("pipeline", "generate") for k in (small, big)}
    pipeline = counts[f"pipeline_{big}"] - counts[f"pipeline_{small}"]
    generate = counts[f"generate_{big}"] - counts[f"generate_{small}"]
    per_update = (pipeline - generate) / (big - small)
    return {
        "tree": str(tree),
        "instructions_per_update": round(per_update),
        "generation_instructions_per_update": round(generate / (big - small)),
        "counts": counts,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to measure (repeatable)")
    parser.add_argument("--updates", type=int, default=6000)
    parser.add_argument("--base-updates", type=int, default=2000)
    parser.add_argument("--events", type=int, default=500, help="events (two markets each)")
    parser.add_argument("--out", type=Path, default=HERE.parent / "results" / "odds_instructions.json")
    parser.add_argument("--inner", choices=["pipeline", "generate"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        asyncio.run(inner(args.root, args.inner, args.updates, args.events))
        return
    trees = [t.resolve() for t in (args.tree or [HERE.parent.parent])]
    results = []
    for tree in trees:
        result = measure(tree, args.updates, args.base_updates, args.events)
        print(f"{tree}: {result['instructions_per_update']:,} instructions per update", flush=True)
        results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"updates": [args.base_updates, args.updates], "trees": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
