"""The web bet slip in a real browser (Debian's chromium, headless, driven by playwright-core) through the
real Envoy: live odds update on screen over gRPC-web streaming, a bet at a stale price is rejected with the
new price from the OddsChanged detail, the offered price is taken and the bet is accepted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest
from edge_helpers import Edge, FeedDriver

from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay_edge import repo_root

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("INPLAY_CHROMIUM", "/usr/bin/chromium")


def _moved(price: str) -> str:
    # +8 %: outside the 5 % acceptance tolerance, inside the feed's 15 % price-jump band.
    return str((Decimal(price) * Decimal("1.08")).quantize(Decimal("0.01")))


def test_browser_places_a_bet_on_live_odds(edge: Edge, feed: FeedDriver, artifacts: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing (apt-get install -y chromium)")
    node = shutil.which("node")
    assert node, "node is needed for playwright-core"
    assert edge.event is not None
    edge.deposit("alice", 10_000)
    root = repo_root()
    for old in artifacts.glob("betslip-*.png"):
        old.unlink()
    env = dict(
        os.environ,
        BASE_URL=edge.base_url,
        EVENT_ID=edge.event.event_id,
        USER_NAME="alice",
        SCREENSHOT_DIR=str(artifacts),
        WEB_DIR=str(root / "gateway" / "web"),
        CHROMIUM=CHROMIUM,
    )
    proc = subprocess.Popen(
        [node, str(root / "tests" / "e2e" / "betslip_browser.cjs")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    result: dict[str, object] = {}
    moves = 0
    try:
        for line in proc.stdout:
            msg = json.loads(line)
            if msg.get("need") == "move":
                moves += 1
                if moves > 1:
                    # Two moves within the feed's jump window (2 s) would add up to a PRICE_JUMP suspension.
                    time.sleep(2.2)
                feed.price(str(msg["market"]), {str(msg["selection"]): _moved(str(msg["from"]))})
                proc.stdin.write('{"ok": true}\n')
                proc.stdin.flush()
            else:
                result = msg
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result.get("done"), json.dumps(result, indent=1)
    assert moves == 2
    # Odds updated in place on screen.
    assert result["updatedInPlace"] is True
    assert result["priceAfter"] == _moved(str(result["priceBefore"]))
    # The stale price was rejected with the new price offered, which was then accepted.
    assert "ODDS_CHANGED" in str(result["rejectedReason"])
    assert _moved(str(result["priceAfter"])) in str(result["oddsChanged"])
    assert "Bet accepted" in str(result["accepted"])
    assert result["consoleErrors"] == [], result["consoleErrors"]
    bets = bets_pb2_grpc.BetServiceStub(edge.channel())
    bet = bets.GetBet(bets_pb2.GetBetRequest(bet_id=str(result["betId"])), metadata=edge.md("alice"), timeout=5)
    assert bet.bet.account_id == "alice"
    assert bet.bet.stake.amount_minor == 250
    assert bet.bet.legs[0].odds.decimal == _moved(str(result["priceAfter"]))
    assert (artifacts / "betslip-accepted.png").is_file()
