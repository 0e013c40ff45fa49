"""Odds pipeline benchmark against the real stack (Redis, Kafka, Cassandra), with same-run baselines.

1. Ingest throughput: N alpha price updates over M markets through the whole pipeline (parse, validate,
   normalize, enrich, one Lua call + one produce batch per chunk, change log), vs the same number of
   payloads written straight to Redis (HSET + PUBLISH, pipelined per chunk) and produced straight to Kafka.
2. StreamOdds fan-out: a server process (OddsService + hub) and S concurrent subscribers on one event (in
   this process); updates go through the pipeline at a steady rate; latency = client receive time minus
   the update's provider timestamp (set to the wall clock when the update is ingested).

    set -a; . .stack/env; set +a
    .venv/bin/python perf/bench_odds.py                 # defaults: 50k updates, 100 subscribers
    .venv/bin/python perf/bench_odds.py --updates 20000 --subscribers 50 --skip-changelog
    .venv/bin/python perf/bench_odds.py --updates 20000 --skip-fanout --profile perf/results/odds.prof
                                         # cProfile of the pipeline run only (baselines not profiled)
    .venv/bin/python perf/bench_odds.py --skip-fanout --change-log both
                                         # the change log inline (baseline), then from Kafka by the writer

``--change-log kafka`` (the default since the tenth round, as k8s's feed-ingest runs): the pipeline leaves its
change rows to the change-log writer
(INPLAY_FEED_CHANGE_LOG=kafka); after the ingest the writer consumes the odds topics until every record is
written; ``both`` checks that the two logs hold the same number of rows.

Writes perf/results/odds.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))
sys.path.insert(0, str(ROOT / "perf"))

from scenarios import cpu  # noqa: E402

from inplay.adapters.memory_odds import MemoryMarketChangeLog  # noqa: E402
from inplay.adapters.redis_odds import RedisFeedMappings, RedisOddsCache  # noqa: E402
from inplay.core import Odds  # noqa: E402
from inplay.domain.feed import wire  # noqa: E402
from inplay.domain.feed.mapping import FeedMappingService  # noqa: E402
from inplay.domain.feed.pipeline import FeedPipeline, RawMessage  # noqa: E402
from inplay.domain.feed.rules import FeedRules  # noqa: E402
from inplay.domain.markets import ChangeRecorder, MarketChangeLog, MarketControl  # noqa: E402
from inplay.odds.v1 import odds_pb2, odds_pb2_grpc  # noqa: E402
from inplay.ports import TOPIC_FEED_RAW, TOPIC_MARKET_CHANGES, TOPIC_ODDS, EventBus  # noqa: E402

HOME = ("2.00", "2.02", "2.04", "2.02")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"{name} is not set: run `set -a; . .stack/env; set +a` first (./dev up)")
    return value


def mapping(events: int, tag: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"events": []}
    for i in range(events):
        doc["events"] += wire.two_provider_mapping(f"{tag}-ev{i}", f"{tag}-A{i}", 10_000 + i)["events"]
    return doc


def updates(events: int, n: int, t0: int, all_move: bool = False) -> list[RawMessage]:
    """n alpha price messages round-robin over the events' two markets, timestamps increasing. By default
    one selection of each market moves per update; ``all_move``: every selection moves (a live 1X2 ladder
    moves together: 3 + 2 PRICE entries per pair of updates instead of 1 + 1)."""
    out = []
    for k in range(n):
        i = k % events
        a = f"A{i}"
        other = HOME[(k // events + 1) % 4] if all_move else ""
        ts = t0 + k // (2 * events) * 10 + 1
        if (k // events) % 2 == 0:
            payload = wire.alpha_odds(
                k + 1,
                ts,
                f"TAG-{a}",
                f"TAG-{a}-MR",
                {
                    f"TAG-{a}-MR-H": HOME[(k // events) % 4],
                    f"TAG-{a}-MR-D": f"3.4{other[-1]}" if other else "3.40",
                    f"TAG-{a}-MR-A": f"3.8{other[-1]}" if other else "3.80",
                },
            )
        else:
            payload = wire.alpha_odds(
                k + 1,
                ts,
                f"TAG-{a}",
                f"TAG-{a}-OU",
                {f"TAG-{a}-OU-O": HOME[(k // events) % 4], f"TAG-{a}-OU-U": f"1.8{other[-1]}" if other else "1.80"},
            )
        out.append(RawMessage("alpha", payload, ts + 5))
    return out


async def open_bus(bootstrap: str, prefix: str) -> EventBus:
    from inplay.adapters.kafka_bus import KafkaEventBus, ensure_topics

    await ensure_topics(bootstrap, {prefix + t: 3 for t in (TOPIC_ODDS, TOPIC_FEED_RAW, TOPIC_MARKET_CHANGES)})
    bus: EventBus = KafkaEventBus(bootstrap)
    return bus


async def change_log(use_cassandra: bool) -> tuple[MarketChangeLog, Any]:
    if not use_cassandra:
        return MemoryMarketChangeLog(), None
    from cassandra.cluster import Cluster

    from inplay.adapters.cassandra_changes import CassandraMarketChangeLog

    hosts = env("INPLAY_CASSANDRA_HOSTS").split(",")
    cluster = Cluster(hosts, port=int(os.environ.get("INPLAY_CASSANDRA_PORT", "9042")))
    session = cluster.connect()
    keyspace = f"bench_odds_{uuid.uuid4().hex[:8]}"
    session.execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
    )
    session.set_keyspace(keyspace)
    for name in ("0003_feed.cql", "0007_feed_change_rows.cql"):  # the change log's tables (the legacy one is read)
        path = ROOT / "services/inplay/adapters/cql" / name
        if not path.exists():  # a tree from before 0007 (a baseline run)
            continue
        cql = path.read_text()
        session.execute("\n".join(line for line in cql.splitlines() if not line.startswith("--")).strip().rstrip(";"))
    return CassandraMarketChangeLog(session), (cluster, session, keyspace)


async def baseline_redis(r: Any, prefix: str, bodies: list[bytes], args: argparse.Namespace) -> float:
    """The same number of market writes straight to Redis (HSET + PUBLISH, pipelined per chunk): seconds."""
    start = time.perf_counter()
    for c in range(0, len(bodies), args.chunk):
        p = r.pipeline(transaction=False)
        for k, body in enumerate(bodies[c : c + args.chunk], start=c):
            key = f"{prefix}raw:{k % (2 * args.events)}"
            p.hset(key, mapping={"v": k, "b": body})
            p.publish(f"{prefix}rawch:{k % args.events}", body)
        await p.execute()
    return time.perf_counter() - start


def baseline_kafka(bootstrap: str, topic_prefix: str, bodies: list[bytes], args: argparse.Namespace) -> float:
    """The same payloads produced straight to Kafka, one record per update keyed by market (as the pipeline's
    odds records), plus one reception-log record per chunk: seconds."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    start = time.perf_counter()
    for k, body in enumerate(bodies):
        while True:
            try:
                producer.produce(topic_prefix + TOPIC_ODDS, body, key=str(k % (2 * args.events)).encode())
                if k % args.chunk == 0:
                    producer.produce(topic_prefix + TOPIC_FEED_RAW, b"[" + b",".join(bodies[k : k + args.chunk]) + b"]")
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    return time.perf_counter() - start


