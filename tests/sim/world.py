"""One seed of the simulation: bettors, an operator settling and correcting events, and chaos, over the
memory stores, each process seeing them through fault-injecting ports (``tests.sim.ports``).

Phases (all in virtual time):

1. **chaos**: bettors place slips (retrying with the same key on every transient answer or lost reply),
   the operator settles each event, then maybe resettles and/or rolls back; meanwhile store calls fail
   (before or after their effect), are slow, and the bet processes, the settlement process and Redis die.
2. **calm**: faults stop, dead processes come back; every bettor and operator finishes its script.
3. **catch-up**: every process is restarted once more (recovery rolls intents forward), the views catch up
   with the journal, every event's runs are resumed.

Then ``tests.sim.invariants`` checks the money and exactly-once properties from the stores alone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from inplay.adapters import memory_settlement
from inplay.adapters.deposit_keys import MemoryDepositKeys
from inplay.adapters.memory import MemoryEventBus, MemoryLedger, MemoryWallet
from inplay.adapters.memory_settlement import MemoryLocks, MemorySettlementStore
from inplay.app import BetPath, open_bet_path
from inplay.config import BetRules, JournalSettings
from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.domain.bets import TRANSIENT_REASONS, PlacementResult
from inplay.domain.commit import JournalWatermark, wait_for_projection
from inplay.domain.settlement import Results, SettlementConfig, SettlementService, make_results
from inplay.domain.settlement.ids import settle_run_id
from inplay.domain.wallet import Wallet
from inplay.errors import Aborted, DomainError, FailedPrecondition
from inplay.model import BetRequest, EntryKind, LedgerEntry, Leg, MarketState, MarketStatus, SelectionPrice
from inplay.ports import Credit
from tests.sim.loop import EPOCH_S
from tests.sim.ports import Faults, Port, Proc

_T = TypeVar("_T")

PROJECTION = "sim"
TOPICS = "sim."
SHARDS = 2
DEPOSIT = 5_000
JOURNAL = JournalSettings(shards=SHARDS, max_batch=4, max_queue=6, commit_timeout_s=2.0, lease_ttl_ms=3_000)
RULES = BetRules(
    max_price_age_prematch_ms=10**12,
    max_price_age_inplay_ms=10**12,
    max_stake_minor=10_000,
    batch_window_ms=1.0,
    batch_max=4,
)
SETTLEMENT = SettlementConfig(page_size=3, multi_page_size=2, lock_ttl_ms=3_000, lock_wait_ms=200)
CALL_DEADLINE_S = 5.0  # a client's deadline for one call (the server task is cancelled, never awaited)


class CallTimeout(Exception):
    """The client's deadline passed (or the server it called is down)."""


async def call(coro: Awaitable[_T], deadline_s: float = CALL_DEADLINE_S) -> _T:
    """An RPC: the server side runs in its own task; the client stops waiting at its deadline and cancels
    the server task without waiting for it (a dead server never finishes its cancellation)."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=deadline_s)
    if not done:
        task.cancel()
        raise CallTimeout("deadline exceeded")
    return task.result()


@dataclass(frozen=True)
class Knobs:
    """What one seed's scenario looks like (drawn from the seed, printed with a failure)."""

    accounts: int
    bets_per_account: int
    before: float
    after: float
    slow: float
    reject: float
    kills: int
    redis_losses: int
    corrections: str  # "", "resettle", "rollback", "resettle+rollback"

    @classmethod
    def draw(cls, rng: random.Random) -> Knobs:
        p = rng.choice((0.0, 0.01, 0.03, 0.08))
        return cls(
            accounts=rng.randint(2, 4),
            bets_per_account=rng.randint(2, 5),
            before=p,
            after=rng.choice((0.0, p)),
            slow=rng.choice((0.0, p / 2)),
            reject=rng.choice((0.0, 0.0, 0.02)),
            kills=rng.choice((0, 1, 2, 4)),
            redis_losses=rng.choice((0, 0, 0, 1)),
            corrections=rng.choice(("", "resettle", "rollback", "resettle+rollback")),
        )


class SimOdds:
    """The odds cache's read side as placement and the atomic debit use it, plus the settlement close."""

    def __init__(self) -> None:
        self.markets: dict[str, MarketState] = {}

    async def get_markets(self, market_ids: Sequence[str]) -> list[MarketState | None]:
        return [self.markets.get(m) for m in market_ids]

    def status(self, market_id: str) -> MarketStatus | None:
        state = self.markets.get(market_id)
        return state.status if state is not None else None

    async def close(self, market_ids: Sequence[str]) -> None:
        for m in market_ids:
            state = self.markets[m]
            if state.status != MarketStatus.SETTLED:
                self.markets[m] = replace(state, status=MarketStatus.SETTLED, version=state.version + 1)


