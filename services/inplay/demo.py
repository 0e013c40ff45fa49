"""``./dev demo``: a simulated live match end to end, through the real gRPC API.

1. A provider feed (two providers, two wire formats) opens the match's markets and moves the odds.
2. Bettors (identified as Envoy would identify them) read the markets and place bets: accepted ones, one
   rejected for moved odds and then re-offered at the new price, one during a bet stop (suspended), one
   without funds, a duplicate submit (replayed, never placed twice), an accumulator.
3. A goal: bet stop, then the market resumes with fresh prices.
4. The match ends; the operator settles the event; the summary checks that money is conserved:
   Σ balances = Σ deposits - Σ stakes + Σ payouts, from the ledger, and equal to the balance projection.

Without arguments it runs on embedded in-memory stores. ``--real`` runs on the real Redis, Cassandra and
Kafka (the ``INPLAY_*`` variables of ``.stack/env``) and talks to the services through Envoy with real JWTs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from inplay.app import Runtime, open_runtime
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.config import Settings, setting_int
from inplay.domain.feed.simulator import MatchSimulator, SimMessage
from inplay.feed.v1 import feed_pb2, feed_pb2_grpc
from inplay.odds.v1 import odds_pb2, odds_pb2_grpc
from inplay.server import start_server
from inplay.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc

OPERATOR = "ops-demo"
CURRENCY = "EUR"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def fmt(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    return f"{sign}{minor // 100}.{minor % 100:02d} {CURRENCY}"


class Identity:
    """Call credentials as the edge would attach them."""

    def __init__(self, tokens: dict[str, str] | None, run: str = "") -> None:
        # With tokens: real JWTs for Envoy. Without: the verified-identity headers Envoy would set (the
        # embedded demo talks to the service directly, as a test of the service contract).
        self._tokens = tokens
        # Bettors' accounts are named per run (alice-<run>): a second run on the same stack starts from
        # empty accounts, so its summary checks this run's money alone.
        self.run = run

    def account(self, name: str) -> str:
        return name if name == OPERATOR or not self.run else f"{name}-{self.run}"

    def metadata(self, name: str, operator: bool = False) -> tuple[tuple[str, str], ...]:
        subject = self.account(name)
        if self._tokens is not None:
            return (("authorization", f"Bearer {self._tokens[subject]}"),)
        md = [("x-inplay-subject", subject)]
        if operator:
            md.append(("x-inplay-roles", "operator"))
        return tuple(md)


@dataclass
class Tally:
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    replayed: int = 0
    stakes: int = 0
    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(f"  {line}")


class Demo:
    def __init__(self, channel: grpc.aio.Channel, identity: Identity, sim: MatchSimulator) -> None:
        self.channel = channel
        self.identity = identity
        self.sim = sim
        self.bets = bets_pb2_grpc.BetServiceStub(channel)
        self.odds = odds_pb2_grpc.OddsServiceStub(channel)
        self.wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        self.feed = feed_pb2_grpc.FeedServiceStub(channel)
        self.settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
        self.tally = Tally()
        self.deposits: dict[str, int] = {}
        self.seq = 0

    # --- feed ----------------------------------------------------------------------------------------------

    async def push(self, messages: Sequence[SimMessage]) -> Counter[str]:
        """Sends provider messages as a live feed would: each time slice when its timestamp comes up."""
        totals: Counter[str] = Counter()
        slice_ms = 100
        start = 0
        while start < len(messages):
            end = start
            while end < len(messages) and messages[end].at_ms < messages[start].at_ms + slice_ms:
                end += 1
            wait_ms = messages[start].at_ms - _now_ms()
            if wait_ms > 0:
                await asyncio.sleep(wait_ms / 1000)
            response = await self._send(messages[start:end])
            totals["received"] += response.received
            totals["accepted"] += response.accepted
            for reason, count in response.rejected_by_reason.items():
                totals[reason] += count
            start = end
        return totals

    async def _send(self, messages: Sequence[SimMessage]) -> feed_pb2.IngestOddsResponse:
        async def requests() -> AsyncIterator[feed_pb2.IngestOddsRequest]:
            for message in messages:
                yield feed_pb2.IngestOddsRequest(provider=message.provider, payload=message.payload)

        response: feed_pb2.IngestOddsResponse = await self.feed.IngestOdds(
            requests(), metadata=self.identity.metadata(OPERATOR, operator=True)
        )
        return response

    # --- wallet --------------------------------------------------------------------------------------------

    async def deposit(self, account: str, amount: int) -> None:
        await self.wallet.Deposit(
            wallet_pb2.DepositRequest(
                account_id=self.identity.account(account),
                amount=types_pb2.Money(amount_minor=amount, currency=CURRENCY),
                idempotency_key=f"demo-deposit-{self.sim.event_id}-{account}",
                reason="demo",
            ),
            metadata=self.identity.metadata(OPERATOR, operator=True),
        )
        self.deposits[account] = self.deposits.get(account, 0) + amount

    async def balance(self, account: str) -> int:
        response = await self.wallet.GetBalance(
            wallet_pb2.GetBalanceRequest(), metadata=self.identity.metadata(account)
        )
        return int(response.balance.amount_minor)

    async def ledger_sum(self, account: str) -> tuple[int, dict[str, int]]:
        by_kind: Counter[str] = Counter()
        token = ""
        while True:
            page = await self.wallet.ListLedgerEntries(
                wallet_pb2.ListLedgerEntriesRequest(page_token=token, page_size=500),
                metadata=self.identity.metadata(account),
            )
            for entry in page.entries:
                by_kind[wallet_pb2.EntryKind.Name(entry.kind).removeprefix("ENTRY_KIND_")] += entry.amount.amount_minor
            token = page.next_page_token
            if not token:
                break
        return sum(by_kind.values()), dict(by_kind)

    # --- odds ----------------------------------------------------------------------------------------------

    async def market(self, market_id: str) -> odds_pb2.Market:
        response: odds_pb2.GetMarketResponse = await self.odds.GetMarket(
            odds_pb2.GetMarketRequest(market_id=market_id), metadata=self.identity.metadata("viewer")
        )
        return response.market

    # --- bets ----------------------------------------------------------------------------------------------

    def slip(
        self,
        legs: Sequence[tuple[str, str, types_pb2.Odds]],
        stake: int,
        key: str | None = None,
        policy: int = bets_pb2.ACCEPTANCE_POLICY_NONE,
    ) -> bets_pb2.BetSlip:
        self.seq += 1
        return bets_pb2.BetSlip(
            legs=[
                bets_pb2.BetLeg(
                    market_id=m, selection_id=s, odds=types_pb2.Odds(numerator=o.numerator, denominator=o.denominator)
                )
                for m, s, o in legs
            ],
            stake=types_pb2.Money(amount_minor=stake, currency=CURRENCY),
            acceptance_policy=policy,  # type: ignore[arg-type]
            idempotency_key=f"{self.sim.event_id}-{key or self.seq}",
        )

    async def place(self, who: str, slip: bets_pb2.BetSlip, label: str) -> bets_pb2.PlaceBetResponse | None:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        try:
            response: bets_pb2.PlaceBetResponse = await self.bets.PlaceBet(
                bets_pb2.PlaceBetRequest(slip=slip), metadata=self.identity.metadata(who)
            )
        except grpc.aio.AioRpcError as error:
            status = rpc_status.from_call(error)
            reason = error.code().name
            current = ""
            for detail in status.details if status is not None else []:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
                elif detail.Is(bets_pb2.OddsChanged.DESCRIPTOR):
                    changed = bets_pb2.OddsChanged()
                    detail.Unpack(changed)
                    current = f" (now {changed.current.decimal}, seen {changed.seen.decimal})"
            self.tally.rejected[reason] += 1
            self.tally.say(f"{label}: {who} REJECTED {reason}{current}")
            return None
        bet = response.bet
        if response.replayed:
            self.tally.replayed += 1
            self.tally.say(f"{label}: {who} duplicate submit -> same bet {bet.bet_id[-8:]} (replayed, no debit)")
        else:
            self.tally.accepted += 1
            self.tally.stakes += bet.stake.amount_minor
            odds = " x ".join(leg.odds.decimal for leg in bet.legs)
            self.tally.say(
                f"{label}: {who} ACCEPTED {fmt(bet.stake.amount_minor)} @ {odds} "
                f"(potential {fmt(bet.potential_return.amount_minor)})"
            )
        return response


def final_score(sim: MatchSimulator) -> tuple[int, int]:
    home = sum(1 for _, side in sim.goals if side == "home")
    return home, len(sim.goals) - home


def match_results(sim: MatchSimulator) -> list[tuple[str, str, settlement_pb2.SelectionResult]]:
    """The operator's result sheet: (market, selection, SelectionResult) for every selection."""
    home, away = final_score(sim)
    winner = "home" if home > away else "away" if away > home else "draw"
    win, lose = settlement_pb2.SELECTION_RESULT_WIN, settlement_pb2.SELECTION_RESULT_LOSE
    e = sim.event_id
    rows = [(sim.market_result, f"{e}:mr:{side}", win if side == winner else lose) for side in ("home", "draw", "away")]
    over = home + away > 2
    rows.append((sim.market_total, f"{e}:ou25:over", win if over else lose))
    rows.append((sim.market_total, f"{e}:ou25:under", lose if over else win))
    return rows