async def run_writer(bootstrap: str, topic_prefix: str, log: MarketChangeLog, records: int) -> dict[str, Any]:
    """The change-log writer over this run's topics until ``records`` records are written: its rate, and
    every process's CPU per record meanwhile (the writer = this process)."""
    from inplay.adapters.kafka_bus import KafkaConsumerLoop
    from inplay.domain.feed.changelog import ChangeLogWriter

    loop = KafkaConsumerLoop(
        bootstrap, f"{topic_prefix}changelog", [topic_prefix + TOPIC_ODDS, topic_prefix + TOPIC_MARKET_CHANGES],
        batch_size=2_000,
    )  # fmt: skip
    writer = ChangeLogWriter(log)
    seen = 0
    joined = time.perf_counter()
    start = cpu0 = 0.0
    roles0: dict[str, float] = {}

    async def consume() -> None:
        nonlocal seen, start, cpu0, roles0
        async for batch in loop.batches():
            if not seen:  # timed from the first batch (the group join is not the writer's cost)
                start, cpu0, roles0 = time.perf_counter(), time.process_time(), cpu.snapshot(())
            seen += len(batch)
            await writer.write([value for _, value in batch])
            if seen >= records:
                return

    await asyncio.wait_for(consume(), 300)
    elapsed = time.perf_counter() - start
    after = cpu.snapshot(())
    after["server"] = time.process_time() - cpu0
    roles = cpu.per_bet({**roles0, "server": 0.0}, after, records)
    roles.pop("ghz", None)
    await loop.close()
    return {
        "records": seen,
        "entries": writer.entries,
        "skipped": writer.skipped,
        "group_join_s": round(start - joined, 2),
        "writer_records_per_s": round(records / elapsed),
        "cpu_us_per_record_by_process": {("writer" if k == "server" else k): v for k, v in roles.items()},
    }