@dataclass
class Stores:
    """The shared, durable-or-not stores every process incarnation uses (Redis, Cassandra, Kafka, odds)."""

    odds: SimOdds = field(default_factory=SimOdds)
    ledger: MemoryLedger = field(default_factory=lambda: MemoryLedger().with_journal(PROJECTION))
    bus: MemoryEventBus = field(default_factory=MemoryEventBus)
    locks: MemoryLocks = field(default_factory=MemoryLocks)
    deposit_keys: MemoryDepositKeys = field(default_factory=MemoryDepositKeys)
    wallet: MemoryWallet = field(init=False)
    settlement: MemorySettlementStore = field(init=False)

    def __post_init__(self) -> None:
        self.wallet = MemoryWallet(market_status=self.odds.status)
        self.settlement = MemorySettlementStore(self.ledger)


class LeasePorts(Port):
    """The lock service's port: the leases it hands out are ports of the same process too (a dead process's
    lease is never renewed again, so it expires)."""

    def __getattr__(self, attr: str) -> Any:
        inner = super().__getattr__(attr)
        if attr != "acquire":
            return inner

        async def acquire(*args: Any, **kwargs: Any) -> Any:
            lease = await inner(*args, **kwargs)
            return None if lease is None else Port(lease, self._faults, self._proc, "lease")

        return acquire


@dataclass
class Ack:
    account: str
    key: str
    bet_id: str
    event_id: str
    market_id: str
    selection_id: str
    stake: int


