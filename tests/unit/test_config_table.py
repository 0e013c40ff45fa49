"""The INPLAY_* settings table: defaults agree with the modules, accessors, generated doc, lint, jwt mode."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from inplay import auth, config
from inplay.adapters import migrations
from inplay.config import SETTINGS, BetRules, JournalSettings, Settings, StackSettings
from inplay.domain.feed.rules import FeedRules
from inplay.domain.settlement.settings import SettlementConfig
from inplay.errors import Unauthenticated
from inplay_edge import EdgeSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("INPLAY_")]:
        monkeypatch.delenv(name)


# ------------------------------------------------------------------ registry defaults == module defaults

# What each module uses today with an empty environment (read through its own from_env / reader).
MODULE_DEFAULTS: dict[str, Callable[[], Any]] = {
    **{name: (lambda f=f: getattr(BetRules.from_env(), f)) for name, f in {
        "INPLAY_TOLERANCE_BP": "tolerance_bp", "INPLAY_MIN_STAKE_MINOR": "min_stake_minor",
        "INPLAY_MAX_STAKE_MINOR": "max_stake_minor", "INPLAY_MAX_PAYOUT_MINOR": "max_payout_minor",
        "INPLAY_LIABILITY_CAP_MINOR": "liability_cap_minor", "INPLAY_MAX_LEGS": "max_legs",
        "INPLAY_MAX_PRICE_AGE_PREMATCH_MS": "max_price_age_prematch_ms",
        "INPLAY_MAX_PRICE_AGE_INPLAY_MS": "max_price_age_inplay_ms", "INPLAY_INPLAY_DELAY_MS": "inplay_delay_ms",
        "INPLAY_CURRENCY": "currency", "INPLAY_BATCH_WINDOW_MS": "batch_window_ms", "INPLAY_BATCH_MAX": "batch_max",
    }.items()},
    **{name: (lambda f=f: getattr(JournalSettings.from_env(), f)) for name, f in {
        "INPLAY_JOURNAL_SHARDS": "shards", "INPLAY_JOURNAL_MAX_BATCH": "max_batch",
        "INPLAY_JOURNAL_MAX_QUEUE": "max_queue", "INPLAY_JOURNAL_COMMIT_TIMEOUT_S": "commit_timeout_s",
        "INPLAY_JOURNAL_LEASE_TTL_MS": "lease_ttl_ms", "INPLAY_JOURNAL_ADOPT_PERIOD_S": "adopt_period_s",
    }.items()},
    **{name: (lambda f=f: getattr(StackSettings.from_env(), f)) for name, f in {
        "INPLAY_REDIS_URL": "redis_url", "INPLAY_CASSANDRA_PORT": "cassandra_port", "INPLAY_KEYSPACE": "keyspace",
        "INPLAY_KAFKA_BOOTSTRAP": "kafka_bootstrap", "INPLAY_REDIS_PREFIX": "redis_prefix",
        "INPLAY_TOPIC_PREFIX": "topic_prefix",
    }.items()},
    "INPLAY_CASSANDRA_HOSTS": lambda: ",".join(StackSettings.from_env().cassandra_hosts),
    **{name: (lambda f=f: getattr(Settings.from_env(), f)) for name, f in {
        "INPLAY_GRPC_PORT": "grpc_port", "INPLAY_METRICS_PORT": "metrics_port", "INPLAY_AUTH_MODE": "auth_mode",
        "INPLAY_JWT_PUBLIC_KEY_FILE": "jwt_public_key_file", "INPLAY_JWT_ISSUER": "jwt_issuer",
        "INPLAY_JWT_AUDIENCE": "jwt_audience",
    }.items()},
    **{f"INPLAY_FEED_{f.upper()}": (lambda f=f: getattr(FeedRules.from_env(), f)) for f in (
        "lag_inplay_ms", "lag_prematch_ms", "jump_band_bp", "jump_window_ms", "max_future_ms",
        "clock_ahead_tolerance_ms", "heartbeat_timeout_ms", "failover_lag_ms", "gap_window_ms",
        "failback_after_ms", "chunk_size", "watchdog_interval_ms", "mapping_refresh_ms",
    )},
    **{f"INPLAY_SETTLEMENT_{f.upper()}": (lambda f=f: getattr(SettlementConfig.from_env(), f)) for f in (
        "page_size", "multi_page_size", "lock_ttl_ms", "lock_wait_ms", "multi_lock_wait_ms",
        "history_concurrency", "commit_concurrency", "workers",
    )},
    **{name: (lambda f=f: getattr(EdgeSettings.from_env(ROOT), f)) for name, f in {
        "INPLAY_EDGE_ADDRESS": "listen_address", "INPLAY_EDGE_PORT": "listen_port",
        "INPLAY_EDGE_ADMIN_PORT": "admin_port", "INPLAY_EDGE_JWT_MAX_LIFETIME_S": "jwt_max_lifetime_s",
        "INPLAY_EDGE_JWKS_FILE": "jwks_file", "INPLAY_EDGE_BET_RATE_PER_USER": "bet_user_rate",
        "INPLAY_EDGE_BET_BURST_PER_USER": "bet_user_burst", "INPLAY_EDGE_BET_RATE_GLOBAL": "bet_global_rate",
        "INPLAY_EDGE_BET_BURST_GLOBAL": "bet_global_burst", "INPLAY_EDGE_BET_MAX_USERS": "bet_max_users",
        "INPLAY_EDGE_STREAM_IDLE_TIMEOUT_S": "stream_idle_timeout_s",
        "INPLAY_EDGE_HEALTH_INTERVAL_S": "health_interval_s", "INPLAY_EDGE_MAX_CONNECTIONS": "max_connections",
        "INPLAY_EDGE_ACCESS_LOG": "access_log", "INPLAY_EDGE_DEV_TOKENS": "dev_tokens",
        "INPLAY_EDGE_DEMO_EVENT": "demo_event_id",
    }.items()},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MODULE_DEFAULTS))
def test_registry_default_is_the_modules_default(clean_env: None, name: str) -> None:
    assert SETTINGS[name].default == MODULE_DEFAULTS[name]()


def test_config_dataclass_defaults_agree_with_the_registry(clean_env: None) -> None:
    # from_env reads through the registry; the dataclass field defaults (used by tests and by
    # Settings()) must say the same.
    assert BetRules.from_env() == BetRules()
    assert JournalSettings.from_env() == JournalSettings()
    assert StackSettings.from_env() == StackSettings()
    assert Settings.from_env() == Settings()


def test_cassandra_replication_default_is_simple_strategy(clean_env: None) -> None:
    assert SETTINGS["INPLAY_CASSANDRA_REPLICATION"].default == ""
    assert migrations.replication_map() == migrations.replication_map("")


def test_every_setting_has_a_known_component_and_a_description() -> None:
    for entry in SETTINGS.values():
        assert entry.component in config.COMPONENTS, entry.name
        assert entry.description.strip() and entry.read_by, entry.name
        kind = {"int": int, "float": float, "str": str, "bool": bool}[entry.kind]
        assert type(entry.default) is kind, entry.name


def test_secrets_are_marked() -> None:
    assert SETTINGS["INPLAY_PAGE_TOKEN_SECRET"].secret
    assert "**Secret.**" in config.markdown()


# -------------------------------------------------------------------------------------------- accessors


def test_accessors_parse_and_fall_back_to_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPLAY_MAX_LEGS", "7")
    monkeypatch.setenv("INPLAY_BATCH_WINDOW_MS", "2.5")
    monkeypatch.setenv("INPLAY_CURRENCY", "")
    monkeypatch.setenv("INPLAY_EDGE_DEV_TOKENS", "yes")
    assert config.setting_int("INPLAY_MAX_LEGS") == 7
    assert config.setting_float("INPLAY_BATCH_WINDOW_MS") == 2.5
    assert config.setting_str("INPLAY_CURRENCY") == "EUR"  # empty counts as unset
    assert config.setting_bool("INPLAY_EDGE_DEV_TOKENS") is True
    monkeypatch.delenv("INPLAY_EDGE_UPSTREAM", raising=False)
    assert config.setting_str("INPLAY_EDGE_UPSTREAM", "127.0.0.1:1") == "127.0.0.1:1"


def test_accessors_raise_on_an_unregistered_name_a_wrong_type_or_a_bad_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(config.UnknownSetting):
        config.setting_int("INPLAY_NO_SUCH_THING")
    with pytest.raises(TypeError):
        config.setting_int("INPLAY_CURRENCY")
    monkeypatch.setenv("INPLAY_MAX_LEGS", "twenty")
    with pytest.raises(ValueError, match="INPLAY_MAX_LEGS"):
        config.setting_int("INPLAY_MAX_LEGS")


# --------------------------------------------------------------------------------------------- doc, lint


def _lint() -> Any:
    spec = importlib.util.spec_from_file_location("check_config", ROOT / "scripts" / "lint" / "check_config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_doc_is_what_the_registry_generates() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == config.markdown()


def test_doc_has_one_table_per_component_with_every_setting() -> None:
    doc = config.markdown()
    for component in config.COMPONENTS:
        assert f"\n## {component}\n" in doc
    for name in SETTINGS:
        assert f"| `{name}` |" in doc


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """A copy of services/inplay, services/inplay_edge and docs/configuration.md that the lint check runs
    against."""
    for package in ("inplay", "inplay_edge"):
        shutil.copytree(ROOT / "services" / package, tmp_path / "services" / package, ignore=shutil.ignore_patterns(
            "*.so", "__pycache__"))  # fmt: skip
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "docs" / "configuration.md", tmp_path / "docs" / "configuration.md")
    yield tmp_path


def test_lint_passes_on_the_checkout() -> None:
    assert _lint().check(ROOT) == []


def test_lint_fails_on_an_unregistered_name(tree: Path) -> None:
    module = tree / "services" / "inplay" / "tracing.py"
    module.write_text(module.read_text() + '\nX = os.environ.get("INPLAY_MADE_UP_KNOB")\n')
    problems = _lint().check(tree)
    assert any("INPLAY_MADE_UP_KNOB is not registered" in p for p in problems), problems


def test_lint_fails_on_a_stale_doc(tree: Path) -> None:
    doc = tree / "docs" / "configuration.md"
    doc.write_text(doc.read_text().replace("`LOCAL_ONE`", "`QUORUM`"))
    problems = _lint().check(tree)
    assert any("configuration.md is stale" in p for p in problems), problems


def test_lint_fails_on_a_registered_setting_nobody_reads(tree: Path) -> None:
    module = tree / "services" / "inplay" / "logs.py"
    module.write_text(module.read_text().replace('setting_str("INPLAY_LOG_LEVEL")', '"INFO"'))
    problems = _lint().check(tree)
    assert any("INPLAY_LOG_LEVEL: SETTINGS says services/inplay/logs.py reads it" in p for p in problems), problems


def test_lint_ignores_docstring_mentions_and_prefixes() -> None:
    lint = _lint()
    assert lint.read_names('"""Reads INPLAY_X."""\nY = 1\n') == set()
    assert lint.names_in("see INPLAY_FEED_* and INPLAY_Y") == {"INPLAY_Y"}


# ------------------------------------------------------------------------------------- INPLAY_AUTH_MODE


ISSUER = "https://auth.inplay.local"
AUDIENCE = "inplay"


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "jwt.pub.pem"
    path.write_bytes(pem)
    return key, path


@pytest.fixture
def jwt_mode(key_pair: tuple[ec.EllipticCurvePrivateKey, Path]) -> Iterator[ec.EllipticCurvePrivateKey]:
    key, path = key_pair
    auth.configure(Settings(auth_mode="jwt", jwt_public_key_file=str(path), jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    yield key
    auth.configure(Settings())


def _token(key: Any, sub: str = "alice", roles: str = "", **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600}
    if roles:
        body["roles"] = roles
    body.update(claims)
    return jwt.encode(body, key, algorithm="ES256")


def test_jwt_mode_ignores_identity_headers(jwt_mode: Any) -> None:
    # M8: in jwt mode a caller that reaches the pod directly must not become an operator by a header.
    with pytest.raises(Unauthenticated):
        auth.principal_from_metadata([("x-inplay-subject", "victim"), ("x-inplay-roles", "operator")])


def test_jwt_mode_takes_identity_from_the_verified_token(jwt_mode: Any) -> None:
    who = auth.principal_from_metadata(
        [("authorization", "Bearer " + _token(jwt_mode, roles="operator")), ("x-inplay-subject", "victim")]
    )
    assert who.subject == "alice" and who.is_operator


@pytest.mark.parametrize(
    "claims",
    [{"exp": 1}, {"iss": "https://evil"}, {"aud": "other"}, {"sub": ""}],
    ids=["expired", "issuer", "audience", "no-subject"],
)
def test_jwt_mode_rejects_bad_tokens(jwt_mode: Any, claims: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated):
        auth.principal_from_metadata([("authorization", "Bearer " + _token(jwt_mode, **claims))])


def test_jwt_mode_rejects_a_token_of_another_key(jwt_mode: Any) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(Unauthenticated):
        auth.principal_from_metadata([("authorization", "Bearer " + _token(other))])


def test_jwt_mode_accepts_a_jwks_file(key_pair: tuple[ec.EllipticCurvePrivateKey, Path], tmp_path: Path) -> None:
    key, _ = key_pair
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(__import__("json").dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}))
    verifier = auth.JwtVerifier(auth._load_keys(str(jwks)), ISSUER, AUDIENCE)
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "bob", "exp": int(time.time()) + 60}, key,
                       algorithm="ES256", headers={"kid": "k1"})  # fmt: skip
    assert verifier.principal(token).subject == "bob"
    unknown = jwt.encode({"sub": "bob"}, key, algorithm="ES256", headers={"kid": "k2"})
    with pytest.raises(Unauthenticated):
        verifier.principal(unknown)


def test_header_mode_is_the_default_and_trusts_envoys_headers(clean_env: None) -> None:
    auth.configure()
    who = auth.principal_from_metadata([("x-inplay-subject", "alice"), ("x-inplay-roles", "operator")])
    assert who.subject == "alice" and who.is_operator


def test_bad_auth_settings_fail_at_start_up(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPLAY_AUTH_MODE", "jwtt")
    with pytest.raises(ValueError, match="INPLAY_AUTH_MODE"):
        Settings.from_env()
    monkeypatch.setenv("INPLAY_AUTH_MODE", "jwt")  # no key file: must not fall back to trusting headers
    with pytest.raises(ValueError, match="INPLAY_JWT_PUBLIC_KEY_FILE"):
        Settings.from_env()


def test_config_module_prints_the_doc(capsys: pytest.CaptureFixture[str]) -> None:
    assert config.main(["--markdown"]) == 0
    assert capsys.readouterr().out == config.markdown()
    assert config.main([]) == 2
    assert sys.modules["inplay.config"] is config
