"""Admission's slot counter (servicers/admission.py): cap, FIFO hand-over, queue-time shedding, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from inplay.servicers.admission import Admission, AdmissionSettings, admission_interceptors


def admission(cap: int = 1, target_ms: int = 50, waiting: int = 10) -> Admission:
    return Admission(AdmissionSettings(cap, target_ms / 1000, waiting, 0.2))


async def test_cap_then_fifo_hand_over() -> None:
    adm = admission(cap=1, target_ms=1000)
    assert await adm.acquire() == ""
    order: list[int] = []

    async def wait(i: int) -> None:
        assert await adm.acquire() == ""
        order.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert adm.waiting == 3 and adm.in_flight == 1
    for _ in range(3):
        adm.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and adm.in_flight == 1


async def test_waiter_is_shed_after_the_queue_target_and_full_queue_at_once() -> None:
    adm = admission(cap=1, target_ms=20, waiting=1)
    assert await adm.acquire() == ""
    waiter = asyncio.create_task(adm.acquire())
    await asyncio.sleep(0)
    assert await adm.acquire() == "full"  # one waiter is the maximum
    assert await waiter == "queue_time"
    assert adm.waiting == 0 and adm.in_flight == 1
    adm.release()
    assert adm.in_flight == 0 and await adm.acquire() == ""


async def test_cancelled_waiter_leaves_no_slot_behind() -> None:
    adm = admission(cap=1, target_ms=1000)
    assert await adm.acquire() == ""
    waiter = asyncio.create_task(adm.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert adm.waiting == 0
    adm.release()
    assert adm.in_flight == 0


def test_shed_error_carries_retry_info_and_zero_cap_disables() -> None:
    error = admission().shed_error("full")
    assert error.reason == "OVERLOADED" and error.metadata["retry_after_ms"] == "200"
    (retry,) = error.details
    assert retry.retry_delay.nanos == 200_000_000  # type: ignore[attr-defined]
    assert admission_interceptors(AdmissionSettings(0, 0.05, 10, 0.2)) == []