async def bench_ingest(args: argparse.Namespace, redis_url: str, bootstrap: str) -> dict[str, Any]:
    tag = f"b{uuid.uuid4().hex[:6]}"
    prefix = f"bench:{tag}:"
    topic_prefix = f"bench.{tag}."
    cache = await RedisOddsCache.connect(redis_url, prefix)
    bus = await open_bus(bootstrap, topic_prefix)
    log, cass = await change_log(not args.skip_changelog)
    mappings = FeedMappingService(RedisFeedMappings(cache.client, prefix))
    await mappings.load(json.loads(json.dumps(mapping(args.events, "TAG")).replace("TAG", tag)))
    from_bus = args.change_log == "kafka" and cass is not None
    control = MarketControl(cache, ChangeRecorder(log, bus, topic_prefix, log_from_bus=from_bus))
    rules = FeedRules(chunk_size=args.chunk, lag_inplay_ms=10**9, failover_lag_ms=10**9, heartbeat_timeout_ms=10**9)
    pipe = FeedPipeline(cache, bus, mappings, control, rules, topic_prefix)
    msgs = [
        RawMessage(m.provider, m.payload.replace(b"TAG", tag.encode()), m.received_at_ms)
        for m in updates(args.events, args.updates, now_ms() - 600_000, args.all_move)
    ]
    # warm-up (scripts loaded, connections open) on a separate slice of markets is not needed: first chunk
    if args.gc == "server":  # the collector as the server runs it (IngestOdds runs the pipeline there)
        from inplay.server import tune_gc

        tune_gc()
    prof = cProfile.Profile() if args.profile else None
    cpu0 = time.process_time()
    roles0 = cpu.snapshot(())
    start = time.perf_counter()
    if prof is not None:
        prof.enable()
    summary = await pipe.ingest(msgs)
    await bus.flush()
    if prof is not None:
        prof.disable()
    pipeline_s = time.perf_counter() - start
    pipeline_cpu_s = time.process_time() - cpu0
    # Every process's CPU per update by role ("server" = this process: the pipeline), and the rate bound the
    # sum implies on this box's cores: the stores share the two cores with the pipeline.
    # (the snapshot leaves this process out: its own CPU is process_time's).
    after = cpu.snapshot(())
    after["server"] = pipeline_cpu_s
    roles = cpu.per_bet({**roles0, "server": 0.0}, after, len(msgs))
    roles.pop("ghz", None)
    if prof is not None:
        prof.dump_stats(args.profile)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(
            "pipeline.py|redis_odds|cassandra_changes|kafka_bus|markets.py|providers", 25
        )
    assert summary.accepted == len(msgs), (summary.accepted, dict(summary.rejected))
    # Before the baselines: the Kafka baseline produces to this run's odds topic too.
    writer = await run_writer(bootstrap, topic_prefix, log, len(msgs)) if from_bus else None
    rows = None
    if cass is not None:  # a row per applied update that changed something, whoever wrote it ("both" compares)
        rows = cass[1].execute("SELECT COUNT(*) FROM market_change_rows", timeout=120).one()[0]

    redis_s = await baseline_redis(cache.client, prefix, [m.payload for m in msgs], args)
    kafka_s = baseline_kafka(bootstrap, topic_prefix, [m.payload for m in msgs], args)
    await bus.close()
    await cache.close()
    if cass is not None:
        cass[1].execute(f"DROP KEYSPACE {cass[2]}")
        cass[0].shutdown()
    n = len(msgs)
    return {
        "updates": n,
        "markets": 2 * args.events,
        "chunk": args.chunk,
        "change_log": "memory" if args.skip_changelog else ("cassandra, by the writer" if from_bus else "cassandra"),
        "change_log_rows": rows,
        "changelog_writer": writer,
        "gc": args.gc,
        "pipeline_updates_per_s": round(n / pipeline_s),
        "pipeline_seconds": round(pipeline_s, 3),
        # CPU of this process per update (client-side cost; less sensitive to a busy machine than the rate).
        "pipeline_cpu_us_per_update": round(pipeline_cpu_s / n * 1e6, 1),
        "cpu_us_per_update_by_process": {("pipeline" if k == "server" else k): v for k, v in roles.items()},
        "profiled": bool(args.profile),
        "baseline_redis_hset_publish_per_s": round(n / redis_s),
        # the pipeline now sends one odds record per update (+ one reception-log record per chunk)
        "baseline_kafka_produce_1msg_per_update_per_s": round(n / kafka_s),
        "anomalies": dict(summary.anomalies),
    }


