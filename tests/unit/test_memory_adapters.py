"""Behaviour of the embedded stores (inplay.adapters.memory) that is theirs alone. Everything the ports
promise is checked once for both the memory and the real adapters by the contracts in tests/support/contracts
(run here by tests/unit/test_contract_memory.py)."""

from __future__ import annotations

import json

import pytest

from inplay.adapters.memory import MemoryEventBus, MemoryLedger
from inplay.core import AcceptancePolicy, Odds
from inplay.model import Leg, PlacedBet
from inplay.ports import BusMessage

NOW = 1_772_323_200_000


def bet(account: str, events: tuple[str, ...], at_ms: int, bet_id: str, stake: int = 100) -> PlacedBet:
    legs = tuple(Leg(f"{ev}:mr", "home", Odds(3, 1), ev) for ev in events)
    return PlacedBet(bet_id, account, legs, stake, "EUR", stake * 3, AcceptancePolicy.ANY, f"key-{bet_id}", at_ms)


async def test_bets_by_idempotency_key() -> None:
    # Not a port method (the pre-journal read of a key); the Cassandra ledger has the same one.
    ledger = MemoryLedger()
    placed = bet("acc", ("ev",), NOW, "b1")
    await ledger.append_bets([placed])
    assert await ledger.get_bet_by_idempotency("acc", placed.idempotency_key) == "b1"
    assert await ledger.get_bet_by_idempotency("acc", "unknown") is None


async def test_event_bus_keeps_order_and_refuses_after_close() -> None:
    bus = MemoryEventBus(max_per_topic=3)
    await bus.publish([BusMessage("t", "k", json.dumps({"n": i}).encode()) for i in range(5)])
    await bus.flush()
    assert bus.decoded("t") == [{"n": 2}, {"n": 3}, {"n": 4}]  # bounded: the newest kept
    assert bus.decoded("other") == []
    await bus.close()
    with pytest.raises(RuntimeError):
        await bus.publish([BusMessage("t", "k", b"{}")])
