"""Fault injection through the ports: a wrapper around any adapter (memory or real) whose named method
fails on a chosen call, either before the call reaches the store or after it was applied (an uncertain
outcome: a client timeout on a write that landed). Production code has no hooks for this."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class InjectedFault(ConnectionError):
    """The error a wrapped method raises (a ConnectionError: transient for every caller)."""


@dataclass
class _Fault:
    method: str
    applied: bool  # True: the call reaches the store first, then the error is raised
    when: Callable[[tuple[Any, ...]], bool]
    remaining: int
    hang: asyncio.Event | None = None  # set: the call hangs (until cancelled) instead of failing


class Faulty:
    """``Faulty(inner)`` behaves as ``inner``; ``fail(method, ...)`` arms a fault on ``method``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._faults: list[_Fault] = []
        self.fired: list[str] = []

    def fail(
        self,
        method: str,
        *,
        applied: bool = False,
        when: Callable[[tuple[Any, ...]], bool] = lambda args: True,
        times: int = 1,
    ) -> None:
        self._faults.append(_Fault(method, applied, when, times))

    def hang(
        self, method: str, *, applied: bool = False, when: Callable[[tuple[Any, ...]], bool] = lambda args: True
    ) -> asyncio.Event:
        """The next matching call (after reaching the store if ``applied``) never returns: the caller can
        only be cancelled there (a client deadline, a SIGTERM drain). Returns an event set on entry."""
        entered = asyncio.Event()
        self._faults.append(_Fault(method, applied, when, 1, entered))
        return entered

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target) or not any(f.method == name for f in self._faults):
            return target

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            fault = next((f for f in self._faults if f.method == name and f.remaining and f.when(args)), None)
            if fault is None:
                return await target(*args, **kwargs)
            fault.remaining -= 1
            self.fired.append(name)
            if fault.applied:
                await target(*args, **kwargs)
            if fault.hang is not None:
                fault.hang.set()
                await asyncio.Event().wait()
            raise InjectedFault(f"injected fault in {name} (applied={fault.applied})")

        return wrapped
