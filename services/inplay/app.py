"""Composition root: opens the stores (embedded or real) and wires domain objects to servicers.

Kept in one place so that every entry point (server, demo, tests, benchmarks) builds the same graph.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from inplay.adapters.deposit_keys import CassandraDepositKeys, MemoryDepositKeys
from inplay.config import Settings, StackSettings, setting_str
from inplay.domain.bets import BetPlacement
from inplay.domain.commit import (
    JournalWatermark,
    OrphanAdopter,
    Projector,
    ShardWriter,
    WriterConfig,
    writer_owner,
)
from inplay.domain.feed import changelog
from inplay.domain.feed.hub import OddsHub
from inplay.domain.feed.mapping import FeedMappingService, FeedMappingStore
from inplay.domain.feed.pipeline import FeedPipeline
from inplay.domain.feed.rules import FeedRules
from inplay.domain.journal import journal_tag
from inplay.domain.markets import ChangeRecorder, MarketChangeLog, MarketControl
from inplay.domain.settlement.consumer import ResultsConsumer
from inplay.domain.settlement.ports import LockService, SettlementStore
from inplay.domain.settlement.service import SettlementService
from inplay.domain.settlement.settings import SettlementConfig
from inplay.domain.wallet import DurableLimits, Wallet, ensure_projection_ready
from inplay.ports import TOPIC_BETS, DepositKeys, EventBus, Ledger, LiveOddsCache, WalletStore

if TYPE_CHECKING:
    from inplay.adapters.redis_wallet import RedisWallet


async def close_all(closers: list[Callable[[], Awaitable[None]]]) -> None:
    """Runs the closers in reverse order of opening; one failing never stops the others."""
    for closer in reversed(closers):
        try:
            await closer()
        except Exception:  # closing must go on for the other stores
            logging.getLogger("inplay.app").exception("error while closing")


@dataclass
class Runtime:
    settings: Settings
    odds: LiveOddsCache
    wallet_store: WalletStore
    ledger: Ledger
    bus: EventBus
    deposit_keys: DepositKeys
    placement: BetPlacement
    wallet: Wallet
    writer: ShardWriter
    projector: Projector
    bet_watermark: JournalWatermark
    # Feature components (odds pipeline, settlement) built by their own modules.
    components: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    health: Any = None

    async def close(self) -> None:
        await close_all(self.closers)


@dataclass
class _Stores:
    odds: LiveOddsCache
    wallet_store: WalletStore
    ledger: Ledger
    bus: EventBus
    deposit_keys: DepositKeys


def _memory_stores() -> _Stores:
    """The embedded twins (demo, fast tests): one process, nothing durable."""
    from inplay.adapters.memory import MemoryEventBus, MemoryLedger, MemoryWallet
    from inplay.adapters.memory_odds import MemoryOddsCache

    memory_odds = MemoryOddsCache()

    def market_status(market_id: str) -> Any:
        # The Redis debit script reads the odds cache's hash in the same Redis; this is its twin.
        state = memory_odds._markets.get(market_id)
        return None if state is None else state.status

    return _Stores(memory_odds, MemoryWallet(market_status), MemoryLedger(), MemoryEventBus(), MemoryDepositKeys())


async def _real_stores(stack: StackSettings, closers: list[Callable[[], Awaitable[None]]]) -> _Stores:
    """Redis (odds, wallet), Cassandra (ledger, deposit keys) and Kafka (bus); each closer is registered."""
    from inplay.adapters.cassandra_ledger import CassandraLedger
    from inplay.adapters.kafka_bus import KafkaEventBus, ensure_topics
    from inplay.adapters.redis_odds import RedisOddsCache

    redis_odds = await RedisOddsCache.connect(stack.redis_url, stack.redis_prefix)
    closers.append(redis_odds.close)
    redis_wallet = await _connect_wallet(stack)
    closers.append(redis_wallet.close)
    cassandra = await CassandraLedger.connect(list(stack.cassandra_hosts), stack.cassandra_port, stack.keyspace)
    closers.append(cassandra.close)
    await ensure_topics(stack.kafka_bootstrap, _topics(stack.topic_prefix))
    kafka = KafkaEventBus(stack.kafka_bootstrap, topic_prefix=stack.topic_prefix)
    closers.append(kafka.close)
    return _Stores(redis_odds, redis_wallet, cassandra, kafka, CassandraDepositKeys(cassandra.session))


def _topics(prefix: str) -> dict[str, int]:
    """Every topic the services produce to, with its partition count."""
    from inplay.ports import TOPIC_FEED_RAW, TOPIC_MARKET_CHANGES, TOPIC_ODDS, TOPIC_RESULTS, TOPIC_SETTLEMENTS

    return {
        prefix + TOPIC_ODDS: 12,
        prefix + TOPIC_BETS: 12,
        prefix + TOPIC_SETTLEMENTS: 12,
        prefix + TOPIC_RESULTS: 12,
        prefix + TOPIC_FEED_RAW: 3,
        prefix + TOPIC_MARKET_CHANGES: 12,
        prefix + TOPIC_RESULTS + ".dlq": 3,  # parked poison results (docs/settlement.md)
        prefix + "inplay.feed.recovery.v1": 3,  # recovery requests to provider adapters
    }


@dataclass
class MoneyStores:
    """What an operator's money command needs: the wallet projection and the ledger (with this
    deployment's journal). No bet path, no writer shard, no consumers, no odds pipeline: a repair run from
    the command line must not claim a journal shard, rebuild the projection a second time at start, or wait
    on a Kafka group to close."""

    wallet_store: WalletStore
    ledger: Ledger
    closers: list[Callable[[], Awaitable[None]]]

    async def close(self) -> None:
        await close_all(self.closers)


async def _connect_wallet(stack: StackSettings) -> RedisWallet:
    from inplay.adapters.redis_wallet import RedisWallet

    return await RedisWallet.connect(
        stack.redis_url,
        stack.redis_prefix,
        wait_replicas=stack.redis_wait_replicas,
        wait_timeout_ms=stack.redis_wait_timeout_ms,
    )


async def open_money_stores(stack: StackSettings) -> MoneyStores:
    """Redis wallet + Cassandra ledger of the real stack (the operator CLI's reconcile)."""
    from inplay.adapters.cassandra_ledger import CassandraLedger

    closers: list[Callable[[], Awaitable[None]]] = []
    wallet = await _connect_wallet(stack)
    closers.append(wallet.close)
    try:
        cassandra = await CassandraLedger.connect(list(stack.cassandra_hosts), stack.cassandra_port, stack.keyspace)
    except BaseException:
        await wallet.close()
        raise
    closers.append(cassandra.close)
    return MoneyStores(wallet, cassandra.with_journal(stack.redis_prefix), closers)


async def open_runtime(settings: Settings) -> Runtime:
    stack = settings.stack
    closers: list[Callable[[], Awaitable[None]]] = []
    stores = _memory_stores() if stack.embedded else await _real_stores(stack, closers)
    odds, wallet_store, ledger, bus = stores.odds, stores.wallet_store, stores.ledger, stores.bus
    deposit_keys = stores.deposit_keys
    bet_path = await open_bet_path(
        odds,
        wallet_store,
        ledger,
        bus,
        settings.bets,
        settings.journal,
        settings.stack.redis_prefix,
        settings.stack.topic_prefix,
    )
    closers.append(bet_path.close)
    writer, projector, placement = bet_path.writer, bet_path.projector, bet_path.placement
    ledger = bet_path.ledger
    # Settlement reads bets by event only once the views cover the journal (docs/ledger.md).
    bet_watermark = JournalWatermark(wallet_store, ledger, settings.journal.shards)
    wallet = Wallet(wallet_store, ledger, deposit_keys, settings.bets.currency)
    runtime = Runtime(
        settings=settings,
        odds=odds,
        wallet_store=wallet_store,
        ledger=ledger,
        bus=bus,
        deposit_keys=deposit_keys,
        placement=placement,
        wallet=wallet,
        writer=writer,
        projector=projector,
        bet_watermark=bet_watermark,
        closers=closers,
    )
    await _open_features(runtime)
    return runtime


@dataclass
class BetPath:
    """The bet acceptance path of one process: the use case, its journal writer and the projector."""

    placement: BetPlacement
    writer: ShardWriter
    projector: Projector
    # The ledger bound to this deployment's journal (named by its wallet projection).
    ledger: Ledger
    adopter: OrphanAdopter

    async def caught_up(self, timeout_s: float = 10.0) -> None:
        """Waits until the views and the outbox cover every batch this writer finished (tests, drains)."""
        import asyncio

        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.projector.checkpoint < self.writer.head_slot or self.projector.backlog:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"projection at {self.projector.checkpoint}, journal at {self.writer.head_slot}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.adopter.stop()
        await self.writer.stop()  # drains the batch in flight first
        await self.projector.stop()


async def open_bet_path(
    odds: Any,
    wallet_store: WalletStore,
    ledger: Ledger,
    bus: EventBus,
    rules: Any,
    journal: Any,
    projection: str,
    topic_prefix: str,
    *,
    owner: str | None = None,
) -> BetPath:
    """The journal writer of this process and the projector of its shard (views + BetPlaced outbox).
    The wallet projection is checked (and rebuilt if it lost its data) before the writer takes a slip."""
    ledger = ledger.with_journal(projection)
    await ensure_projection_ready(wallet_store, ledger, projection, journal.shards)
    projector = Projector(ledger, bus, topic_prefix + TOPIC_BETS)
    config = WriterConfig(
        tag=journal_tag(projection),
        shards=journal.shards,
        max_batch=journal.max_batch,
        max_queue=journal.max_queue,
        lease_ttl_ms=journal.lease_ttl_ms,
        commit_timeout_s=journal.commit_timeout_s,
    )
    owner = owner or writer_owner()
    writer = ShardWriter(wallet_store, ledger, config, owner=owner, on_batch=projector.offer)
    await writer.start()
    await projector.start(writer.shard, writer.head_slot)
    topic = topic_prefix + TOPIC_BETS
    adopter = OrphanAdopter(wallet_store, ledger, bus, topic, config, owner=owner, period_s=journal.adopt_period_s)
    adopter.start()
    return BetPath(BetPlacement(odds, wallet_store, writer, rules, ledger), writer, projector, ledger, adopter)


async def _open_features(runtime: Runtime) -> None:
    """Odds pipeline (feed, suspension, streaming) and settlement components."""
    odds = await open_odds(runtime)
    settlement = await open_settlement(runtime, mark_settled=odds.control.settle)
    runtime.components["settlement"] = settlement
    runtime.closers.append(settlement.close)


# ---------------------------------------------------------------------------------------------------------
# Odds pipeline wiring (feed ingest, suspension, StreamOdds hub, change log, mapping table): owned by the odds
# work; kept in this one block to ease merges.
# ---------------------------------------------------------------------------------------------------------


@dataclass
class OddsComponents:
    hub: OddsHub
    control: MarketControl
    changes: MarketChangeLog
    mappings: FeedMappingService
    pipeline: FeedPipeline
    mapping_store: FeedMappingStore

    async def close(self) -> None:
        await self.pipeline.stop()
        await self.hub.close()


def odds_stores(
    odds: LiveOddsCache, prefix: str, cassandra_session: Any = None
) -> tuple[MarketChangeLog, FeedMappingStore]:
    """The change log (Cassandra, or memory when embedded) and the mapping store beside the odds cache."""
    changes: MarketChangeLog
    store: FeedMappingStore
    if cassandra_session is not None:
        from inplay.adapters.cassandra_changes import CassandraMarketChangeLog

        changes = CassandraMarketChangeLog(cassandra_session)
    else:
        from inplay.adapters.memory_odds import MemoryMarketChangeLog

        changes = MemoryMarketChangeLog()
    client = getattr(odds, "client", None)
    if client is not None:
        from inplay.adapters.redis_odds import RedisFeedMappings

        store = RedisFeedMappings(client, prefix)
    else:
        from inplay.adapters.memory_odds import MemoryFeedMappings

        store = MemoryFeedMappings()
    return changes, store


def feed_log_from_bus(cassandra_session: Any) -> bool:
    """``INPLAY_FEED_CHANGE_LOG=kafka`` on a real stack: the change-log writer derives the feed's rows from
    Kafka (an embedded demo has no writer: it always logs inline)."""
    mode = setting_str("INPLAY_FEED_CHANGE_LOG")
    if mode not in changelog.MODES:
        raise ValueError(f"INPLAY_FEED_CHANGE_LOG must be one of {changelog.MODES}, not {mode!r}")
    return mode == changelog.KAFKA and cassandra_session is not None


async def open_odds_components(
    odds: LiveOddsCache,
    bus: EventBus,
    stack: StackSettings,
    cassandra_session: Any = None,
    rules: FeedRules | None = None,
    start_watchdog: bool = True,
) -> OddsComponents:
    """The odds pipeline's objects over the given odds cache and bus (``cassandra_session`` None: a memory
    change log)."""
    changes, store = odds_stores(odds, stack.redis_prefix, cassandra_session)
    mappings = FeedMappingService(store)
    await mappings.refresh()
    control = MarketControl(
        odds, ChangeRecorder(changes, bus, stack.topic_prefix, log_from_bus=feed_log_from_bus(cassandra_session))
    )
    pipeline = FeedPipeline(odds, bus, mappings, control, rules or FeedRules.from_env(), stack.topic_prefix)
    if start_watchdog:
        pipeline.start()
    return OddsComponents(OddsHub(odds), control, changes, mappings, pipeline, store)


async def open_odds(runtime: Runtime) -> OddsComponents:
    """Opens the odds components of ``runtime`` (and loads ``INPLAY_FEED_MAPPING_FILE`` when set)."""
    session = getattr(runtime.ledger, "session", None)
    odds = await open_odds_components(runtime.odds, runtime.bus, runtime.settings.stack, cassandra_session=session)
    runtime.components["odds"] = odds
    runtime.components["feed_mappings"] = odds.mappings
    mapping_file = setting_str("INPLAY_FEED_MAPPING_FILE")
    if mapping_file:
        # Provider id mapping table loaded at startup (also: python -m inplay.cli mapping load FILE).
        import asyncio
        import json
        from pathlib import Path

        document = json.loads(await asyncio.to_thread(Path(mapping_file).read_text, encoding="utf-8"))
        await odds.mappings.load(document)
    runtime.components["market_control"] = odds.control
    runtime.closers.append(odds.close)
    return odds


async def open_mapping_store(stack: StackSettings) -> tuple[FeedMappingService, Callable[[], Awaitable[None]]]:
    """The mapping table of the real stack, for the CLI (a Redis connection of its own; close it after)."""
    from inplay.adapters.redis_odds import RedisFeedMappings

    store = await RedisFeedMappings.connect(stack.redis_url, stack.redis_prefix)
    return FeedMappingService(store), store.close


# --------------------------------------------------------------------------------- end of the odds block


# ========================================================================================================
# Settlement (docs/settlement.md): its store, the event lease, the service and the results consumer.
# The worker (python -m inplay.worker) and the server both build it here.
# ========================================================================================================


@dataclass
class SettlementPorts:
    """What the settlement service runs over; ``open_settlement(wrap=...)`` lets a test wrap them (the crash
    tests inject an exit at a chosen write, tests/support/crash_worker.py)."""

    store: SettlementStore
    ledger: Ledger
    wallet: WalletStore
    bus: EventBus
    locks: LockService


@dataclass
class SettlementComponents:
    service: SettlementService
    store: SettlementStore
    locks: LockService
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        await self.service.drain(timeout_s=10.0)
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:  # closing must go on for the other stores
                logging.getLogger("inplay.app").exception("error while closing settlement")


async def open_settlement(
    runtime: Runtime,
    *,
    config: SettlementConfig | None = None,
    mark_settled: Callable[[Sequence[str]], Awaitable[object]] | None = None,
    wrap: Callable[[SettlementPorts], SettlementPorts] | None = None,
) -> SettlementComponents:
    """The settlement service over the runtime's stores (real or embedded)."""
    ports, closers = _settlement_ports(runtime)
    if wrap is not None:
        ports = wrap(ports)
    if mark_settled is None and "market_control" in runtime.components:
        mark_settled = runtime.components["market_control"].settle
    service = SettlementService(
        ports.store,
        ports.ledger,
        ports.wallet,
        ports.bus,
        ports.locks,
        mark_settled=mark_settled,
        config=config or SettlementConfig.from_env(runtime.settings.stack.topic_prefix),
        markets=runtime.odds,  # results are validated against the odds cache's markets
        bet_watermark=runtime.bet_watermark,  # bets visible up to the close (the journal's projection)
    )
    return SettlementComponents(service, ports.store, ports.locks, closers)


def _settlement_ports(runtime: Runtime) -> tuple[SettlementPorts, list[Callable[[], Awaitable[None]]]]:
    stack = runtime.settings.stack
    if stack.embedded:
        from inplay.adapters.memory_settlement import MemoryLocks, MemorySettlementStore

        store: SettlementStore = MemorySettlementStore(runtime.ledger)
        ports = SettlementPorts(store, runtime.ledger, runtime.wallet_store, runtime.bus, MemoryLocks())
        return ports, []
    from inplay.adapters.cassandra_settlement import CassandraSettlementStore
    from inplay.adapters.redis_lease import RedisLocks

    store = CassandraSettlementStore.for_ledger(runtime.ledger)  # counts bets for progress totals
    locks = RedisLocks.connect(stack.redis_url, stack.redis_prefix)
    return SettlementPorts(store, runtime.ledger, runtime.wallet_store, runtime.bus, locks), [locks.close]


def open_results_consumer(runtime: Runtime, service: SettlementService) -> ResultsConsumer | None:
    """The consumer of ``inplay.results.v1`` (None without Kafka: the embedded stack)."""
    stack = runtime.settings.stack
    if not stack.kafka_bootstrap:
        return None
    from inplay.adapters.kafka_results import KafkaResultsSource
    from inplay.ports import TOPIC_RESULTS

    topic = stack.topic_prefix + TOPIC_RESULTS
    group = stack.topic_prefix + "inplay-settlement"
    return ResultsConsumer(
        service, lambda: KafkaResultsSource(stack.kafka_bootstrap, group, topic), topic, bus=runtime.bus
    )


def open_change_log_writer(runtime: Runtime) -> tuple[changelog.ChangeLogWriter, Callable[[], Awaitable[Any]]]:
    """The change-log writer over the runtime's change log, and the factory of its Kafka consumer (group
    ``inplay-changelog``) of the odds and market-changes topics."""
    stack = runtime.settings.stack
    session = getattr(runtime.ledger, "session", None)
    if not stack.kafka_bootstrap or session is None:
        raise ValueError("the change-log writer needs Kafka and Cassandra (INPLAY_KAFKA_BOOTSTRAP, a Cassandra ledger)")
    from inplay.adapters.kafka_bus import KafkaConsumerLoop
    from inplay.ports import TOPIC_MARKET_CHANGES, TOPIC_ODDS

    changes, _ = odds_stores(runtime.odds, stack.redis_prefix, session)
    topics = [stack.topic_prefix + TOPIC_ODDS, stack.topic_prefix + TOPIC_MARKET_CHANGES]
    group = stack.topic_prefix + "inplay-changelog"

    async def open_source() -> KafkaConsumerLoop:
        return KafkaConsumerLoop(stack.kafka_bootstrap, group, topics, batch_size=2_000)

    return changelog.ChangeLogWriter(changes), open_source


def register_services(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Adds every servicer to ``server``; returns the full service names (for health and reflection)."""
    from inplay.admin.v1 import admin_pb2
    from inplay.bets.v1 import bets_pb2
    from inplay.feed.v1 import feed_pb2
    from inplay.odds.v1 import odds_pb2
    from inplay.servicers import admin as admin_servicer
    from inplay.servicers import bets as bets_servicer
    from inplay.servicers import feed as feed_servicer
    from inplay.servicers import odds as odds_servicer
    from inplay.servicers import settlement as settlement_servicer
    from inplay.servicers import wallet as wallet_servicer
    from inplay.settlement.v1 import settlement_pb2
    from inplay.wallet.v1 import wallet_pb2

    odds = runtime.components["odds"]
    # Each role is a deployable unit (k8s/): one image, INPLAY_SERVICES picks what a pod serves.
    roles: dict[str, tuple[Any, str, Callable[[], object]]] = {
        "bets": (
            bets_pb2,
            "BetService",
            lambda: bets_servicer.add_to_server(server, runtime.placement, runtime.ledger),
        ),
        "wallet": (
            wallet_pb2,
            "WalletService",
            lambda: wallet_servicer.add_to_server(server, runtime.wallet, runtime.ledger),
        ),
        "odds": (odds_pb2, "OddsService", lambda: odds_servicer.add_to_server(server, runtime.odds, odds.hub)),
        "feed": (feed_pb2, "FeedService", lambda: feed_servicer.add_to_server(server, odds.pipeline)),
        "admin": (
            admin_pb2,
            "AdminService",
            lambda: admin_servicer.add_to_server(
                server, odds.control, odds.changes, DurableLimits(runtime.wallet_store, runtime.ledger)
            ),
        ),
        "settlement": (
            settlement_pb2,
            "SettlementService",
            lambda: settlement_servicer.add_to_server(server, runtime.components["settlement"].service),
        ),
    }
    wanted = [r.strip() for r in setting_str("INPLAY_SERVICES", ",".join(roles)).split(",") if r.strip()]
    unknown = set(wanted) - set(roles)
    if unknown:
        raise ValueError(f"INPLAY_SERVICES names unknown roles {sorted(unknown)}; known: {sorted(roles)}")
    names = []
    for role in wanted:
        module, service, register = roles[role]
        register()
        names.append(module.DESCRIPTOR.services_by_name[service].full_name)
    return names


# ------------------------------------------------------------------ stores for the operational entry points


async def open_journal_reader(settings: Settings) -> tuple[Ledger, Callable[[], Awaitable[None]]]:
    """The real ledger of this deployment's journal (``inplay.audit verify``) and how to close it."""
    from inplay.adapters.cassandra_ledger import CassandraLedger

    stack = settings.stack
    ledger = await CassandraLedger.connect(list(stack.cassandra_hosts), stack.cassandra_port, stack.keyspace)
    return ledger.with_journal(stack.redis_prefix), ledger.close


def run_migrations(hosts: list[str], port: int, keyspace: str, *, replication: str | None, status: bool) -> list[str]:
    """Applies the pending CQL migrations (or lists them with ``status``); returns the lines to print."""
    from cassandra.cluster import Cluster
    from cassandra.policies import DCAwareRoundRobinPolicy

    from inplay.adapters import migrations

    cluster = Cluster(hosts, port=port, protocol_version=5, load_balancing_policy=DCAwareRoundRobinPolicy(),
                      connect_timeout=5)  # fmt: skip
    try:
        session = cluster.connect()
        if status:
            return migrations.status_lines(session, keyspace)
        applied = migrations.migrate(session, keyspace, replication=replication)
        return [f"keyspace {keyspace}: {len(applied)} migration(s) applied"] + [
            f"  {m.version:04d}_{m.name}" for m in applied
        ]
    finally:
        cluster.shutdown()
