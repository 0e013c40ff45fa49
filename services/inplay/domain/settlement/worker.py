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
   "outcomes": [{"market_id": "...", "selection_id": "...", "result": "WIN", "dead_heat": [1, 2],
                 "void_factor": "0.5"}],     # optional, Sportradar's: 1 = full refund, 0.5 = half
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
from fractions import Fraction
from typing import Any

from inplay.app import Runtime, open_runtime
from inplay.config import Settings
from inplay.core import LegOutcome
from inplay.domain.settlement.consumer_metrics import (
    CONSUMER_LAG,
    CONSUMER_LAST_POLL,
    CONSUMER_RESTARTS,
    CONSUMER_UP,
    DEAD_LETTERED,
)
from inplay.domain.settlement.engine import SettlementConfig
from inplay.domain.settlement.model import Results, RunView, apply_void_factor, make_results, outcome_from_name
from inplay.domain.settlement.ports import LockService, SettlementStore
from inplay.domain.settlement.service import SettlementService
from inplay.errors import Aborted, DomainError, FailedPrecondition, InvalidArgument, NotFound
from inplay.ports import TOPIC_RESULTS, BusMessage, EventBus

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
        bet_watermark=getattr(runtime, "bet_watermark", None),  # bets visible up to the close (journal)
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
            outcome = outcome_from_name(str(o["result"]).upper())
            if o.get("void_factor") not in (None, "", 0):
                outcome = apply_void_factor(outcome, Fraction(str(o["void_factor"])))
            outcomes.append(
                (str(o["market_id"]), str(o["selection_id"]), outcome, (int(dead_heat[0]), int(dead_heat[1])))
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


DEAD_LETTER_SUFFIX = ".dlq"


@dataclass(frozen=True)
class ConsumerConfig:
    # Transient failures of one message before it is parked in the dead-letter topic.
    max_attempts: int = 8
    # How long a message waits for a busy event (another run of it in progress) before it is parked.
    busy_timeout_s: float = 900.0
    retry_delay_s: float = 0.5
    max_retry_delay_s: float = 10.0
    restart_delay_s: float = 1.0


@dataclass
class _Item:
    msg: Any
    parsed: ResultMessage | None
    error: str = ""
    done: bool = False


class ResultsConsumer:
    """Consumes ``inplay.results.v1``: events of a polled batch settle in parallel, each event's messages
    in order. Guarantees:

    * an offset is committed only once its message was processed (its run completed, or the message was
      parked in the dead-letter topic): per partition, the contiguous processed prefix; a stop
      (SIGTERM) leaves the rest uncommitted, so it is redelivered;
    * a message that keeps failing (or cannot be parsed, or is rejected) is parked in
      ``<topic>.dlq`` with the reason, so it blocks nobody;
    * a consume/commit error (a rebalance, a broker restart) restarts the consumer (a new member of the
      group, resuming from the committed offsets); ``health()`` and the ``inplay_results_consumer_*``
      metrics tell whether it is alive.
    """

    def __init__(
        self,
        service: SettlementService,
        bootstrap: str,
        topic: str,
        group: str,
        *,
        bus: EventBus | None = None,
        config: ConsumerConfig | None = None,
        consumer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self._service = service
        self._topic = topic
        self._bus = bus
        self._config = config or ConsumerConfig()
        self.dead_letter_topic = topic + DEAD_LETTER_SUFFIX
        self._factory = consumer_factory or (lambda: _kafka_consumer(bootstrap, group, topic))
        self._stop = asyncio.Event()
        self.processed = 0
        self.dead_lettered = 0
        self.restarts = 0
        self.last_poll_at = 0.0
        self.polling = False

    def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, object]:
        """Alive = polling now, and polled within the last 30 s (a run in progress delays polling)."""
        age = time.time() - self.last_poll_at if self.last_poll_at else None
        return {
            "polling": self.polling,
            "last_poll_age_s": age,
            "restarts": self.restarts,
            "processed": self.processed,
            "dead_lettered": self.dead_lettered,
        }

    async def run(self) -> None:
        """Consumes until ``stop()``; restarts the Kafka consumer after any error."""
        while not self._stop.is_set():
            try:
                consumer = await asyncio.to_thread(self._factory)
            except Exception:
                log.exception("results consumer: cannot create the Kafka consumer; retrying")
                await self._pause(self._config.restart_delay_s)
                continue
            try:
                await self._consume(consumer)
            except Exception:
                self.restarts += 1
                CONSUMER_RESTARTS.inc()
                log.exception("results consumer failed; restarting it (uncommitted messages are redelivered)")
            finally:
                self.polling = False
                CONSUMER_UP.set(0)
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(consumer.close)
            if not self._stop.is_set():
                await self._pause(self._config.restart_delay_s)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _consume(self, consumer: Any) -> None:
        while not self._stop.is_set():
            messages = await asyncio.to_thread(consumer.consume, 100, 0.5)
            self.polling = True
            self.last_poll_at = time.time()
            CONSUMER_UP.set(1)
            CONSUMER_LAST_POLL.set(self.last_poll_at)
            items = self._parse([m for m in messages if not _skippable(m)])
            if not items:
                continue
            by_event: dict[str, list[_Item]] = {}
            for item in items:
                key = item.parsed.event_id if item.parsed is not None else ""
                by_event.setdefault(key, []).append(item)
            await asyncio.gather(*(self._event(group) for group in by_event.values()))
            offsets = processed_offsets([(i.msg.topic(), i.msg.partition(), i.msg.offset(), i.done) for i in items])
            if offsets:
                await asyncio.to_thread(_commit, consumer, offsets)
            await asyncio.to_thread(_record_lag, consumer)

    def _parse(self, messages: Sequence[Any]) -> list[_Item]:
        items = []
        for msg in messages:
            fallback = f"kafka-{msg.topic()}-{msg.partition()}-{msg.offset()}"
            try:
                items.append(_Item(msg, parse_result_message(msg.value() or b"", fallback)))
            except InvalidArgument as exc:
                items.append(_Item(msg, None, f"unparseable: {exc}"))
        return items

    async def _event(self, items: list[_Item]) -> None:
        """One event's messages, in order; stops (leaving the rest unprocessed) on stop()."""
        for item in items:
            if self._stop.is_set():
                return
            if item.parsed is None:
                await self._dead_letter(item, item.error, 0)
                continue
            await self._process(item, item.parsed)

    async def _process(self, item: _Item, message: ResultMessage) -> None:
        delay = self._config.retry_delay_s
        attempts = 0
        loop = asyncio.get_running_loop()
        busy_until = loop.time() + self._config.busy_timeout_s
        while not self._stop.is_set():
            try:
                run = await handle_result(self._service, message)
                log.info("result %s of %s: run %s %s", message.request_id, message.event_id, run.run_id, run.state.name)
                self.processed += 1
                item.done = True
                return
            except (FailedPrecondition, InvalidArgument, NotFound) as exc:
                log.error("result %s of %s rejected: %s", message.request_id, message.event_id, exc)
                await self._dead_letter(item, f"rejected: {type(exc).__name__}: {exc}", attempts + 1)
                return
            except Exception as exc:  # transient (busy event, store down): retry, then park it
                busy = isinstance(exc, Aborted)
                attempts += 0 if busy else 1
                if (busy and loop.time() >= busy_until) or attempts >= self._config.max_attempts:
                    await self._dead_letter(item, f"gave up: {type(exc).__name__}: {exc}", attempts)
                    return
                if not isinstance(exc, DomainError):
                    log.warning("settling %s failed (attempt %d); retrying", message.event_id, attempts, exc_info=True)
                await self._pause(delay)
                delay = min(delay * 2, self._config.max_retry_delay_s)

    async def _dead_letter(self, item: _Item, reason: str, attempts: int) -> None:
        """Parks the message (raises if it cannot: the message then stays uncommitted)."""
        msg = item.msg
        if self._bus is None:
            raise RuntimeError(f"no dead-letter producer: cannot park the message at offset {msg.offset()}")
        envelope = {
            "reason": reason[:1000],
            "attempts": attempts,
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "value": (msg.value() or b"").decode("utf-8", "replace"),
        }
        key = item.parsed.event_id if item.parsed is not None else f"{msg.partition()}:{msg.offset()}"
        body = json.dumps(envelope, separators=(",", ":")).encode()
        await self._bus.publish([BusMessage(self.dead_letter_topic, key, body)])
        await self._bus.flush()
        log.error(
            "result message at %s/%s parked in %s: %s", msg.partition(), msg.offset(), self.dead_letter_topic, reason
        )
        self.dead_lettered += 1
        DEAD_LETTERED.inc()
        item.done = True


def processed_offsets(items: Sequence[tuple[str, int, int, bool]]) -> list[tuple[str, int, int]]:
    """(topic, partition, offset to commit) per partition: one past the contiguous processed prefix of the
    batch's messages (in offset order); partitions whose first message is unprocessed are left out."""
    by_partition: dict[tuple[str, int], list[tuple[int, bool]]] = {}
    for topic, partition, offset, done in items:
        by_partition.setdefault((topic, partition), []).append((offset, done))
    out = []
    for (topic, partition), rows in sorted(by_partition.items()):
        last = None
        for offset, done in sorted(rows):
            if not done:
                break
            last = offset
        if last is not None:
            out.append((topic, partition, last + 1))
    return out


def _kafka_consumer(bootstrap: str, group: str, topic: str) -> Any:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": 3_600_000,
        }
    )
    consumer.subscribe([topic])
    return consumer


