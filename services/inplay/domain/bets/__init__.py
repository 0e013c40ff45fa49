"""Bet acceptance: validation (:mod:`.validation`), the placement use case (:mod:`.placement`) and the
results and reasons of a slip (:mod:`.rejections`). The idempotency-record codec is
:mod:`inplay.domain.records` (not re-exported here: it imports
:mod:`.rejections`); the generic group committer is :mod:`inplay.batching`."""

from inplay.batching import GroupCommitter
from inplay.domain.bets.placement import BetPlacement, BetReader
from inplay.domain.bets.rejections import (
    INPUT_REASONS,
    TRANSIENT_REASONS,
    OddsChangedInfo,
    PlacementResult,
    Reason,
    Rejection,
)
from inplay.domain.bets.validation import MAX_ID_LENGTH, MAX_IDEMPOTENCY_KEY, validate_request

__all__ = [
    "INPUT_REASONS",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_ID_LENGTH",
    "TRANSIENT_REASONS",
    "BetPlacement",
    "BetReader",
    "GroupCommitter",
    "OddsChangedInfo",
    "PlacementResult",
    "Reason",
    "Rejection",
    "validate_request",
]
