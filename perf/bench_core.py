"""Rust core vs the pure-Python reference, same run: batch quote validation and settlement evaluation.

    ./dev py perf/bench_core.py [--bets 100000] [--repeat 3]

Three ways over the same random bets (best of ``--repeat`` runs each):

- ``rust facade``: ``inplay.core.check_quotes`` / ``settle_bets`` on dataclasses (builds the tuples, one
  FFI call per batch, wraps the results in enums) — what the services call;
- ``rust raw``: ``inplay._core`` on prebuilt tuples (conversion + compute with the GIL released);
- ``python ref``: ``tests/reference/betting_math.py`` (fractions.Fraction) on the same tuples.

Prints bets/s and writes perf/results/core.json. Results are checked equal before they are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inplay import _core
from inplay.core import AcceptancePolicy, LegOutcome, Odds, Quote, SettleLeg, check_quotes, settle_bets
from tests.reference import betting_math as ref


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def rand_odds(rng: random.Random) -> Odds:
    kind = rng.random()
    if kind < 0.6:
        return Odds.of(rng.randint(1010, 20_000), 1000)
    if kind < 0.8:
        return Odds.from_american(rng.choice([-1, 1]) * rng.randint(100, 1500))
    return Odds.from_fractional(rng.randint(1, 20), rng.randint(1, 10))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bets", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    n, repeat = args.bets, args.repeat

    quotes = [
        Quote(
            rng.random() < 0.02,
            rng.randint(0, 1100),
            1000,
            (seen := rand_odds(rng)),
            seen if rng.random() < 0.5 else rand_odds(rng),
            AcceptancePolicy(rng.randint(1, 3)),
            500,
        )
        for _ in range(n)
    ]
    plain = [LegOutcome.WIN, LegOutcome.LOSE, LegOutcome.VOID, LegOutcome.HALF_WIN, LegOutcome.HALF_LOSE]

    def rand_leg() -> SettleLeg:
        if rng.random() < 0.05:
            return SettleLeg(rand_odds(rng), LegOutcome.DEAD_HEAT, (1, rng.randint(2, 4)))
        return SettleLeg(rand_odds(rng), rng.choice(plain))

    # Singles and accumulators of up to 6 legs; a third of the legs win so accumulators are not all lost.
    bets = [
        (rng.randint(100, 100_000), [rand_leg() for _ in range(rng.choice([1, 1, 1, 2, 3, 4, 6]))]) for _ in range(n)
    ]

    quote_rows = [
        (q.suspended, q.age_ms, q.max_age_ms, q.seen.num, q.seen.den, q.current.num, q.current.den, int(q.policy), 500)
        for q in quotes
    ]
    bet_rows = [
        (stake, [(lg.odds.num, lg.odds.den, int(lg.outcome), lg.dead_heat[0], lg.dead_heat[1]) for lg in legs])
        for stake, legs in bets
    ]

    def ref_quotes() -> list[int]:
        return [
            ref.check_quote(s, age, max_age, Fraction(sn, sd), Fraction(cn, cd), pol, tol)
            for s, age, max_age, sn, sd, cn, cd, pol, tol in quote_rows
        ]

    def ref_settle() -> list[tuple[int, int]]:
        return [
            ref.settle(stake, [(Fraction(on, od), code, Fraction(hn, hd)) for on, od, code, hn, hd in legs])
            for stake, legs in bet_rows
        ]

    timings: dict[str, dict[str, float]] = {"quote_check": {}, "settlement": {}}
    t, facade_q = best_of(repeat, lambda: check_quotes(quotes))
    timings["quote_check"]["rust_facade"] = t
    t, raw_q = best_of(repeat, lambda: _core.check_quotes(quote_rows))
    timings["quote_check"]["rust_raw"] = t
    t, want_q = best_of(1, ref_quotes)
    timings["quote_check"]["python_reference"] = t
    assert [int(r) for r in facade_q] == raw_q == want_q

    t, facade_s = best_of(repeat, lambda: settle_bets(bets))
    timings["settlement"]["rust_facade"] = t
    t, raw_s = best_of(repeat, lambda: _core.settle_bets(bet_rows))
    timings["settlement"]["rust_raw"] = t
    t, want_s = best_of(1, ref_settle)
    timings["settlement"]["python_reference"] = t
    assert [(int(s), v) for s, v in facade_s] == raw_s == want_s

    results: dict[str, Any] = {
        "bets": n,
        "repeat": repeat,
        "legs_per_bet_mean": round(sum(len(legs) for _, legs in bets) / n, 2),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "note": "bets/s over one batch of `bets`; rust figures include Python→Rust conversion (one call per "
        "batch); python_reference is tests/reference/betting_math.py (Fraction) on the same inputs",
    }
    for name, row in timings.items():
        per_s = {k: round(n / v) for k, v in row.items()}
        results[name] = {
            **{f"{k}_per_s": v for k, v in per_s.items()},
            "speedup_raw_vs_ref": round(row["python_reference"] / row["rust_raw"], 1),
            "speedup_facade_vs_ref": round(row["python_reference"] / row["rust_facade"], 1),
        }

    print(f"{n:,} bets, best of {repeat}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    print(f"{'bets/s':14s}{'rust raw':>13s}{'rust facade':>13s}{'python ref':>13s}{'raw/ref':>9s}{'facade/ref':>11s}")
    for name in timings:
        r = results[name]
        print(
            f"{name:14s}{r['rust_raw_per_s']:>13,}{r['rust_facade_per_s']:>13,}{r['python_reference_per_s']:>13,}"
            f"{r['speedup_raw_vs_ref']:>8}x{r['speedup_facade_vs_ref']:>10}x"
        )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "core.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
