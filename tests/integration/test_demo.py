"""The README's demo runs end to end: embedded stores, and the real stack through Envoy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.keyspaces import drop_keyspace


def run_demo(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "inplay.demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_embedded_demo_conserves_money() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INPLAY_")}
    out = run_demo(env=env)
    assert "embedded stores" in out
    assert "REJECTED ODDS_CHANGED" in out
    assert "REJECTED MARKET_SUSPENDED" in out
    assert "REJECTED INSUFFICIENT_FUNDS" in out
    assert "duplicate submit -> same bet" in out
    assert "RUN_STATE_COMPLETED" in out
    assert "money conserved: YES" in out


@pytest.mark.integration
def test_real_demo_through_envoy(stack_env: dict[str, str], unique_id: object) -> None:
    env = dict(os.environ)
    suffix = os.urandom(3).hex()
    env["INPLAY_REDIS_PREFIX"] = f"demo-{suffix}:"
    env["INPLAY_TOPIC_PREFIX"] = f"demo-{suffix}."
    env["INPLAY_KEYSPACE"] = f"demo_{suffix}"
    try:
        out = run_demo("--real", env=env)
    finally:
        drop_keyspace(stack_env, env["INPLAY_KEYSPACE"])
    assert "real stack" in out
    assert "money conserved: YES" in out