def serve(port: int, redis_url: str, prefix: str) -> None:
    async def main() -> None:
        from inplay.servicers import odds as odds_servicer

        cache = await RedisOddsCache.connect(redis_url, prefix)
        server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1000), ("grpc.so_reuseport", 0)])
        odds_servicer.add_to_server(server, cache)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"READY {bound}", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


async def bench_fanout(args: argparse.Namespace, redis_url: str, bootstrap: str) -> dict[str, Any]:
    tag = f"f{uuid.uuid4().hex[:6]}"
    prefix = f"bench:{tag}:"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--prefix",
        prefix,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "services")},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        port = int(line.split()[1])
        cache = await RedisOddsCache.connect(redis_url, prefix)
        bus = await open_bus(bootstrap, f"bench.{tag}.")
        mappings = FeedMappingService(RedisFeedMappings(cache.client, prefix))
        await mappings.load(mapping(1, tag))
        control = MarketControl(cache, ChangeRecorder(MemoryMarketChangeLog(), bus, f"bench.{tag}."))
        pipe = FeedPipeline(cache, bus, mappings, control, FeedRules(), f"bench.{tag}.")
        event = f"{tag}-ev0"
        a = f"{tag}-A0"
        seq = 0

        async def push(home: str) -> None:
            nonlocal seq
            seq += 1
            ts = now_ms()
            body = wire.alpha_odds(seq, ts, a, f"{a}-MR", {f"{a}-MR-H": home, f"{a}-MR-D": "3.40", f"{a}-MR-A": "3.80"})
            await pipe.ingest([RawMessage("alpha", body, ts)])

        await push("2.00")
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(max(1, args.subscribers // 25))]
        latencies: list[int] = []
        received = [0]
        coalesced = [0]
        ready = asyncio.Semaphore(0)

        async def subscriber(i: int) -> None:
            stub = odds_pb2_grpc.OddsServiceStub(channels[i % len(channels)])
            call = stub.StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[event]))
            first = True
            while (msg := await call.read()) is not grpc.aio.EOF:
                assert isinstance(msg, odds_pb2.StreamOddsResponse)
                now = now_ms()
                if first:
                    first = False
                    ready.release()
                    continue
                coalesced[0] += msg.coalesced_updates
                for m in msg.markets:
                    latencies.append(now - m.updated_at.ToMilliseconds())
                    received[0] += 1

        tasks = [asyncio.create_task(subscriber(i)) for i in range(args.subscribers)]
        for _ in range(args.subscribers):
            await asyncio.wait_for(ready.acquire(), 30)
        interval = 1 / args.rate
        sent = 0
        start = time.perf_counter()
        while time.perf_counter() - start < args.duration:
            await push(HOME[sent % 4])
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * interval - time.perf_counter()))
        await asyncio.sleep(1.0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()
        await bus.close()
        await cache.close()
        lat = sorted(latencies)

        def pct(p: float) -> int:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else -1

        return {
            "subscribers": args.subscribers,
            "updates_sent": sent,
            "rate_per_s": args.rate,
            "deliveries": received[0],
            "expected_deliveries": sent * args.subscribers,
            "coalesced_updates": coalesced[0],
            "latency_ms_p50": pct(0.50),
            "latency_ms_p99": pct(0.99),
            "latency_ms_max": lat[-1] if lat else -1,
            "latency_ms_mean": round(statistics.fmean(lat), 2) if lat else -1,
        }
    finally:
        proc.terminate()
        await proc.wait()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


async def bench_grid(args: argparse.Namespace, redis_url: str, rate_factor: float = 1.0) -> dict[str, Any]:
    """StreamOdds at the issue's shape: ``--grid-subscribers`` subscribers spread over ``--grid-events`` events
    (one server process), ``--grid-markets`` markets per event each updated ``rate_factor`` times a second
    (written straight through the cache's price script, stamped with the wall clock); ``--grid-slow`` of the
    subscribers read their SNAPSHOT and then never read again. Reports the latency (receive - updated_at)
    of the reading subscribers, deliveries/s, coalesced updates and the server's RSS."""
    tag = f"g{uuid.uuid4().hex[:6]}"
    prefix = f"bench:{tag}:"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--prefix",
        prefix,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "services")},
    )
    from inplay.model import SelectionPrice
    from inplay.ports import PriceWrite

    try:
        assert proc.stdout is not None
        port = int((await asyncio.wait_for(proc.stdout.readline(), 60)).decode().split()[1])
        cache = await RedisOddsCache.connect(redis_url, prefix)
        events = [f"{tag}-e{e}" for e in range(args.grid_events)]
        markets = [(ev, f"{ev}:m{j}") for ev in events for j in range(args.grid_markets)]
        last_ts: dict[str, int] = {}

        def write(ev: str, mid: str, k: int) -> PriceWrite:
            ts = max(now_ms(), last_ts.get(mid, 0) + 1)
            last_ts[mid] = ts
            sels = (SelectionPrice("h", "Home", Odds(200 + k % 7, 100)), SelectionPrice("a", "Away", Odds(180, 100)))
            return PriceWrite(mid, ev, "football", "MATCH_RESULT", mid, True, sels, ts, ts, "bench")

        await cache.write_prices([write(ev, mid, 0) for ev, mid in markets])
        rss_idle = _rss_kb(proc.pid)
        n_subs, n_slow = args.grid_subscribers, args.grid_slow
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(max(1, n_subs // 50))]
        latencies: list[int] = []
        counts = {"deliveries": 0, "coalesced": 0}
        ready = asyncio.Semaphore(0)
        measuring = [False]

        async def subscriber(i: int) -> None:
            stub = odds_pb2_grpc.OddsServiceStub(channels[i % len(channels)])
            call = stub.StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[events[i % len(events)]]))
            await call.read()  # the SNAPSHOT: attached
            ready.release()
            if i < n_slow:
                await asyncio.Event().wait()  # never reads again
            while (msg := await call.read()) is not grpc.aio.EOF:
                assert isinstance(msg, odds_pb2.StreamOddsResponse)
                if not measuring[0]:
                    continue
                now = now_ms()
                counts["coalesced"] += msg.coalesced_updates
                for m in msg.markets:
                    latencies.append(now - m.updated_at.ToMilliseconds())
                counts["deliveries"] += len(msg.markets)

        tasks = [asyncio.create_task(subscriber(i)) for i in range(n_subs)]
        for _ in range(n_subs):
            await asyncio.wait_for(ready.acquire(), 120)
        rss_attached = _rss_kb(proc.pid)
        per_s = len(markets) * rate_factor
        tick = 0.05
        sent = 0
        measuring[0] = True
        start = time.perf_counter()
        k = 0
        while time.perf_counter() - start < args.grid_duration:
            due = int((time.perf_counter() - start + tick) * per_s) - sent
            batch = []
            for _ in range(max(0, due)):
                ev, mid = markets[k % len(markets)]
                batch.append(write(ev, mid, k))
                k += 1
            if batch:
                await cache.write_prices(batch)
                sent += len(batch)
            await asyncio.sleep(max(0.0, start + (sent / per_s) - time.perf_counter()))
        elapsed = time.perf_counter() - start
        await asyncio.sleep(1.0)
        measuring[0] = False
        rss_end = _rss_kb(proc.pid)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()
        await cache.close()
        lat = sorted(latencies)

        def pct(p: float) -> int:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else -1

        readers = n_subs - n_slow
        return {
            "subscribers": n_subs,
            "never_reading": n_slow,
            "events": len(events),
            "markets_per_event": args.grid_markets,
            "updates_per_s": round(sent / elapsed),
            "offered_deliveries_per_s": round(sent / elapsed * readers / len(events)),
            "deliveries_per_s": round(counts["deliveries"] / elapsed),
            "coalesced_updates": counts["coalesced"],
            "latency_ms_p50": pct(0.50),
            "latency_ms_p99": pct(0.99),
            "latency_ms_max": lat[-1] if lat else -1,
            "server_rss_mb": {
                "idle": round(rss_idle / 1024, 1),
                "subscribed": round(rss_attached / 1024, 1),
                "end": round(rss_end / 1024, 1),
            },
        }
    finally:
        proc.terminate()
        await proc.wait()


