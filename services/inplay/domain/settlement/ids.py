"""Ids of settlement runs and rows: deterministic functions of (run, bet), so a redone write rewrites the
same row (docs/settlement.md, "Run ids are unambiguous" and "Exactly once")."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from inplay.model import RunKind


def id_part(text: str) -> str:
    """One component of a run id, escaped so that the id parses one way only: ``.`` separates the parts
    of a run id, ``:`` those of an entry id (``payout:<run>:<bet>``), ``%`` is the escape. Ids made of
    other characters are unchanged (so are the run ids written before the escaping)."""
    return text.replace("%", "%25").replace(".", "%2E").replace(":", "%3A")


def settle_run_id(event_id: str, request_id: str) -> str:
    """``<event>.s.<request>`` (parts escaped): exactly two unescaped dots."""
    return f"{id_part(event_id)}.s.{id_part(request_id)}"


def rollback_run_id(target_run_id: str, n: int) -> str:
    """``<target>.r<n>``: a settle id has exactly two unescaped dots and each rollback adds one, so no
    rollback id equals a settle id (request ``a.r1`` gives ``E.s.a%2Er1``, the rollback ``E.s.a.r1``)."""
    return f"{target_run_id}.r{n}"


def entry_id_for(run_kind: RunKind, run_id: str, bet_id: str) -> str:
    prefix = "payout" if run_kind == RunKind.SETTLE else "reversal"
    return f"{prefix}:{run_id}:{bet_id}"


def seq_key_for(at_ms: int, run_id: str) -> str:
    """Bet history key of a settlement row: ordered by time, unique per run."""
    return f"{at_ms:013d}:{run_id}"


def fingerprint(bet_ids: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for bet_id in sorted(bet_ids):
        h.update(bet_id.encode())
        h.update(b"\0")
    return f"{len(bet_ids)}:{h.hexdigest()}"
