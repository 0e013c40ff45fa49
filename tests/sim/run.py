"""Runs the simulation: ``python -m tests.sim.run --seeds 1000`` (from the repo root, services on the path;
``./dev sim`` does that). A failing seed prints the one command that replays it exactly.

Same seed => same scenario, same schedule, same faults, same result: the loop, the fault plan and every actor
draw from RNGs derived from the seed only, time is virtual, and str hashing is pinned (the runner re-executes
itself with PYTHONHASHSEED=0 so set iteration orders are the same in every process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import os
import random
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.sim.loop import SimLoop, VirtualTime

# Modules under test that read a clock through the ``time`` module: they read the virtual one instead.
_TIMED_MODULES = (
    "inplay.domain.commit",
    "inplay.domain.bets.placement",
    "inplay.domain.wallet",
    "inplay.domain.settlement.engine",
    "inplay.domain.settlement.service",
    "inplay.adapters.memory_settlement",
)


@dataclass
class SeedResult:
    seed: int
    ok: bool
    strict: bool = False
    error: str = ""
    steps: int = 0
    virtual_s: float = 0.0
    digest: str = ""
    stats: dict[str, int] = field(default_factory=dict)
    knobs: str = ""
    trace: list[str] = field(default_factory=list)

    def replay_command(self) -> str:
        strict = " --strict" if self.strict else ""
        return f"PYTHONHASHSEED=0 PYTHONPATH=services python -m tests.sim.run --seed {self.seed}{strict} -v"


class SeededOs:
    """Stands in for ``os`` where the code under test draws random ids (wallet epochs): from the seed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"os:{seed}")

    def urandom(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)


@contextlib.contextmanager
def pinned(clock: VirtualTime, seed: int) -> Iterator[None]:
    """Every clock the code under test reads is the loop's; every random id it draws comes from the seed."""
    import importlib

    patches: list[tuple[Any, str, object]] = [(importlib.import_module(n), "time", clock) for n in _TIMED_MODULES]
    patches.append((importlib.import_module("inplay.domain.wallet"), "os", SeededOs(seed)))
    saved = [(m, attr, getattr(m, attr)) for m, attr, _ in patches]
    for m, attr, value in patches:
        setattr(m, attr, value)
    try:
        yield
    finally:
        for m, attr, value in saved:
            setattr(m, attr, value)


def run_seed(seed: int, *, strict: bool = False) -> SeedResult:
    from tests.sim.invariants import check
    from tests.sim.world import World

    result = SeedResult(seed, ok=False, strict=strict)
    loop = SimLoop(seed)
    world: World | None = None

    async def main() -> dict[str, int]:
        nonlocal world
        world = World(seed, strict=strict)
        await world.run()
        return await check(world)

    # No cyclic GC during the seed: an abandoned task (of a killed process) collected at a moment that
    # depends on memory use would run its finally blocks and schedule callbacks: a different schedule.
    if not gc.get_freeze_count():
        gc.collect()
        gc.freeze()  # the modules' objects: never scanned again, so the per-seed collection is cheap
    gc.disable()
    try:
        with pinned(VirtualTime(loop), seed):
            result.stats = loop.run_until_complete(main())
        result.ok = True
    except Exception as exc:  # an invariant (AssertionError), a Deadlock, a StepLimit or a bug: all findings
        result.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if not isinstance(exc, AssertionError):
            result.error += "\n" + "".join(traceback.format_exception(exc)[-6:])
    finally:
        asyncio.set_event_loop(None)
        loop.close()
        _collect_abandoned()
    result.steps, result.virtual_s = loop.steps, loop.time()
    if world is not None:
        result.knobs = repr(world.knobs)
        result.trace = world.trace
        fired = {f"fault:{k}": v for k, v in world.faults.fired.items()}
        result.stats = {**result.stats, **world.outcomes, **fired}
        result.digest = hashlib.sha256("\n".join(world.trace).encode()).hexdigest()[:16]
    return result


def _collect_abandoned() -> None:
    """Collects the killed processes' abandoned coroutines after the loop closed; their complaints (a closed
    loop, an ignored GeneratorExit) are expected and not printed."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=1000, help="run seeds [first, first + seeds)")
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--seed", type=int, help="run (replay) this one seed")
    parser.add_argument("--strict", action="store_true", help="no operator restart/repair in the calm phase")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the seed's trace")
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":  # set orders of str must not differ between runs
        os.execvpe(
            sys.executable,
            [sys.executable, "-m", "tests.sim.run", *sys.argv[1:]],
            {**os.environ, "PYTHONHASHSEED": "0"},
        )
    seeds = [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    started = time.perf_counter()
    failures: list[SeedResult] = []
    totals: dict[str, int] = {}
    for seed in seeds:
        result = run_seed(seed, strict=args.strict)
        for k, v in result.stats.items():
            totals[k] = totals.get(k, 0) + v
        if args.verbose:
            print(f"seed {seed}: {result.knobs}")
            print("\n".join(result.trace))
            print(f"steps={result.steps} virtual={result.virtual_s:.1f}s digest={result.digest} {result.stats}")
        if not result.ok:
            failures.append(result)
            print(f"FAIL seed {seed}: {result.error}\n  replay: {result.replay_command()}", flush=True)
    elapsed = time.perf_counter() - started
    print(f"{len(seeds) - len(failures)}/{len(seeds)} seeds passed in {elapsed:.1f} s")
    print("totals: " + ", ".join(f"{k}={v}" for k, v in sorted(totals.items()) if not k.startswith("fault:")))
    print("faults: " + ", ".join(f"{k}={v}" for k, v in sorted(totals.items()) if k.startswith("fault:")))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