class World:
    """``strict``: every scenario, no operator help. Off (the CI default), the triggers of the known findings
    (docs/simulation.md) stay out: no Redis loss (1, 5), no journal refusal (3), no faults while a bet process
    starts (4), no lost reply of a batch's finish (5), and the calm phase restarts the bet processes once
    the bettors are done, as an operator would (a quiet shard resolves an unknown batch only when a slip or
    a restart arrives: 2)."""

    def __init__(self, seed: int, *, strict: bool = False) -> None:
        self.seed = seed
        self.strict = strict
        self.rng = random.Random(f"world:{seed}")
        self.knobs = Knobs.draw(self.rng)
        if not strict:  # scenarios that trigger a known, reported bug (docs/simulation.md) run with --strict
            self.knobs = replace(self.knobs, redis_losses=0, reject=0.0)
        k = self.knobs
        self.faults = Faults(
            random.Random(f"faults:{seed}"), before=k.before, after=k.after, slow=k.slow, reject=k.reject
        )
        self.faults.note = self.note
        if not strict:  # a finish whose reply is lost: finding 5
            self.faults.excluded = frozenset({("wallet", "finish_batch", "after")})
        self.stores = Stores()
        self.bets: list[tuple[Proc, BetPath] | None] = [None] * SHARDS
        self.settler: tuple[Proc, SettlementService] | None = None
        self.cashier: Wallet | None = None  # WalletService.Deposit, served by the settlement process
        self.incarnations = itertools.count(1)
        self.accounts = [f"acc{i}" for i in range(k.accounts)]
        self.deposits = 0
        self.acks: list[Ack] = []
        self.keys: list[tuple[str, str]] = []  # every (account, key) a bettor ever sent
        self.outcomes: dict[str, int] = {}
        self.final: dict[str, Results | None] = {}  # event -> results in effect at the end (None: rolled back)
        self.trace: list[str] = []
        self.chaos_on = True
        self.restarting: set[str] = set()
        self.restarts: list[asyncio.Task[None]] = []
        memory_settlement._fences = itertools.count(1)  # lease tokens: the same in every run of this seed
        for name in ("inplay", "opentelemetry"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    def note(self, text: str) -> None:
        self.trace.append(f"{asyncio.get_running_loop().time():.3f} {text}")

    def count(self, what: str) -> None:
        self.outcomes[what] = self.outcomes.get(what, 0) + 1

    # --- processes -------------------------------------------------------------------------------------

    def _proc(self, kind: str) -> Proc:
        return Proc(f"{kind}#{next(self.incarnations)}")

    async def start_bets(self, index: int) -> None:
        """Starts bet process ``index`` (writer ``writer-<index>``: a restart takes its shard back), retrying
        until it is up (its start-up may fail on store errors too)."""
        while True:
            proc = self._proc(f"bets{index}")
            proc.quiet = not self.strict  # start-up faults: finding 4
            s = self.stores
            wallet, ledger = Port(s.wallet, self.faults, proc, "wallet"), Port(s.ledger, self.faults, proc, "ledger")
            odds, bus = Port(s.odds, self.faults, proc, "odds"), Port(s.bus, self.faults, proc, "bus")
            try:
                path = await call(
                    open_bet_path(
                        odds, wallet, ledger, bus, RULES, JOURNAL, PROJECTION, TOPICS, owner=f"writer-{index}"
                    ),
                    30.0,
                )
            except Exception as exc:
                proc.alive = False
                self.note(f"{proc.name} failed to start: {type(exc).__name__}")
                await asyncio.sleep(1.0)
                continue
            proc.quiet = False
            self.bets[index] = (proc, path)
            self.note(f"{proc.name} up on shard {path.writer.shard}")
            return

    def kill_bets(self, index: int) -> None:
        current = self.bets[index]
        if current is not None:
            current[0].alive = False
            self.bets[index] = None
            self.note(f"{current[0].name} killed")

    def start_settler(self) -> None:
        proc = self._proc("settle")
        s = self.stores
        wallet, ledger = Port(s.wallet, self.faults, proc, "wallet"), Port(s.ledger, self.faults, proc, "ledger")
        odds = Port(s.odds, self.faults, proc, "odds")
        service = SettlementService(
            Port(s.settlement, self.faults, proc, "settlement"),
            ledger,
            wallet,
            Port(s.bus, self.faults, proc, "bus"),
            LeasePorts(s.locks, self.faults, proc, "locks"),
            mark_settled=odds.close,
            config=SETTLEMENT,
            clock=_virtual_ms,
            bet_watermark=JournalWatermark(wallet, ledger, SHARDS, timeout_s=3.0),
        )
        self.settler = (proc, service)
        keys = Port(s.deposit_keys, self.faults, proc, "deposit_keys")
        self.cashier = Wallet(wallet, ledger, keys, "EUR", _virtual_ms)
        self.note(f"{proc.name} up")

    def kill_settler(self) -> None:
        if self.settler is not None:
            self.settler[0].alive = False
            self.note(f"{self.settler[0].name} killed")
            self.settler = None
            self.cashier = None

    def restart(self, what: str, delay: float) -> None:
        self.restarts.append(asyncio.get_running_loop().create_task(self.restart_later(what, delay)))

    async def restart_later(self, what: str, delay: float) -> None:
        self.restarting.add(what)
        try:
            await asyncio.sleep(delay)
            if what == "settle":
                self.start_settler()
            else:
                await self.start_bets(int(what[4:]))
        finally:
            self.restarting.discard(what)

    # --- setup -----------------------------------------------------------------------------------------

    async def setup(self) -> None:
        now = _virtual_ms()
        for e in range(2):
            for m in range(2):
                market_id = f"E{e}-m{m}"
                self.stores.odds.markets[market_id] = MarketState(
                    market_id=market_id,
                    event_id=f"E{e}",
                    sport="football",
                    market_type="1x2",
                    name=market_id,
                    in_play=False,
                    status=MarketStatus.ACTIVE,
                    status_reason="",
                    selections=(
                        SelectionPrice("h", "Home", Odds.from_decimal("2.00")),
                        SelectionPrice("a", "Away", Odds.from_decimal("3.00")),
                    ),
                    version=1,
                    updated_at_ms=now,
                )
        for account in self.accounts:
            entry = LedgerEntry(f"deposit:{account}", account, EntryKind.DEPOSIT, DEPOSIT, "EUR", "", "sim", now)
            await self.stores.ledger.append_entries([entry])
            await self.stores.wallet.credit_batch([Credit(account, entry.entry_id, DEPOSIT)])
            self.deposits += DEPOSIT
        for index in range(SHARDS):
            await self.start_bets(index)
        self.start_settler()

    # --- actors ----------------------------------------------------------------------------------------

    async def bettor(self, account: str) -> None:
        rng = random.Random(f"bettor:{self.seed}:{account}")
        sent: list[BetRequest] = []
        for j in range(self.knobs.bets_per_account):
            await asyncio.sleep(rng.uniform(0, 3.0))
            event = rng.randrange(2)
            market, selection = f"E{event}-m{rng.randrange(2)}", rng.choice(("h", "a"))
            odds = "2.00" if selection == "h" else "3.00"
            req = BetRequest(
                account,
                (Leg(market, selection, Odds.from_decimal(odds), f"E{event}"),),
                rng.randint(10, 1500),
                "EUR",
                AcceptancePolicy.NONE,
                f"{account}-k{j}",
            )
            sent.append(req)
            await self.place(req, rng, attempts=rng.choice((3, 50)))
            if sent and rng.random() < 0.3:  # a late retry of an earlier slip: must replay, never place again
                await self.place(rng.choice(sent), rng, attempts=50)
            if rng.random() < 0.1:  # the same key with another stake: refused, never a second bet
                await self.place(replace(req, stake_minor=req.stake_minor + 1), rng, attempts=50)

    async def place(self, req: BetRequest, rng: random.Random, attempts: int) -> None:
        self.keys.append((req.account_id, req.idempotency_key))
        for attempt in range(attempts):
            result = await self._try_place(req)
            if result is None:
                self.count("place:lost")
            elif result.bet is not None:
                bet, leg = result.bet, req.legs[0]
                self.acks.append(
                    Ack(
                        req.account_id,
                        req.idempotency_key,
                        bet.bet_id,
                        leg.event_id,
                        leg.market_id,
                        leg.selection_id,
                        req.stake_minor,
                    )
                )
                self.count("place:ok" if not result.replayed else "place:replayed")
                self.note(f"ack {req.account_id}/{req.idempotency_key} {bet.bet_id} stake {req.stake_minor}")
                return
            else:
                assert result.rejection is not None
                reason = result.rejection.reason
                self.count(f"place:{reason}")
                if reason not in TRANSIENT_REASONS or reason == "IDEMPOTENCY_KEY_REUSED":
                    return
            await asyncio.sleep(rng.uniform(0.05, 0.5) * min(2**attempt, 16))

    async def _try_place(self, req: BetRequest) -> PlacementResult | None:
        """None: the call failed without an answer (server down, deadline, an error)."""
        current = self.bets[hash_account(req.account_id) % SHARDS] or next((b for b in self.bets if b), None)
        if current is None:
            await asyncio.sleep(0.2)  # connection refused
            return None
        try:
            return await call(current[1].placement.place(req))
        except (CallTimeout, Exception):
            return None

    async def cashier_desk(self) -> None:
        """An operator's deposits during the match, each retried with its key until it is done; a deposit
        counts once in ``deposits`` however many times it was sent (the ledger must agree)."""
        rng = random.Random(f"cashier:{self.seed}")
        for j in range(rng.randint(0, 3)):
            await asyncio.sleep(rng.uniform(0, 10.0))
            account, amount = rng.choice(self.accounts), rng.randint(100, 3000)
            while True:
                cashier = self.cashier
                try:
                    if cashier is None:
                        raise CallTimeout("the settlement process is down")
                    await call(cashier.deposit(account, amount, "EUR", f"dep-{j}"))
                    break
                except FailedPrecondition as exc:
                    raise AssertionError(f"deposit dep-{j} refused: {exc.reason} {exc}") from exc
                except Exception as exc:  # lost reply, fence, dead server: the same key again
                    self.count(f"deposit:{type(exc).__name__}")
                    await asyncio.sleep(rng.uniform(0.1, 1.0))
            self.deposits += amount
            self.count("deposit:ok")
            self.note(f"deposit {account} {amount} (dep-{j})")

    async def operator(self, event_id: str) -> None:
        rng = random.Random(f"operator:{self.seed}:{event_id}")
        await asyncio.sleep(rng.uniform(2.0, 8.0))
        first = self._results(event_id, rng)
        await self._until_done(lambda s: s.settle_event(event_id, first, "ft"), f"settle {event_id}")
        self.final[event_id] = first
        if "resettle" in self.knobs.corrections:
            await asyncio.sleep(rng.uniform(0, 3.0))
            second = self._results(event_id, rng)
            await self._until_done(lambda s: s.resettle(event_id, second, "fix"), f"resettle {event_id}")
            self.final[event_id] = second
        if "rollback" in self.knobs.corrections:
            await asyncio.sleep(rng.uniform(0, 3.0))
            last = settle_run_id(event_id, "fix" if "resettle" in self.knobs.corrections else "ft")
            await self._until_done(lambda s: s.rollback(event_id, last), f"rollback {event_id}")
            self.final[event_id] = None

    @staticmethod
    def _results(event_id: str, rng: random.Random) -> Results:
        outcomes: list[tuple[str, str, LegOutcome, tuple[int, int]]] = []
        void: list[str] = []
        for m in range(2):
            market_id = f"E{event_id[1:]}-m{m}"
            if rng.random() < 0.15:
                void.append(market_id)
                continue
            winner = rng.choice(("h", "a"))
            outcomes.append((market_id, winner, LegOutcome.WIN, (1, 1)))
            outcomes.append((market_id, "a" if winner == "h" else "h", LegOutcome.LOSE, (1, 1)))
        return make_results(outcomes, void)

    async def _until_done(self, op: Callable[[SettlementService], Awaitable[Any]], what: str) -> None:
        """An operator retries a request (same request id) until it succeeds; a refusal is a finding."""
        delay = 0.2
        while True:
            current = self.settler
            if current is None:
                await asyncio.sleep(0.5)
                continue
            try:
                await call(op(current[1]), 20.0)
                self.note(f"{what} done")
                return
            except FailedPrecondition as exc:
                raise AssertionError(f"{what} refused: {exc.reason} {exc}") from exc
            except (Aborted, DomainError, CallTimeout, Exception) as exc:
                self.count(f"{what.split()[0]}:{type(exc).__name__}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def chaos(self) -> None:
        rng = random.Random(f"chaos:{self.seed}")
        kills, losses = self.knobs.kills, self.knobs.redis_losses
        while self.chaos_on and (kills or losses):
            await asyncio.sleep(rng.uniform(0.2, 4.0))
            if not self.chaos_on:
                return
            if losses and rng.random() < 0.3:
                losses -= 1
                self.redis_loss()
                continue
            if kills:
                kills -= 1
                target = rng.choice([f"bets{i}" for i in range(SHARDS)] + ["settle"])
                if target in self.restarting:
                    continue
                if target == "settle":
                    self.kill_settler()
                else:
                    self.kill_bets(int(target[4:]))
                self.restart(target, rng.uniform(0.1, 3.0))

    def redis_loss(self) -> None:
        """Redis loses everything (FLUSHALL, a failover to an empty replica); the bet processes restart and
        rebuild the projection from the ledger at start-up."""
        self.stores.wallet.forget_everything()
        self.note("redis lost")
        for index in range(SHARDS):
            if f"bets{index}" not in self.restarting:
                self.kill_bets(index)
                self.restart(f"bets{index}", 0.5)

    # --- the seed --------------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.setup()
        loop = asyncio.get_running_loop()
        actors = [loop.create_task(self.bettor(a)) for a in self.accounts]
        actors += [loop.create_task(self.operator(f"E{e}")) for e in range(2)]
        actors.append(loop.create_task(self.cashier_desk()))
        chaos = loop.create_task(self.chaos())
        await asyncio.sleep(12.0)
        self.chaos_on = False
        self.faults.enabled = False
        await chaos
        await asyncio.gather(*self.restarts)
        self.note("calm")
        bettors, operators = actors[: len(self.accounts)], actors[len(self.accounts) :]
        for actor in bettors:
            await actor
        if not self.strict:
            for index in range(SHARDS):  # the documented restart: resolves every unknown batch
                self.kill_bets(index)
                await self.start_bets(index)
        done, _ = await asyncio.wait(operators, timeout=600.0)
        assert len(done) == len(operators), "liveness: an operator request never completed in calm weather"
        for actor in operators:
            actor.result()  # an operator refusal surfaces here
        await self.catch_up()

    async def catch_up(self) -> None:
        for index in range(SHARDS):
            self.kill_bets(index)
            await self.start_bets(index)
        self.kill_settler()
        self.start_settler()
        s = self.stores
        assert await wait_for_projection(s.wallet, s.ledger, SHARDS, timeout_s=30.0), "views never caught up"
        assert self.settler is not None
        for e in range(2):
            while await s.settlement.event_runs(f"E{e}"):
                try:
                    await self.settler[1].resume_event(f"E{e}")
                    break
                except Aborted:  # the killed process's lease has not expired yet
                    await asyncio.sleep(1.0)
        self.note("caught up")


def hash_account(account: str) -> int:
    return sum(account.encode())  # stable across processes (str hash is salted)


def _virtual_ms() -> int:
    return round((EPOCH_S + asyncio.get_running_loop().time()) * 1000)