def _selection(market: odds_pb2.Market, index: int) -> tuple[str, types_pb2.Odds]:
    sel = market.selections[index]
    return sel.selection_id, sel.odds


BETTORS = {"alice": 50_00, "bob": 30_00, "carol": 20_00, "dave": 5_00}


@dataclass
class _Script:
    """Where the demo's chapters cut the simulated feed."""

    messages: list[Any]
    first_price: int
    stop: int
    resume: int

    @classmethod
    def of(cls, sim: MatchSimulator) -> _Script:
        messages = sim.messages()
        first_price = next(i for i, m in enumerate(messages) if m.kind == "PRICES")
        stop = next(i for i, m in enumerate(messages) if m.kind == "BET_STOP")
        resume = next(i for i, m in enumerate(messages[stop:], stop) if m.kind == "PRICES")
        return cls(messages, first_price, stop, resume)


async def run(demo: Demo, sim: MatchSimulator, realtime: bool) -> bool:
    script = _Script.of(sim)
    print("== 1. The feed opens the match")
    summary = await demo.push(script.messages[: script.first_price + 4])
    print(f"  provider messages: {dict(summary)}")
    mr = await demo.market(sim.market_result)
    ou = await demo.market(sim.market_total)
    print(f"  {mr.name}: " + ", ".join(f"{s.name} {s.odds.decimal}" for s in mr.selections))
    print(f"  {ou.name}: " + ", ".join(f"{s.name} {s.odds.decimal}" for s in ou.selections))
    await _fund_and_bet(demo, mr, ou)
    await _odds_move(demo, sim, script, mr)
    await _bet_stop(demo, sim, script, mr)
    settled = await _full_time(demo, sim, script)
    return await _summary(demo, settled)


