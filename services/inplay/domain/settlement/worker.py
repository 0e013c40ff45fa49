"""Settlement worker: ``python -m inplay.domain.settlement.worker COMMAND``.

  serve [--grpc-port P]           consume result messages from ``inplay.results.v1`` (and, with a port,
                                  serve SettlementService); resumes unfinished runs of the last 2 days first
  settle --event E --request-id R --outcome MARKET:SELECTION:RESULT[:N/D] ... [--void MARKET ...]
  resettle (same arguments)       roll back the latest settlement in effect and settle with these results
  rollback --event E --run RUN
  resume [--event E] [--days N]   finish runs that started and did not complete (after a crash)
  status --event E [--run RUN]

Stores come from the environment (``INPLAY_*``; load ``.stack/env``). Result messages (JSON)::

  {"event_id": "...", "request_id": "...", "correction": false, "reason": "...",
   "outcomes": [{"market_id": "...", "selection_id": "...", "result": "WIN", "dead_heat": [1, 2]}],
   "void_market_ids": ["..."]}

``correction: true`` resettles. A message's offset is committed only after its run completed, so a crashed
worker's messages are redelivered and their runs resumed (same request id, same run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from inplay.app import Runtime, open_runtime
from inplay.config import Settings
from inplay.core import LegOutcome
from inplay.domain.settlement.engine import SettlementConfig
from inplay.domain.settlement.model import Results, RunView, make_results, outcome_from_name
from inplay.domain.settlement.ports import LockService, SettlementStore
from inplay.domain.settlement.service import SettlementService
from inplay.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from inplay.ports import TOPIC_RESULTS

log = logging.getLogger("inplay.settlement.worker")


# --------------------------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------------------------


@dataclass
class SettlementComponents:
    service: SettlementService
    store: SettlementStore
    locks: LockService
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        await self.service.drain(timeout_s=10.0)
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                await closer()


def _market_settler(runtime: Runtime) -> Callable[[Sequence[str]], Awaitable[object]] | None:
    control = runtime.components.get("market_control")
    if control is not None:
        return control.settle  # type: ignore[no-any-return]
    try:
        from inplay.domain.markets import ChangeRecorder, MarketControl

        if runtime.settings.stack.embedded:
            from inplay.adapters.memory_odds import MemoryMarketChangeLog

            log_store: Any = MemoryMarketChangeLog()
        else:
            from inplay.adapters.cassandra_changes import CassandraMarketChangeLog

            log_store = CassandraMarketChangeLog(runtime.ledger.session)  # type: ignore[attr-defined]
        recorder = ChangeRecorder(log_store, runtime.bus, runtime.settings.stack.topic_prefix)
        return MarketControl(runtime.odds, recorder).settle
    except Exception:  # the odds pipeline is optional for settlement
        log.warning("markets will not be marked SETTLED (no market control available)", exc_info=True)
        return None


async def open_settlement(
    runtime: Runtime,
    *,
    config: SettlementConfig | None = None,
    mark_settled: Callable[[Sequence[str]], Awaitable[object]] | None = None,
) -> SettlementComponents:
    """Builds the settlement service over the runtime's stores (real or embedded)."""
    stack = runtime.settings.stack
    config = config or SettlementConfig.from_env(stack.topic_prefix)
    closers: list[Callable[[], Awaitable[None]]] = []
    store: Any
    locks: Any
    if stack.embedded:
        from inplay.adapters.memory_settlement import MemoryLocks, MemorySettlementStore

        store = MemorySettlementStore(runtime.ledger)
        locks = MemoryLocks()
    else:
        from inplay.adapters.cassandra_settlement import CassandraSettlementStore
        from inplay.domain.settlement.locks import RedisLocks

        session = runtime.ledger.session  # type: ignore[attr-defined]
        store = CassandraSettlementStore(session, **_count_options(runtime.ledger))
        redis_locks = RedisLocks.connect(stack.redis_url, stack.redis_prefix)
        closers.append(redis_locks.close)
        locks = redis_locks
    settler = mark_settled if mark_settled is not None else _market_settler(runtime)
    service = SettlementService(
        store,
        runtime.ledger,
        runtime.wallet_store,
        runtime.bus,
        locks,
        mark_settled=settler,
        config=config,
        markets=runtime.odds,  # results are validated against the odds cache's markets
    )
    return SettlementComponents(service, store, locks, closers)


def _count_options(ledger: Any) -> dict[str, Any]:
    """How to count an event's bets in the ledger's by-event table (for progress totals)."""
    table = getattr(ledger, "BETS_BY_EVENT_TABLE", "bets_by_event")
    buckets = int(getattr(ledger, "EVENT_BUCKETS", 64))
    return {
        "count_query": f"SELECT COUNT(*) FROM {table} WHERE event_id = ? AND bucket = ?",
        "count_buckets": buckets,
    }


# --------------------------------------------------------------------------------------------------------
# Result messages
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultMessage:
    event_id: str
    request_id: str
    results: Results
    correction: bool = False
    reason: str = ""


