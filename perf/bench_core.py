"""Rust core vs the pure-Python reference, same run: batch quote validation and settlement evaluation.

    ./dev py perf/bench_core.py [--bets 100000]

Prints bets/s for each and writes perf/results/core.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inplay.core import AcceptancePolicy, LegOutcome, Odds, Quote, SettleLeg, check_quotes, settle_bets

from tests.reference import betting_math as ref


def timed(fn: object, *args: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bets", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(1)
    n = args.bets

    def rand_odds() -> Odds:
        return Odds.of(rng.randint(1010, 20_000), 1000)

    quotes = [
        Quote(False, rng.randint(0, 900), 1000, rand_odds(), rand_odds(), AcceptancePolicy(rng.randint(1, 3)), 500)
        for _ in range(n)
    ]
    bets = [
        (
            rng.randint(100, 100_000),
            [SettleLeg(rand_odds(), LegOutcome(rng.randint(1, 6))) for _ in range(rng.randint(1, 4))],
        )
        for _ in range(n)
    ]

    rust_q, got_q = timed(check_quotes, quotes)
    py_q, want_q = timed(
        lambda: [
            ref.check_quote(
                q.suspended,
                q.age_ms,
                q.max_age_ms,
                Fraction(q.seen.num, q.seen.den),
                Fraction(q.current.num, q.current.den),
                int(q.policy),
                q.tolerance_bp,
            )
            for q in quotes
        ]
    )
    assert [int(r) for r in got_q] == want_q  # type: ignore[union-attr]
    rust_s, got_s = timed(settle_bets, bets)
    py_s, want_s = timed(
        lambda: [
            ref.settle(stake, [(Fraction(leg.odds.num, leg.odds.den), int(leg.outcome), Fraction(1)) for leg in legs])
            for stake, legs in bets
        ]
    )
    assert [(int(s), v) for s, v in got_s] == want_s  # type: ignore[union-attr]
    results = {
        "bets": n,
        "quote_check": {
            "rust_per_s": round(n / rust_q),
            "python_reference_per_s": round(n / py_q),
            "speedup": round(py_q / rust_q, 1),
        },
        "settlement": {
            "rust_per_s": round(n / rust_s),
            "python_reference_per_s": round(n / py_s),
            "speedup": round(py_s / rust_s, 1),
        },
        "note": "Rust figures include building the Python tuples and crossing the FFI boundary; one call per batch.",
    }
    print(f"{'':22s}{'Rust core':>14s}{'Python ref':>14s}{'speedup':>9s}")
    for name in ("quote_check", "settlement"):
        r = results[name]
        assert isinstance(r, dict)
        print(f"{name + ' (bets/s)':22s}{r['rust_per_s']:>14,}{r['python_reference_per_s']:>14,}{r['speedup']:>8}x")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "core.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