async def _fund_and_bet(demo: Demo, mr: Any, ou: Any) -> None:
    print("== 2. Bettors fund their accounts and bet")
    for who, amount in BETTORS.items():
        await demo.deposit(who, amount)
    home_id, home_odds = _selection(mr, 0)
    away_id, away_odds = _selection(mr, 2)
    over_id, over_odds = _selection(ou, 0)
    await demo.place("alice", demo.slip([(mr.market_id, home_id, home_odds)], 10_00), "single")
    dup = demo.slip([(mr.market_id, away_id, away_odds)], 5_00, key="bob-slip-1")
    await demo.place("bob", dup, "single")
    await demo.place("bob", dup, "retry")
    await demo.place(
        "carol",
        demo.slip([(mr.market_id, home_id, home_odds), (ou.market_id, over_id, over_odds)], 5_00),
        "accumulator",
    )
    await demo.place("dave", demo.slip([(mr.market_id, home_id, home_odds)], 20_00), "single")


async def _odds_move(demo: Demo, sim: MatchSimulator, script: _Script, mr: Any) -> None:
    print("== 3. The odds move; a bettor still looking at the old price")
    home_id, home_odds = _selection(mr, 0)
    await demo.push(script.messages[script.first_price + 4 : script.stop])
    stale_seen = types_pb2.Odds(numerator=home_odds.numerator * 5, denominator=home_odds.denominator * 4)
    rejected = await demo.place("carol", demo.slip([(mr.market_id, home_id, stale_seen)], 3_00), "far-off price")
    if rejected is None:
        now = await demo.market(sim.market_result)
        _, now_home = _selection(now, 0)
        await demo.place("carol", demo.slip([(now.market_id, home_id, now_home)], 3_00), "re-offered")