def parse_result_message(raw: bytes, fallback_request_id: str) -> ResultMessage:
    try:
        data = json.loads(raw)
        outcomes = []
        for o in data.get("outcomes", []):
            dead_heat = o.get("dead_heat") or [1, 1]
            outcomes.append(
                (
                    str(o["market_id"]),
                    str(o["selection_id"]),
                    outcome_from_name(str(o["result"]).upper()),
                    (int(dead_heat[0]), int(dead_heat[1])),
                )
            )
        results = make_results(outcomes, [str(m) for m in data.get("void_market_ids", [])])
        return ResultMessage(
            event_id=str(data["event_id"]),
            request_id=str(data.get("request_id") or fallback_request_id),
            results=results,
            correction=bool(data.get("correction", False)),
            reason=str(data.get("reason", "")),
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise InvalidArgument(f"bad result message: {exc}") from None


def result_message(
    event_id: str,
    request_id: str,
    outcomes: Sequence[tuple[str, str, str] | tuple[str, str, str, tuple[int, int]]],
    void_market_ids: Sequence[str] = (),
    *,
    correction: bool = False,
    reason: str = "",
) -> bytes:
    """Builds a result message (for producers and tests)."""
    items = []
    for o in outcomes:
        item: dict[str, object] = {"market_id": o[0], "selection_id": o[1], "result": o[2]}
        if len(o) > 3:
            item["dead_heat"] = list(o[3])
        items.append(item)
    return json.dumps(
        {
            "event_id": event_id,
            "request_id": request_id,
            "outcomes": items,
            "void_market_ids": list(void_market_ids),
            "correction": correction,
            "reason": reason,
        },
        separators=(",", ":"),
    ).encode()


async def handle_result(service: SettlementService, message: ResultMessage) -> RunView:
    if message.correction:
        _, run = await service.resettle(
            message.event_id, message.results, message.request_id, reason=message.reason, wait=True
        )
        return run
    return await service.settle_event(
        message.event_id, message.results, message.request_id, reason=message.reason, wait=True
    )


class ResultsConsumer:
    """Consumes ``inplay.results.v1``: events of a polled batch settle in parallel, each event's messages
    in order; offsets are committed once the batch's runs completed (at-least-once delivery + idempotent
    runs = each result applied exactly once)."""

    def __init__(self, service: SettlementService, bootstrap: str, topic: str, group: str) -> None:
        from confluent_kafka import Consumer

        self._service = service
        self._topic = topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": 3_600_000,
            }
        )
        self._consumer.subscribe([topic])
        self._stop = asyncio.Event()
        self.processed = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                messages = await asyncio.to_thread(self._consumer.consume, 100, 0.5)
                batch = []
                for msg in messages:
                    if msg.error() is not None:
                        log.warning("kafka: %s", msg.error())
                        continue
                    batch.append(msg)
                if not batch:
                    continue
                by_event: dict[str, list[ResultMessage]] = {}
                for msg in batch:
                    fallback = f"kafka-{msg.topic()}-{msg.partition()}-{msg.offset()}"
                    try:
                        parsed = parse_result_message(msg.value() or b"", fallback)
                    except InvalidArgument as exc:
                        log.error("skipping result message at offset %s: %s", msg.offset(), exc)
                        continue
                    by_event.setdefault(parsed.event_id, []).append(parsed)
                await asyncio.gather(*(self._event(msgs) for msgs in by_event.values()))
                await asyncio.to_thread(self._consumer.commit, asynchronous=False)
        finally:
            await asyncio.to_thread(self._consumer.close)

    async def _event(self, messages: list[ResultMessage]) -> None:
        for message in messages:
            delay = 0.5
            while not self._stop.is_set():
                try:
                    run = await handle_result(self._service, message)
                    log.info(
                        "result %s of %s: run %s %s",
                        message.request_id,
                        message.event_id,
                        run.run_id,
                        run.state.name,
                    )
                    self.processed += 1
                    break
                except (FailedPrecondition, InvalidArgument, NotFound) as exc:
                    log.error("result %s of %s rejected: %s", message.request_id, message.event_id, exc)
                    self.processed += 1
                    break
                except Exception as exc:  # transient (busy event, store down): retry the same message
                    if not isinstance(exc, DomainError):
                        log.exception("settling %s failed; retrying", message.event_id)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)


# --------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------


def _parse_outcome(text: str) -> tuple[str, str, LegOutcome, tuple[int, int]]:
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise SystemExit(f"bad --outcome {text!r}: MARKET:SELECTION:RESULT[:N/D]")
    dead_heat = (1, 1)
    if len(parts) == 4:
        num, den = parts[3].split("/")
        dead_heat = (int(num), int(den))
    return parts[0], parts[1], outcome_from_name(parts[2].upper()), dead_heat


