"""Background workers: ``python -m inplay.worker COMMAND`` (settlement, and the feed's change-log writer).

  serve [--grpc-port P]           consume result messages from ``inplay.results.v1`` (and, with a port,
                                  serve SettlementService); resumes unfinished runs of the last 2 days first
  settle --event E --request-id R --outcome MARKET:SELECTION:RESULT[:N/D] ... [--void MARKET ...]
  resettle (same arguments)       roll back the latest settlement in effect and settle with these results
  rollback --event E --run RUN
  resume [--event E] [--days N]   finish runs that started and did not complete (after a crash)
  status --event E [--run RUN]
  changelog                       write the feed's market change log from the odds topics (with ingest
                                  servers on INPLAY_FEED_CHANGE_LOG=kafka; inplay.domain.feed.changelog)

Stores come from the environment (``INPLAY_*``; load ``.stack/env``); the composition root (``inplay.app``)
builds everything. Result messages: ``inplay.domain.settlement.messages``. A message's offset is committed
only after its run completed, so a crashed worker's messages are redelivered and their runs resumed (same
request id, same run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from inplay.app import (
    Runtime,
    SettlementComponents,
    SettlementPorts,
    open_change_log_writer,
    open_results_consumer,
    open_runtime,
    open_settlement,
)
from inplay.config import Settings
from inplay.core import LegOutcome
from inplay.domain.settlement.model import RunView, make_results, outcome_from_name
from inplay.errors import DomainError

log = logging.getLogger("inplay.settlement.worker")

PortsWrap = Callable[[SettlementPorts], SettlementPorts]


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


async def _grpc_server(components: SettlementComponents, grpc_port: int | None) -> Any:
    if grpc_port is None:
        return None
    import grpc

    from inplay.servicers import settlement as settlement_servicer

    server = grpc.aio.server()
    settlement_servicer.add_to_server(server, components.service)
    bound = server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    log.info("SettlementService on 127.0.0.1:%d", bound)
    return server


async def _serve(components: SettlementComponents, runtime: Runtime, grpc_port: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await _grpc_server(components, grpc_port)
    resumed = await resume_recent(components, 2)
    if resumed:
        log.info("resumed %d unfinished runs", len(resumed))
    consumer = open_results_consumer(runtime, components.service)
    consumer_task = None
    if consumer is not None:
        consumer_task = asyncio.create_task(consumer.run())
        # run() restarts the Kafka consumer itself; if it ever ends otherwise, the worker exits (k8s restarts it).
        consumer_task.add_done_callback(lambda _: stop.set())
        log.info("consuming %s", consumer.topic)
    print("READY", flush=True)
    await stop.wait()
    if consumer is not None and consumer_task is not None:
        consumer.stop()
        await consumer_task
    if server is not None:
        await server.stop(5)
    await components.service.drain()


async def _command(args: argparse.Namespace, components: SettlementComponents) -> object:
    """The one-shot commands; returns what is printed (JSON)."""
    service = components.service
    if args.command in ("settle", "resettle"):
        results = make_results([_parse_outcome(o) for o in args.outcome or []], args.void or [])
        if args.command == "settle":
            return run_json(await service.settle_event(args.event, results, args.request_id, reason=args.reason))
        rb, run = await service.resettle(args.event, results, args.request_id, reason=args.reason)
        return {"rollback_run": run_json(rb), "settle_run": run_json(run)}
    if args.command == "rollback":
        return run_json(await service.rollback(args.event, args.run, reason=args.reason))
    if args.command == "resume":
        runs = await service.resume_event(args.event) if args.event else await resume_recent(components, args.days)
        return [run_json(r) for r in runs]
    report = await service.status(args.event, args.run or "")
    return {"run": run_json(report.run), "history": [run_json(r) for r in report.history]}


async def _changelog(runtime: Runtime) -> None:
    """Runs the change-log writer until SIGTERM/SIGINT (a batch in flight stays uncommitted: redelivered)."""
    writer, open_source = open_change_log_writer(runtime)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(writer.run(open_source), name="changelog-writer")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    print("READY", flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    log.info("change-log writer stopped", extra={"entries": writer.entries, "skipped": writer.skipped})


async def _main(args: argparse.Namespace, wrap: PortsWrap | None) -> int:
    runtime = await open_runtime(Settings.from_env())
    if args.command == "changelog":
        try:
            await _changelog(runtime)
            return 0
        finally:
            await _close_within(None, runtime)
    existing = runtime.components.get("settlement")
    # The composition root builds settlement with the rest (closed with the runtime); a test that wraps
    # the ports gets its own build.
    own = wrap is not None or not isinstance(existing, SettlementComponents)
    components = await open_settlement(runtime, wrap=wrap) if own else existing
    assert isinstance(components, SettlementComponents)
    try:
        if args.command == "serve":
            await _serve(components, runtime, args.grpc_port)
        else:
            print(json.dumps(await _command(args, components)))
        return 0
    except DomainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await _close_within(components if own else None, runtime)


# A finished command's work is durable (ledger, checkpoints); closing is best effort and must not keep the
# process alive: on the 3-node cluster a close was seen to hang after COMPLETED (a client call that never
# returned), which held `resume` past any deadline.
CLOSE_TIMEOUT_S = 30.0


async def _close_within(components: SettlementComponents | None, runtime: Runtime) -> None:
    async def close_all() -> None:
        if components is not None:
            await components.close()
        await runtime.close()

    try:
        await asyncio.wait_for(close_all(), CLOSE_TIMEOUT_S)
    except TimeoutError:
        log.warning("closing the stores took over %.0f s: exiting without waiting for them", CLOSE_TIMEOUT_S)
        _unclean.set()


# Set when a close gave up: the stores' own (non-daemon) threads may still be blocked, and the interpreter
# would join them at exit.
_unclean = threading.Event()


def _run(main: Any) -> int:
    """``asyncio.run`` with a bounded end. A thread stuck in a blocking client call (the default executor's,
    or a store driver's) would make ``asyncio.run`` and then the interpreter's exit wait for it forever: after
    ``CLOSE_TIMEOUT_S`` the process exits without it (the command's work is durable by then)."""
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="worker")
    loop.set_default_executor(executor)
    try:
        rc: int = loop.run_until_complete(main)
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        loop.close()
    if _unclean.is_set() or not _threads_end_within(CLOSE_TIMEOUT_S):
        log.warning("a thread did not finish within %.0f s of the end: exiting without it", CLOSE_TIMEOUT_S)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _threads_end_within(timeout_s: float) -> bool:
    """Whether every non-daemon thread (the ones the interpreter joins at exit) ends within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return False
    return True


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inplay.worker")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="consume result messages (and serve gRPC with --grpc-port)")
    serve.add_argument("--grpc-port", type=int, default=None)
    for name in ("settle", "resettle"):
        s = sub.add_parser(name)
        s.add_argument("--event", required=True)
        s.add_argument("--request-id", required=True)
        s.add_argument("--outcome", action="append", help="MARKET:SELECTION:RESULT[:N/D]")
        s.add_argument("--void", action="append", help="a market voided as a whole")
        s.add_argument("--reason", default="")
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
    sub.add_parser("changelog", help="write the feed's market change log from the odds topics")
    return p


def main(argv: list[str] | None = None, *, wrap: PortsWrap | None = None) -> int:
    """``wrap``: tests only (fault injection through the ports, tests/support/crash_worker.py)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    start = time.perf_counter()
    rc = _run(_main(args, wrap))
    log.info("done in %.1f s", time.perf_counter() - start)
    return rc


if __name__ == "__main__":
    sys.exit(main())
