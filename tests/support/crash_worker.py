"""A test-only settlement worker that dies like ``kill -9`` at a chosen write of a page, or runs slowly.

    python -m tests.support.crash_worker [--crash-at S:3:ledger] [--page-delay-ms 400] WORKER-ARGS

``--page-delay-ms``: a pause after each page's checkpoint, so that a test can kill the worker mid-run.

The worker is built by the composition root exactly as ``python -m inplay.worker`` builds it
(``inplay.worker.main``), with its ports wrapped (``inplay.app.SettlementPorts``): the fault is injected
through the ports, production code has no hook. ``<phase>:<page>:<stage>``:

* phase ``S`` (the event's own bets) or ``M`` (accumulators: from the moment the run takes the multi-event
  lock ``settlement:multi``);
* page N: the first write of the stage once N-1 pages of that phase have their checkpoint (exact with one
  worker committing one page at a time; with parallel workers, a page in flight at that moment);
* stage ``ledger`` (history, per-run and money rows written, the page not credited: the exit is at the
  page's ``WalletStore.credit_batch``), ``credit`` (credited, no checkpoint) or ``checkpoint`` (written).
  The two credit stages need a page with a credit (a winner): a page of losers only has none, and the exit
  comes at the next page that has one (the tests' books have winners on every page).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from inplay import worker
from inplay.app import SettlementPorts
from inplay.domain.settlement.lease import MULTI_LOCK_KEY
from tests.support.settlement import SlowPages

log = logging.getLogger("tests.crash_worker")


@dataclass
class CrashPlan:
    phase: str
    page: int
    stage: str
    current_phase: str = "S"
    checkpoints: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> CrashPlan:
        phase, page, stage = text.split(":")
        if phase not in ("S", "M") or stage not in ("ledger", "credit", "checkpoint"):
            raise SystemExit(f"bad --crash-at {text!r}: <S|M>:<page>:<ledger|credit|checkpoint>")
        return cls(phase, int(page), stage)

    def reached(self, stage: str) -> bool:
        done = self.checkpoints.get(self.phase, 0)
        return stage == self.stage and self.current_phase == self.phase and done >= self.page - 1

    def crash(self) -> None:
        log.error("crash injected at %s:%d:%s", self.phase, self.page, self.stage)
        logging.shutdown()
        os._exit(137)


class _Delegating:
    def __init__(self, inner: Any, plan: CrashPlan) -> None:
        self._inner = inner
        self._plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CrashingWallet(_Delegating):
    async def credit_batch(self, credits: Sequence[Any]) -> list[bool]:
        if self._plan.reached("ledger"):
            self._plan.crash()
        applied: list[bool] = await self._inner.credit_batch(credits)
        if self._plan.reached("credit"):
            self._plan.crash()
        return applied


class CrashingStore(_Delegating):
    async def append_checkpoints(self, checkpoints: Sequence[Any]) -> None:
        await self._inner.append_checkpoints(checkpoints)
        for cp in checkpoints:
            if cp.phase in ("S", "M"):
                # The checkpoint of the target page itself is the "checkpoint" stage.
                if self._plan.stage == "checkpoint" and cp.phase == self._plan.phase:
                    if self._plan.checkpoints.get(cp.phase, 0) + 1 >= self._plan.page:
                        self._plan.crash()
                self._plan.checkpoints[cp.phase] = self._plan.checkpoints.get(cp.phase, 0) + 1


class PhaseTrackingLocks(_Delegating):
    async def acquire(self, key: str, ttl_ms: int) -> Any:
        lease = await self._inner.acquire(key, ttl_ms)
        if key == MULTI_LOCK_KEY and lease is not None:
            self._plan.current_phase = "M"
        return lease


def wrap_for(plan: CrashPlan | None, page_delay_ms: int) -> Any:
    def wrap(ports: SettlementPorts) -> SettlementPorts:
        store: Any = ports.store
        if page_delay_ms:
            store = SlowPages(store, page_delay_ms / 1000)
        if plan is None:
            return replace(ports, store=store)
        return replace(
            ports,
            store=CrashingStore(store, plan),
            wallet=CrashingWallet(ports.wallet, plan),  # type: ignore[arg-type]
            locks=PhaseTrackingLocks(ports.locks, plan),  # type: ignore[arg-type]
        )

    return wrap


def main(argv: list[str]) -> int:
    options = argparse.ArgumentParser(prog="python -m tests.support.crash_worker", add_help=False, allow_abbrev=False)
    options.add_argument("--crash-at", default="")
    options.add_argument("--page-delay-ms", type=int, default=0)
    args, rest = options.parse_known_args(argv)
    plan = CrashPlan.parse(args.crash_at) if args.crash_at else None
    return worker.main(rest, wrap=wrap_for(plan, args.page_delay_ms))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