async def bench_interceptors(calls: int) -> dict[str, float]:
    """µs per call of each server interceptor (and the chain of all three, as inplay.server installs them)
    around a trivial unary handler, in process (best of 3 runs of ``calls``)."""
    from grpc_health.v1 import health_pb2

    from inplay.metrics import MetricsInterceptor
    from inplay.servicers.guard import InputGuard
    from inplay.tracing import TracingInterceptor

    meta = (("x-inplay-subject", "a"), ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))

    class Ctx:
        def code(self) -> None:
            return None

    class Details:
        method = "/grpc.health.v1.Health/Check"
        invocation_metadata = meta

    async def handler(req: Any, ctx: Any) -> Any:
        return health_pb2.HealthCheckResponse()

    base = grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
    )

    def chain(interceptors: list[Any]) -> Any:
        async def cont(d: Any) -> Any:
            return base

        for ic in reversed(interceptors):
            prev = cont

            async def cont(d: Any, ic: Any = ic, prev: Any = prev) -> Any:
                return await ic.intercept_service(prev, d)

        return cont

    out: dict[str, float] = {}
    for name, ics in (
        ("none", []),
        ("guard", [InputGuard()]),
        ("metrics", [MetricsInterceptor()]),
        ("tracing", [TracingInterceptor()]),
        ("all", [TracingInterceptor(), MetricsInterceptor(), InputGuard()]),
    ):
        c, best = chain(ics), float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(calls):
                h = await c(Details())
                h.response_serializer(await h.unary_unary(h.request_deserializer(b""), Ctx()))
            best = min(best, (time.perf_counter() - t) / calls * 1e6)
        out[f"{name}_us_per_call"] = round(best, 1)
    return out