async def _bet_stop(demo: Demo, sim: MatchSimulator, script: _Script, mr: Any) -> None:
    print("== 4. Goal: bet stop, then resume with fresh prices")
    home_id, _ = _selection(mr, 0)
    away_id, _ = _selection(mr, 2)
    await demo.push(script.messages[script.stop : script.resume])
    suspended = await demo.market(sim.market_result)
    print(f"  market status: {types_pb2.MarketStatus.Name(suspended.status)} ({suspended.status_reason})")
    _, seen = _selection(suspended, 0)
    await demo.place("alice", demo.slip([(mr.market_id, home_id, seen)], 2_00), "during bet stop")
    await demo.push(script.messages[script.resume : script.resume + 4])
    resumed = await demo.market(sim.market_result)
    print(f"  market status: {types_pb2.MarketStatus.Name(resumed.status)}")
    _, fresh = _selection(resumed, 2)
    await demo.place(
        "alice",
        demo.slip([(resumed.market_id, away_id, fresh)], 4_00, policy=bets_pb2.ACCEPTANCE_POLICY_HIGHER),
        "after resume",
    )


async def _full_time(demo: Demo, sim: MatchSimulator, script: _Script) -> Any:
    print("== 5. Full time: the rest of the feed, then settlement")
    summary = await demo.push(script.messages[script.resume + 4 :])
    print(f"  provider messages: {dict(summary)}")
    home_goals, away_goals = final_score(sim)
    print(f"  final score {sim.home} {home_goals}-{away_goals} {sim.away}")
    outcomes = match_results(sim)
    run_response = await demo.settlement.SettleEvent(
        settlement_pb2.SettleEventRequest(
            event_id=sim.event_id,
            outcomes=[settlement_pb2.SelectionOutcome(market_id=m, selection_id=s, result=r) for m, s, r in outcomes],
            request_id=f"demo-settle-{sim.event_id}",
            wait=True,
            reason="full time",
        ),
        metadata=demo.identity.metadata(OPERATOR, operator=True),
    )
    settled = run_response.run
    print(
        f"  run {settled.run_id}: {settlement_pb2.RunState.Name(settled.state)}, bets processed "
        f"{settled.bets_processed}/{settled.bets_total}, payouts {fmt(settled.payouts_minor)}"
    )
    return settled


