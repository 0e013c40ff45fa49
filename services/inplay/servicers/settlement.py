"""SettlementService: thin gRPC adapter over :class:`inplay.domain.settlement.SettlementService`.
Operator-only (``auth.require_operator`` first in every handler); errors are mapped by ``@rpc``."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from inplay import auth
from inplay.convert import timestamp_from_ms
from inplay.core import LegOutcome
from inplay.domain.settlement import Results, RunView, SettlementService, make_results
from inplay.errors import FieldViolation, InvalidArgument
from inplay.model import RunState
from inplay.servicers.rpc import rpc
from inplay.settlement.v1 import settlement_pb2, settlement_pb2_grpc

_RESULTS = {
    settlement_pb2.SELECTION_RESULT_WIN: LegOutcome.WIN,
    settlement_pb2.SELECTION_RESULT_LOSE: LegOutcome.LOSE,
    settlement_pb2.SELECTION_RESULT_VOID: LegOutcome.VOID,
    settlement_pb2.SELECTION_RESULT_PUSH: LegOutcome.PUSH,
    settlement_pb2.SELECTION_RESULT_HALF_WIN: LegOutcome.HALF_WIN,
    settlement_pb2.SELECTION_RESULT_HALF_LOSE: LegOutcome.HALF_LOSE,
    settlement_pb2.SELECTION_RESULT_DEAD_HEAT: LegOutcome.DEAD_HEAT,
}


def results_from_proto(outcomes: Iterable[settlement_pb2.SelectionOutcome], void_market_ids: Iterable[str]) -> Results:
    rows = []
    violations = []
    for i, o in enumerate(outcomes):
        outcome = _RESULTS.get(o.result)
        if outcome is None:
            violations.append(FieldViolation(f"outcomes[{i}].result", "required"))
            continue
        dead_heat = (1, 1)
        if outcome == LegOutcome.DEAD_HEAT:
            num, den = int(o.dead_heat_numerator), int(o.dead_heat_denominator)
            if not 0 < num <= den:
                violations.append(
                    FieldViolation(f"outcomes[{i}].dead_heat_numerator", "dead heat factor must be in (0, 1]")
                )
                continue
            dead_heat = (num, den)
        rows.append((o.market_id, o.selection_id, outcome, dead_heat))
    if violations:
        raise InvalidArgument("invalid outcomes", violations=violations)
    try:
        return make_results(rows, list(void_market_ids))
    except ValueError as exc:
        raise InvalidArgument(str(exc), violations=[FieldViolation("outcomes", str(exc))]) from None


def field_paths(
    outcomes: Iterable[settlement_pb2.SelectionOutcome], void_market_ids: Iterable[str]
) -> dict[tuple[str, str], str]:
    """The request field of each outcome and voided market (for validation errors' field paths)."""
    paths = {(o.market_id, o.selection_id): f"outcomes[{i}]" for i, o in enumerate(outcomes)}
    paths.update({(m, ""): f"void_market_ids[{j}]" for j, m in enumerate(void_market_ids)})
    return paths


def run_to_proto(run: RunView) -> settlement_pb2.SettlementRun:
    record = run.record
    msg = settlement_pb2.SettlementRun(
        run_id=record.run_id,
        event_id=record.event_id,
        kind=int(record.kind),  # type: ignore[arg-type]
        state=int(run.state),  # type: ignore[arg-type]
        target_run_id=record.target_run_id,
        bets_total=run.stats.bets_total,
        bets_processed=run.stats.bets_processed,
        bets_still_open=run.stats.bets_still_open,
        payouts_minor=run.stats.payouts_minor,
        reason=record.reason,
        error=run.error,
        negative_balance_accounts=list(run.stats.negative_balance_accounts),
    )
    if record.started_at_ms:
        msg.started_at.CopyFrom(timestamp_from_ms(record.started_at_ms))
    if run.finished_at_ms and run.state in (RunState.COMPLETED, RunState.FAILED):
        msg.finished_at.CopyFrom(timestamp_from_ms(run.finished_at_ms))
    return msg


class SettlementServicer(settlement_pb2_grpc.SettlementServiceServicer):
    def __init__(self, settlement: SettlementService) -> None:
        self._settlement = settlement

    @rpc
    async def SettleEvent(
        self, request: settlement_pb2.SettleEventRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.SettleEventResponse:
        auth.require_operator(auth.principal(context))
        results = results_from_proto(request.outcomes, request.void_market_ids)
        run = await self._settlement.settle_event(
            request.event_id,
            results,
            request.request_id,
            reason=request.reason,
            wait=request.wait,
            field_paths=field_paths(request.outcomes, request.void_market_ids),
        )
        return settlement_pb2.SettleEventResponse(run=run_to_proto(run))

    @rpc
    async def RollbackSettlement(
        self, request: settlement_pb2.RollbackSettlementRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.RollbackSettlementResponse:
        auth.require_operator(auth.principal(context))
        run = await self._settlement.rollback(
            request.event_id, request.run_id, reason=request.reason, wait=request.wait
        )
        return settlement_pb2.RollbackSettlementResponse(run=run_to_proto(run))

    @rpc
    async def ResettleEvent(
        self, request: settlement_pb2.ResettleEventRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.ResettleEventResponse:
        auth.require_operator(auth.principal(context))
        results = results_from_proto(request.outcomes, request.void_market_ids)
        rollback, settle = await self._settlement.resettle(
            request.event_id,
            results,
            request.request_id,
            reason=request.reason,
            wait=request.wait,
            field_paths=field_paths(request.outcomes, request.void_market_ids),
        )
        return settlement_pb2.ResettleEventResponse(
            rollback_run=run_to_proto(rollback), settle_run=run_to_proto(settle)
        )

    @rpc
    async def GetSettlementStatus(
        self, request: settlement_pb2.GetSettlementStatusRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.GetSettlementStatusResponse:
        auth.require_operator(auth.principal(context))
        report = await self._settlement.status(request.event_id, request.run_id)
        return settlement_pb2.GetSettlementStatusResponse(
            run=run_to_proto(report.run), history=[run_to_proto(r) for r in report.history]
        )


def add_to_server(server: grpc.aio.Server, settlement: SettlementService) -> None:
    settlement_pb2_grpc.add_SettlementServiceServicer_to_server(SettlementServicer(settlement), server)
