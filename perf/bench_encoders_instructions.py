"""Instructions per write of the odds hot path's two JSON encoders, Python reference against the core
(docs/odds-pipeline.md, "Ninth round"): the price script's item (``_price_item`` + ``encode_body`` + ``_pack``
against ``inplay.core.encode_price_items``) and the ``inplay.odds.v1`` record (``odds_json`` against
``inplay.core.encode_odds_records``). One market of 3 selections and 1 change entry per write, 500 writes a
batch; per write = (count at 12 batches - count at 2 batches) / 5,000, under callgrind (start-up cancels).

    .venv/bin/python perf/bench_encoders_instructions.py

About a minute; needs valgrind, no servers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("items-py", "items-rs", "rec-py", "rec-rs")
WRITES = 500


def run_mode(mode: str, reps: int) -> None:
    """The measured process: builds the batch, then encodes it ``reps`` times."""
    sys.path.insert(0, str(ROOT / "services"))
    from inplay.adapters.redis_odds import _body_of, _pack, _price_item
    from inplay.core import Odds, encode_odds_records, encode_price_items
    from inplay.domain.markets import _STATUS_NAME, changes_between, odds_json
    from inplay.model import MarketState, MarketStatus, SelectionPrice
    from inplay.ports import PriceWrite

    names = ("Home", "Draw", "Away")

    def write(i: int) -> PriceWrite:
        sels = tuple(SelectionPrice(f"ev{i}-mr-{k}", n, Odds(200 + k * 37, 100)) for k, n in enumerate(names))
        return PriceWrite(
            f"ev{i}-mr", f"ev{i}", "football", "MATCH_RESULT", "Match result", True, sels,
            1_764_800_000_000 + i, 1_764_800_000_000 + i, "alpha", "", False, 1_764_800_000_000 + i, "alpha",
        )  # fmt: skip

    def state(i: int, moved: int) -> MarketState:
        sels = tuple(
            SelectionPrice(f"ev{i}-mr-{k}", n, Odds(200 + (k * 37 if k else moved), 100)) for k, n in enumerate(names)
        )
        return MarketState(
            f"ev{i}-mr", f"ev{i}", "football", "MATCH_RESULT", "Match result", True, MarketStatus.ACTIVE, "",
            sels, 5 + moved, 1_764_800_000_000 + i, "alpha",
        )  # fmt: skip

    writes = [write(i) for i in range(WRITES)]
    pairs = [(state(i, 0), state(i, 1)) for i in range(WRITES)]
    groups = [changes_between(a, b, "alpha", "", 1_764_800_000_000) for a, b in pairs]
    states = [b for _, b in pairs]
    versions = [0] * WRITES
    for _ in range(reps):
        if mode == "items-py":
            _pack([_price_item(w, _body_of(w), None) for w in writes])
        elif mode == "items-rs":
            encode_price_items(writes, versions)
        elif mode == "rec-py":
            [odds_json(s, g) for s, g in zip(states, groups, strict=True)]
        else:
            encode_odds_records(states, [_STATUS_NAME[s.status] for s in states], groups)


def count(mode: str, reps: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", sys.executable, __file__, mode]
        done = subprocess.run(
            [*cmd, str(reps)], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, check=True
        )
        hit = re.search(r"Collected : ([\d,]+)", done.stderr)
        if hit is None:
            raise RuntimeError(done.stderr[-2000:])
        return int(hit.group(1).replace(",", ""))


def main() -> None:
    if len(sys.argv) == 3:
        run_mode(sys.argv[1], int(sys.argv[2]))
        return
    for mode in MODES:
        per_write = (count(mode, 12) - count(mode, 2)) / (10 * WRITES)
        print(f"{mode:9} {per_write:>9,.0f} instructions per write", flush=True)


if __name__ == "__main__":
    main()