def _protoset(path: Path) -> Path:
    """Descriptors of OddsService and grpc.health.v1 for ghz (the server's reflection does not resolve
    method-level symbols)."""
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2

    seen: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd: Any) -> None:
        if fd.name in seen:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        seen[fd.name] = proto

    for module in (odds_pb2, health_pb2):
        add(module.DESCRIPTOR)
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=list(seen.values())).SerializeToString())
    return path


async def bench_reads(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    """ghz GetMarket vs grpc.health.v1 Health/Check on the same ``python -m inplay.server`` (interceptors and
    all), at the same concurrency, one after the other; with ``--reads-baseline SERVICES_DIR`` the same on a
    server built from another tree (e.g. the lead's checkout: GetMarket reading Redis) in the same run."""
    sys.path.insert(0, str(ROOT / "perf"))
    from scenarios.common import server
    from scenarios.ghz import Load, run_ghz

    from inplay.model import MarketState, MarketStatus, SelectionPrice

    out_dir = Path(args.out).parent / "reads"
    out_dir.mkdir(parents=True, exist_ok=True)
    protoset = _protoset(out_dir / "odds.protoset")
    meta = {"x-inplay-subject": "acc-bench", "x-inplay-roles": "bettor"}
    load = Load(concurrency=args.reads_concurrency, duration_s=args.reads)
    trees = {"branch": ""}
    if args.reads_baseline:
        trees["baseline"] = args.reads_baseline
    result: dict[str, Any] = {"concurrency": load.concurrency, "duration_s": load.duration_s}
    for name, tree in trees.items():
        extra = {"PYTHONPATH": tree} if tree else None
        with server(out_dir, f"reads-{name}", extra) as srv:
            cache = await RedisOddsCache.connect(redis_url, srv.env["INPLAY_REDIS_PREFIX"])
            sels = tuple(SelectionPrice(f"s{i}", f"S{i}", Odds(200 + i, 100)) for i in range(3))
            await cache.put_markets(
                [
                    MarketState(
                        "m1",
                        "e1",
                        "football",
                        "MATCH_RESULT",
                        "Match",
                        True,
                        MarketStatus.ACTIVE,
                        "",
                        sels,
                        1,
                        now_ms(),
                        "bench",
                    )
                ]
            )
            await cache.close()
            runs = {}
            for label, call, data in (
                ("health", "grpc.health.v1.Health/Check", {}),
                ("get_market", "inplay.odds.v1.OddsService/GetMarket", {"market_id": "m1"}),
            ):
                r = run_ghz(f"{name}-{label}", call, srv.target, protoset, data, meta, load, out_dir).summary
                runs[label] = {k: r[k] for k in ("ok_per_s", "p50_ms", "p99_ms", "status")}
                # Every call reads a market that exists: any other answer is a defect, not noise.
                runs[label]["not_ok"] = sum(n for code, n in r["status"].items() if code != "OK")
            runs["get_market_vs_health"] = round(runs["get_market"]["ok_per_s"] / runs["health"]["ok_per_s"], 3)
            result[name] = runs
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = env("INPLAY_REDIS_URL")
    bootstrap = env("INPLAY_KAFKA_BOOTSTRAP")
    result: dict[str, Any] = {"machine_cores": os.cpu_count()}
    if not args.skip_ingest:
        modes = ["inline", "kafka"] if args.change_log == "both" else [args.change_log]
        for mode in modes:  # "both": the inline log first, the same-run baseline of the writer's
            key = "ingest" if mode == "inline" or len(modes) == 1 else "ingest_changelog_writer"
            run_args = argparse.Namespace(**{**vars(args), "change_log": mode})
            result[key] = await bench_ingest(run_args, redis_url, bootstrap)
            print(json.dumps(result[key], indent=2), flush=True)
        if len(modes) == 2:  # the same messages: the same log, whoever wrote it
            inline, kafka = result["ingest"]["change_log_rows"], result["ingest_changelog_writer"]["change_log_rows"]
            assert inline == kafka, f"change-log rows: inline {inline}, writer {kafka}"
    if not args.skip_fanout:
        result["fanout"] = await bench_fanout(args, redis_url, bootstrap)
        print(json.dumps(result["fanout"], indent=2), flush=True)
    if args.grid:
        result["grid"] = await bench_grid(args, redis_url)
        print(json.dumps(result["grid"], indent=2), flush=True)
        if args.grid_factor > 1:
            result["grid_x"] = await bench_grid(args, redis_url, args.grid_factor)
            print(json.dumps(result["grid_x"], indent=2), flush=True)
    if args.interceptors:
        result["interceptors"] = await bench_interceptors(args.interceptors)
        print(json.dumps(result["interceptors"], indent=2), flush=True)
    if args.reads:
        result["reads"] = await bench_reads(args, redis_url)
        print(json.dumps(result["reads"], indent=2), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=500, help="events (2 markets each) for the ingest run")
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--all-move", action="store_true", help="every selection moves on every update")
    parser.add_argument(
        "--gc", choices=("server", "default"), default="server", help="the server's collector thresholds, or CPython's"
    )
    parser.add_argument("--skip-changelog", action="store_true", help="memory change log instead of Cassandra")
    parser.add_argument(
        "--change-log", choices=("inline", "kafka", "both"), default="kafka",
        help="Cassandra change log written by the change-log writer from Kafka (the deployed feed-ingest's "
        "INPLAY_FEED_CHANGE_LOG, the default), by the pipeline itself (inline: the embedded demo's), or both runs",
    )  # fmt: skip
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="fan-out updates per second")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--profile", default="", help="write a cProfile of the pipeline ingest run to this file")
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--grid", action="store_true", help="StreamOdds at the issue's shape (see bench_grid)")
    parser.add_argument("--grid-subscribers", type=int, default=1000)
    parser.add_argument("--grid-slow", type=int, default=100)
    parser.add_argument("--grid-events", type=int, default=10)
    parser.add_argument("--grid-markets", type=int, default=10)
    parser.add_argument("--grid-duration", type=float, default=10.0)
    parser.add_argument("--grid-factor", type=float, default=10.0, help="then the same at this x the rate (1=skip)")
    parser.add_argument("--interceptors", type=int, default=0, help="calls per in-process interceptor cost run")
    parser.add_argument("--reads", type=int, default=0, help="seconds per ghz run of GetMarket vs Health/Check")
    parser.add_argument("--reads-concurrency", type=int, default=50)
    parser.add_argument("--reads-baseline", default="", help="services dir of a baseline tree for the reads")
    parser.add_argument("--out", default=str(ROOT / "perf/results/odds.json"))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(0, env("INPLAY_REDIS_URL"), args.prefix)
        return
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    failed = [f"{tree} {label}" for tree, runs in result.get("reads", {}).items() if isinstance(runs, dict)
              for label, r in runs.items() if isinstance(r, dict) and r.get("not_ok")]  # fmt: skip
    if failed:
        raise SystemExit(f"calls that did not answer OK: {', '.join(failed)} (see {out})")


if __name__ == "__main__":
    main()