def _skippable(msg: Any) -> bool:
    """Informational errors (end of partition) are skipped; any other consumer error raises (restart)."""
    err = msg.error()
    if err is None:
        return False
    from confluent_kafka import KafkaError, KafkaException

    if err.code() == KafkaError._PARTITION_EOF:
        return True
    if err.fatal() or not err.retriable():
        raise KafkaException(err)
    log.warning("kafka: %s", err)
    return True


def _commit(consumer: Any, offsets: Sequence[tuple[str, int, int]]) -> None:
    from confluent_kafka import TopicPartition

    consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in offsets], asynchronous=False)


def _record_lag(consumer: Any) -> None:
    """Best effort: Σ (high watermark - position) over the assigned partitions."""
    try:
        lag = 0
        for tp in consumer.position(consumer.assignment()):
            _, high = consumer.get_watermark_offsets(tp, timeout=1.0, cached=True)
            if tp.offset >= 0 and high >= 0:
                lag += max(0, high - tp.offset)
        CONSUMER_LAG.set(lag)
    except Exception:
        log.debug("could not compute the consumer lag", exc_info=True)


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
            bus=runtime.bus,
        )
        consumer_task = asyncio.create_task(consumer.run())
        # run() restarts the Kafka consumer itself; if it ever ends otherwise, the worker exits (k8s restarts it).
        consumer_task.add_done_callback(lambda _: stop.set())
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
