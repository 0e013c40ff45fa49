"""Unambiguous composite keys and ids.

Account ids come from a token's subject and idempotency keys from clients: either may contain any
character, including the separators keys are built with. Joining raw parts with ``:`` made account ``a:b``
with key ``c`` and account ``a`` with key ``b:c`` the same record. Every composite key is therefore built
from *escaped* parts: ``%`` and each separator character is percent-encoded, so the encoding is injective
(two different tuples of parts never give the same key) and a key still reads like its parts.

Escaped: ``%`` (the escape itself), ``:`` (the key separator), ``{`` and ``}`` (Redis Cluster hash tags),
``|`` and ``/`` (used inside values such as liability keys and run ids), and control characters.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inplay.model import PlacedBet

_UNSAFE = re.compile(r"[%:{}|/\x00-\x1f\x7f]")


def _escape_char(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group(0).encode())


def key_part(value: str) -> str:
    """One component of a composite key, escaped (identity for the common ``[A-Za-z0-9._-]`` ids)."""
    return _UNSAFE.sub(_escape_char, value)


def join_key(*parts: str) -> str:
    """``key_part(a):key_part(b):...``: injective over tuples of strings."""
    return ":".join(key_part(p) for p in parts)


def liability_key(market_id: str, selection_id: str) -> str:
    """The book's liability counter of one selection (``/`` cannot occur inside an escaped part)."""
    return f"{key_part(market_id)}/{key_part(selection_id)}"


def bet_liability(bet: PlacedBet) -> tuple[tuple[str, ...], int]:
    """The counters a bet adds its liability to at placement, and the amount (what the book pays beyond
    the stake if it wins): released at settlement and rebuilt from open bets with the same rule."""
    keys = tuple(liability_key(leg.market_id, leg.selection_id) for leg in bet.legs)
    return keys, max(0, bet.potential_return_minor - bet.stake_minor)


__all__ = ["bet_liability", "join_key", "key_part", "liability_key"]
