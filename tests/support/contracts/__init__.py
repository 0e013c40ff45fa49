"""Port contracts: each scenario written ONCE, run over the memory twins (tests/unit/test_contract_memory.py,
no servers) and over the real adapters (tests/integration/test_contract_real.py, the shared stack).

A contract is a plain class whose ``test_*`` coroutine methods take the adapter through a fixture of a fixed
name (``wallet_store``, ``ledger_store``, ...); a test module subclasses it as ``Test...`` and provides the
fixture. Scenarios use only port methods and fresh ids (the real stores are shared by a whole session), so
the same code is valid over both adapters. Where an adapter breaks its port's documented contract, the test
module wraps the scenario with :func:`known_gap` (a strict xfail: it fails the suite once the gap is fixed).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

Scenario = Callable[..., Coroutine[Any, Any, None]]


def uid(prefix: str) -> str:
    """A fresh id (accounts, events, markets, runs): unique across the shared stores of a session."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def known_gap(scenario: Scenario, reason: str) -> Scenario:
    """``scenario`` as a strict xfail for one adapter only: a copy is marked, never the shared function
    (a mark on it would reach every adapter's run)."""

    @functools.wraps(scenario)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        await scenario(*args, **kwargs)

    wrapper.__dict__.pop("pytestmark", None)
    return pytest.mark.xfail(strict=True, reason=reason)(wrapper)  # type: ignore[no-any-return]
