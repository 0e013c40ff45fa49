"""Settlement of events: batch runs, exactly-once payouts, rollbacks and resettlement (docs/settlement.md)."""

from inplay.domain.settlement.model import (
    MarketResult,
    Results,
    RunRecord,
    RunStats,
    RunView,
    SelectionResult,
    make_results,
)
from inplay.domain.settlement.service import SettlementService, StatusReport
from inplay.domain.settlement.settings import SettlementConfig

__all__ = [
    "MarketResult",
    "Results",
    "RunRecord",
    "RunStats",
    "RunView",
    "SelectionResult",
    "SettlementConfig",
    "SettlementService",
    "StatusReport",
    "make_results",
]