async def _summary(demo: Demo, settled: Any) -> bool:
    """Prints each bettor's balance beside their ledger and checks conservation from the ledger."""
    print("== Summary")
    tally = demo.tally
    print(f"  bets accepted: {tally.accepted}  duplicates replayed: {tally.replayed}")
    for reason, count in sorted(tally.rejected.items()):
        print(f"  rejected {reason}: {count}")
    total_balances = total_ledger = total_deposits = total_payouts = total_stakes = 0
    for who in BETTORS:
        balance = await demo.balance(who)
        ledger_total, by_kind = await demo.ledger_sum(who)
        total_balances += balance
        total_ledger += ledger_total
        total_deposits += by_kind.get("DEPOSIT", 0)
        total_payouts += by_kind.get("PAYOUT", 0)
        total_stakes += -by_kind.get("STAKE", 0)
        print(
            f"  {who:6s} balance {fmt(balance):>12s}  ledger: "
            + ", ".join(f"{k.lower()} {fmt(v)}" for k, v in sorted(by_kind.items()))
        )
    print(
        f"  deposits {fmt(total_deposits)} - stakes {fmt(total_stakes)} + payouts {fmt(total_payouts)} "
        f"= {fmt(total_deposits - total_stakes + total_payouts)}; balances {fmt(total_balances)}"
    )
    conserved = (
        total_balances == total_ledger == total_deposits - total_stakes + total_payouts
        and total_deposits == sum(demo.deposits.values())
        and total_stakes == tally.stakes
        and total_payouts == settled.payouts_minor
    )
    print("  money conserved: " + ("YES" if conserved else "NO"))
    return conserved


@contextlib.asynccontextmanager
async def embedded_channel(settings: Settings) -> AsyncIterator[tuple[Runtime, grpc.aio.Channel, int]]:
    runtime = await open_runtime(settings)
    server, port = await start_server(runtime, 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield runtime, channel, port
    finally:
        await channel.close()
        await server.stop(1)
        await runtime.close()


async def main_async(real: bool) -> int:
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.from_env()
    # Demo prices arrive in bursts, not in real time: widen the in-play freshness window accordingly.
    settings = replace(settings, bets=replace(settings.bets, max_price_age_inplay_ms=600_000))
    # For the same reason a provider is silent for seconds between two bursts (deposits and bets run in real
    # time): that is not a provider down, which would suspend the match until a recovery snapshot the
    # simulator never sends (the real demo through Envoy hung on it once on a slow box).
    for name in ("INPLAY_FEED_HEARTBEAT_TIMEOUT_MS", "INPLAY_FEED_PRODUCER_DOWN_MS"):
        os.environ.setdefault(name, "600000")
    if real and settings.stack.embedded:
        print("--real needs the stack: run through ./dev demo --real", file=sys.stderr)
        return 2
    seed = setting_int("INPLAY_DEMO_SEED")
    run_id = os.urandom(3).hex()
    # The match is compressed into 15 s of provider time, replayed in real time.
    sim = MatchSimulator(
        seed=seed,
        start_ms=_now_ms() + 500,
        duration_ms=15_000,
        tick_ms=250,
        resume_after_ms=1_500,
        event_id=f"demo-{run_id}",
    )
    print(f"Inplay demo: {sim.home} v {sim.away} ({'real stack' if real else 'embedded stores'})")
    async with embedded_channel(settings) as (runtime, channel, port):
        # The demo's provider ids are the simulator's: its match replaces earlier demo matches in the table.
        await runtime.components["odds"].mappings.load(sim.mapping(), replace=True)
        if real:
            from inplay_edge import EdgeForDemo

            async with EdgeForDemo(f"127.0.0.1:{port}") as edge:
                names = [f"{n}-{run_id}" for n in (*BETTORS, "viewer")]
                identity = Identity(edge.tokens([*names, OPERATOR], [OPERATOR]), run_id)
                async with grpc.aio.insecure_channel(edge.target) as edge_channel:
                    ok = await run(Demo(edge_channel, identity, sim), sim, realtime=False)
        else:
            ok = await run(Demo(channel, Identity(None, run_id), sim), sim, realtime=False)
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description="Inplay demo: a simulated live match end to end")
    parser.add_argument("--real", action="store_true", help="use the real stack (through Envoy)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args.real)))


if __name__ == "__main__":
    main()
