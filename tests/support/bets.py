"""The bet path on given stores (writer + projector + placement), for integration tests."""

from __future__ import annotations

from typing import Any

from inplay.app import BetPath, open_bet_path
from inplay.config import BetRules, JournalSettings
from inplay.core import AcceptancePolicy, Odds
from inplay.model import BetRequest, Leg, MarketState
from inplay.ports import EventBus, Ledger, WalletStore

# Few shards: every test has its own Redis prefix, so a shard is never contended across tests.
TEST_JOURNAL = JournalSettings(shards=4, commit_timeout_s=3.0, lease_ttl_ms=3_000, adopt_period_s=0.2)


async def bet_path(
    odds: Any,
    wallet: WalletStore,
    ledger: Ledger,
    bus: EventBus,
    rules: BetRules,
    *,
    projection: str,
    topic_prefix: str,
    journal: JournalSettings = TEST_JOURNAL,
    owner: str | None = None,
) -> BetPath:
    return await open_bet_path(odds, wallet, ledger, bus, rules, journal, projection, topic_prefix, owner=owner)


def home_single(account: str, market: MarketState, key: str, stake: int = 300) -> BetRequest:
    """A single on ``home`` at 2.00 (the price the test markets of tests.support.api are quoted at)."""
    return BetRequest(
        account_id=account,
        legs=(Leg(market.market_id, "home", Odds.from_decimal("2.00")),),
        stake_minor=stake,
        currency="EUR",
        policy=AcceptancePolicy.NONE,
        idempotency_key=key,
    )
