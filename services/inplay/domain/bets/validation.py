"""Pure input validation of a slip (no state): the first violation, with its field path."""

from __future__ import annotations

from inplay import core
from inplay.config import BetRules
from inplay.core import AcceptancePolicy
from inplay.domain.bets.rejections import Reason, Rejection
from inplay.model import BetRequest

MAX_IDEMPOTENCY_KEY = 128
MAX_ID_LENGTH = 128


def _bad(field_path: str, message: str, reason: str = Reason.INVALID_ARGUMENT) -> Rejection:
    return Rejection(reason=reason, message=message, field=field_path)


def validate_request(req: BetRequest, rules: BetRules) -> Rejection | None:
    """Input validation only (no state): the first violation, or None."""
    if not req.idempotency_key:
        return _bad("slip.idempotency_key", "idempotency_key is required")
    if len(req.idempotency_key) > MAX_IDEMPOTENCY_KEY:
        return _bad("slip.idempotency_key", f"idempotency_key longer than {MAX_IDEMPOTENCY_KEY}")
    if not req.legs:
        return _bad("slip.legs", "at least one leg is required")
    if len(req.legs) > rules.max_legs:
        return _bad("slip.legs", f"at most {rules.max_legs} legs")
    return _validate_legs(req) or _validate_stake(req, rules)


def _validate_legs(req: BetRequest) -> Rejection | None:
    seen_markets: set[str] = set()
    for i, leg in enumerate(req.legs):
        if not leg.market_id or len(leg.market_id) > MAX_ID_LENGTH:
            return _bad(f"slip.legs[{i}].market_id", "market_id is required")
        if not leg.selection_id or len(leg.selection_id) > MAX_ID_LENGTH:
            return _bad(f"slip.legs[{i}].selection_id", "selection_id is required")
        if _has_control(leg.market_id) or _has_control(leg.selection_id):
            # Ids travel packed with control-character separators to the wallet's script.
            return _bad(f"slip.legs[{i}].market_id", "ids must not contain control characters")
        if leg.market_id in seen_markets:
            return _bad(f"slip.legs[{i}].market_id", "two legs on one market in one accumulator")
        seen_markets.add(leg.market_id)
        try:
            core.Odds.of(leg.odds.num, leg.odds.den)
        except core.CoreError as exc:
            return _bad(f"slip.legs[{i}].odds", f"invalid odds: {exc}")
    return None


def _validate_stake(req: BetRequest, rules: BetRules) -> Rejection | None:
    if req.stake_minor <= 0:
        return _bad("slip.stake.amount_minor", "stake must be > 0")
    if req.currency != rules.currency:
        return _bad("slip.stake.currency", f"stakes are in {rules.currency}", Reason.CURRENCY_MISMATCH)
    if req.stake_minor < rules.min_stake_minor:
        return _bad("slip.stake.amount_minor", f"minimum stake is {rules.min_stake_minor}", Reason.STAKE_TOO_LOW)
    if req.stake_minor > rules.max_stake_minor:
        return _bad("slip.stake.amount_minor", f"maximum stake is {rules.max_stake_minor}", Reason.STAKE_TOO_HIGH)
    if req.policy == AcceptancePolicy.UNSPECIFIED:
        return _bad("slip.acceptance_policy", "acceptance_policy is required")
    return None


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)