def run_json(run: RunView) -> dict[str, object]:
    return {
        "run_id": run.run_id,
        "event_id": run.record.event_id,
        "kind": run.record.kind.name,
        "state": run.state.name,
        "target_run_id": run.record.target_run_id,
        "bets_total": run.stats.bets_total,
        "bets_processed": run.stats.bets_processed,
        "bets_still_open": run.stats.bets_still_open,
        "bets_changed": run.stats.bets_changed,
        "payouts_minor": run.stats.payouts_minor,
        "negative_balance_accounts": list(run.stats.negative_balance_accounts),
        "started_at_ms": run.record.started_at_ms,
        "finished_at_ms": run.finished_at_ms,
        "error": run.error,
    }


async def resume_recent(components: SettlementComponents, days: int) -> list[RunView]:
    """Resumes unfinished runs started in the last ``days`` UTC days."""
    runs_of_day = getattr(components.store, "runs_of_day", None)
    if runs_of_day is None:
        return []
    today = datetime.now(tz=UTC)
    events: set[str] = set()
    for d in range(days):
        day = (today - timedelta(days=d)).strftime("%Y%m%d")
        for event_id, _ in await runs_of_day(day):
            events.add(event_id)
    resumed: list[RunView] = []
    for event_id in sorted(events):
        try:
            resumed.extend(await components.service.resume_event(event_id))
        except DomainError as exc:
            log.warning("could not resume %s: %s", event_id, exc)
    return resumed


async def _serve(components: SettlementComponents, runtime: Runtime, grpc_port: int | None) -> None:
    stack = runtime.settings.stack
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = None
    if grpc_port is not None:
        import grpc

        from inplay.servicers import settlement as settlement_servicer

        server = grpc.aio.server()
        settlement_servicer.add_to_server(server, components.service)
        bound = server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
        log.info("SettlementService on 127.0.0.1:%d", bound)
    resumed = await resume_recent(components, 2)
    if resumed:
        log.info("resumed %d unfinished runs", len(resumed))
    consumer = None
    consumer_task = None
    if stack.kafka_bootstrap:
        consumer = ResultsConsumer(
            components.service,
            stack.kafka_bootstrap,
            stack.topic_prefix + TOPIC_RESULTS,
            stack.topic_prefix + "inplay-settlement",
        )
        consumer_task = asyncio.create_task(consumer.run())
        log.info("consuming %s", stack.topic_prefix + TOPIC_RESULTS)
    print("READY", flush=True)
    await stop.wait()
    if consumer is not None and consumer_task is not None:
        consumer.stop()
        await consumer_task
    if server is not None:
        await server.stop(5)
    await components.service.drain()


async def _main(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    runtime = await open_runtime(settings)
    existing = runtime.components.get("settlement")
    # The composition root builds settlement with the rest (closed with the runtime); else build it here.
    components = existing if isinstance(existing, SettlementComponents) else await open_settlement(runtime)
    service = components.service
    try:
        if args.command == "serve":
            await _serve(components, runtime, args.grpc_port)
            return 0
        if args.command in ("settle", "resettle"):
            results = make_results([_parse_outcome(o) for o in args.outcome or []], args.void or [])
            if args.command == "settle":
                run = await service.settle_event(args.event, results, args.request_id, reason=args.reason)
                print(json.dumps(run_json(run)))
            else:
                rb, run = await service.resettle(args.event, results, args.request_id, reason=args.reason)
                print(json.dumps({"rollback_run": run_json(rb), "settle_run": run_json(run)}))
            return 0
        if args.command == "rollback":
            run = await service.rollback(args.event, args.run, reason=args.reason)
            print(json.dumps(run_json(run)))
            return 0
        if args.command == "resume":
            if args.event:
                runs = await service.resume_event(args.event)
            else:
                runs = await resume_recent(components, args.days)
            print(json.dumps([run_json(r) for r in runs]))
            return 0
        if args.command == "status":
            report = await service.status(args.event, args.run or "")
            print(json.dumps({"run": run_json(report.run), "history": [run_json(r) for r in report.history]}))
            return 0
        return 2
    except DomainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if components is not existing:
            await components.close()
        await runtime.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inplay.domain.settlement.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="consume result messages (and serve gRPC with --grpc-port)")
    serve.add_argument("--grpc-port", type=int, default=None)
    for name in ("settle", "resettle"):
        p = sub.add_parser(name)
        p.add_argument("--event", required=True)
        p.add_argument("--request-id", required=True)
        p.add_argument("--outcome", action="append", help="MARKET:SELECTION:RESULT[:N/D]")
        p.add_argument("--void", action="append", help="a market voided as a whole")
        p.add_argument("--reason", default="")
    rb = sub.add_parser("rollback")
    rb.add_argument("--event", required=True)
    rb.add_argument("--run", required=True)
    rb.add_argument("--reason", default="")
    res = sub.add_parser("resume")
    res.add_argument("--event", default="")
    res.add_argument("--days", type=int, default=2)
    st = sub.add_parser("status")
    st.add_argument("--event", required=True)
    st.add_argument("--run", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    start = time.perf_counter()
    rc = asyncio.run(_main(args))
    log.info("done in %.1f s", time.perf_counter() - start)
    return rc


if __name__ == "__main__":
    sys.exit(main())
