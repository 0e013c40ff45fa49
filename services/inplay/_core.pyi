"""Type stubs of the Rust extension (core_rs/py). Odds travel as (num, den) ints; money as int minor units.

Batch functions convert their inputs first, compute with the GIL released, and name the failing item
(``item 3: ...``) in any error.
"""

from collections.abc import Sequence
from typing import final

__all__ = [
    "MAX_LEGS",
    "ArithmeticOverflow",
    "CoreError",
    "InvalidCoreInput",
    "InvalidOdds",
    "InvalidStake",
    "JumpBand",
    "check_quotes",
    "encode_odds_records",
    "encode_price_items",
    "implied_probability_ppm",
    "odds_american_display",
    "odds_decimal_display",
    "odds_from_american",
    "odds_from_decimal",
    "odds_from_fractional",
    "odds_normalize",
    "odds_to_american",
    "odds_to_fractional",
    "potential_return",
    "potential_returns",
    "read_alpha_prices",
    "settle_bets",
]

MAX_LEGS: int

class CoreError(Exception):
    """Base of every error raised by the Rust core."""

class InvalidOdds(CoreError, ValueError):
    """Malformed odds, or odds outside (1, 10000] or with a reduced denominator above 1,000,000."""

class InvalidStake(CoreError, ValueError):
    """A stake that is not a positive i64 amount."""

class InvalidCoreInput(CoreError, ValueError):
    """A bad policy, outcome, dead-heat factor, leg count or other argument."""

class ArithmeticOverflow(CoreError, OverflowError):
    """An exact amount that does not fit a signed 64-bit integer."""

def odds_from_decimal(text: str) -> tuple[int, int]: ...
def odds_from_american(american: int) -> tuple[int, int]: ...
def odds_from_fractional(n: int, d: int) -> tuple[int, int]: ...
def odds_normalize(num: int, den: int) -> tuple[int, int]: ...
def odds_to_american(num: int, den: int) -> tuple[int, int]: ...
def odds_american_display(num: int, den: int) -> int: ...
def odds_to_fractional(num: int, den: int) -> tuple[int, int]: ...
def odds_decimal_display(num: int, den: int, places: int | None = None) -> str: ...  # None = 2 places
def implied_probability_ppm(num: int, den: int) -> int: ...
def check_quotes(quotes: list[tuple[bool, int, int, int, int, int, int, int, int]]) -> list[int]: ...
def potential_return(stake: int, legs: list[tuple[int, int]]) -> int: ...
def potential_returns(bets: list[tuple[int, list[tuple[int, int]]]]) -> list[int]: ...

# Status codes: 0 open, 1 won, 2 lost, 3 refunded, 4 partial (``inplay.core`` maps them to ``BetState``).
def settle_bets(bets: list[tuple[int, list[tuple[int, int, int, int, int]]]]) -> list[tuple[int, int]]: ...

@final
class JumpBand:
    """The odds feed's price-jump band (``inplay_core::band``): ``check`` per price update, ``commit`` per
    chunk. ``prices``: ``(selection, num, den)`` of each selection of the market."""

    def __new__(cls, band_bp: int, window_ms: int, max_history: int) -> JumpBand: ...
    def check(self, market: str, ts_ms: int, prices: list[tuple[str, int, int]]) -> tuple[bool, int]: ...
    def commit(self, tokens: list[int]) -> None: ...
    def forget(self, market: str) -> None: ...
    def clear_pending(self) -> None: ...
    @property
    def markets(self) -> int: ...

# Per payload: (seq, ts_ms, correction, event_ref, market_ref, [(selection, num, den)]) or None (declined).
def read_alpha_prices(
    payloads: list[bytes],
) -> list[tuple[int, int, bool, str, str, list[tuple[str, int, int]]] | None]: ...

# The price script's items of a batch of PriceWrite (each with its held version), or None when a number does
# not fit 64 bits.
def encode_price_items(writes: Sequence[object], held_versions: list[int]) -> str | None: ...

# The inplay.odds.v1 record of each applied MarketState (with its status name and change entries), or None
# when a number does not fit 64 bits.
def encode_odds_records(
    states: Sequence[object], statuses: list[str], changes: Sequence[Sequence[object]]
) -> list[bytes] | None: ...
