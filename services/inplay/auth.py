"""Identity of the caller, from verified claims only (never from a request field).

Behind Envoy, ``jwt_authn`` verifies the token and forwards the subject and roles as headers
(``x-inplay-subject``, ``x-inplay-roles``); Envoy strips those headers from client requests first, so
they can only come from a verified token. Services are reachable only through Envoy (NetworkPolicy).

``INPLAY_AUTH_MODE=jwt`` (for deployments without Envoy in front, or where NetworkPolicy is not enforced)
verifies the bearer token here as well (Envoy forwards it): signature against ``INPLAY_JWT_PUBLIC_KEY_FILE``
(a PEM public key or a JWKS), ``iss``, ``aud``, ``exp`` required; the subject and roles then come from the
token's claims and the x-inplay-* headers are ignored, so a caller that reaches the pod directly cannot
claim an identity by setting them. ``header`` (the default) keeps trusting the headers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt

from inplay.config import Settings, setting_str
from inplay.errors import PermissionDenied, Unauthenticated

SUBJECT_HEADER = "x-inplay-subject"
ROLES_HEADER = "x-inplay-roles"
OPERATOR_ROLE = "operator"
AUTHORIZATION_HEADER = "authorization"
ROLES_CLAIM = "roles"
# Asymmetric algorithms only: never "none", never HS* (a public key must not double as an HMAC secret).
ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA")
# The same clock skew Envoy's jwt_authn allows (gateway/envoy.yaml).
LEEWAY_S = 30


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles: frozenset[str]

    @property
    def is_operator(self) -> bool:
        return OPERATOR_ROLE in self.roles


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _roles(claim: object) -> frozenset[str]:
    """``roles`` is a space-delimited string (as minted, like OAuth ``scope``) or a list of strings."""
    if isinstance(claim, str):
        return frozenset(claim.replace(",", " ").split())
    if isinstance(claim, list):
        return frozenset(r for r in claim if isinstance(r, str) and r)
    return frozenset()


def _load_keys(path: str) -> dict[str, Any]:
    """Verification keys by kid ("" = the only key of a PEM file)."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.lstrip().startswith("{"):
        return {"": text}
    keys = jwt.PyJWKSet.from_dict(json.loads(text)).keys
    return {k.key_id or "": k.key for k in keys}


@dataclass(frozen=True)
class JwtVerifier:
    """Verifies bearer tokens in the service (INPLAY_AUTH_MODE=jwt)."""

    keys: Mapping[str, Any]
    issuer: str
    audience: str
    algorithms: tuple[str, ...] = field(default=ALGORITHMS)

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier:
        return cls(_load_keys(settings.jwt_public_key_file), settings.jwt_issuer, settings.jwt_audience)

    def _key_for(self, token: str) -> Any:
        try:
            kid = jwt.get_unverified_header(token).get("kid") or ""
        except jwt.PyJWTError:
            raise Unauthenticated("malformed bearer token", reason="INVALID_TOKEN") from None
        if kid in self.keys:
            return self.keys[kid]
        if list(self.keys) == [""]:  # a PEM file: its one key, whatever kid the token names
            return self.keys[""]
        raise Unauthenticated("bearer token signed by an unknown key", reason="INVALID_TOKEN")

    def principal(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:  # also InvalidKeyError: a token whose alg does not fit the key
            raise Unauthenticated(f"invalid bearer token: {exc}", reason="INVALID_TOKEN") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise Unauthenticated("bearer token has no subject", reason="INVALID_TOKEN")
        return Principal(subject=subject.strip(), roles=_roles(claims.get(ROLES_CLAIM)))


class _Mode:
    """The process's identity mode, set once (``configure``) or on first use from the environment."""

    configured = False
    verifier: JwtVerifier | None = None


def configure(settings: Settings | None = None) -> None:
    """Sets the identity mode; ``None`` reads INPLAY_AUTH_MODE etc. Raises on a bad setting (fail closed:
    a jwt deployment with no usable key must not fall back to trusting headers)."""
    if settings is None:
        settings = Settings(
            auth_mode=setting_str("INPLAY_AUTH_MODE"),
            jwt_public_key_file=setting_str("INPLAY_JWT_PUBLIC_KEY_FILE"),
            jwt_issuer=setting_str("INPLAY_JWT_ISSUER"),
            jwt_audience=setting_str("INPLAY_JWT_AUDIENCE"),
        )
    settings.check_auth()
    _Mode.verifier = JwtVerifier.from_settings(settings) if settings.auth_mode == "jwt" else None
    _Mode.configured = True


def _verifier() -> JwtVerifier | None:
    if not _Mode.configured:
        configure()
    return _Mode.verifier


def principal_from_bearer(metadata: Iterable[tuple[str, str | bytes]] | None, verifier: JwtVerifier) -> Principal:
    for key, value in metadata or ():
        if key == AUTHORIZATION_HEADER:
            scheme, _, token = _text(value).strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return verifier.principal(token.strip())
    raise Unauthenticated("no bearer token on the call", reason="MISSING_IDENTITY")


def principal_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
    """The caller: from the verified bearer token in jwt mode, else from the headers Envoy set."""
    verifier = _verifier()
    if verifier is not None:
        return principal_from_bearer(metadata, verifier)
    return principal_from_headers(metadata)


def principal_from_headers(metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
    subject = ""
    roles: frozenset[str] = frozenset()
    for key, value in metadata or ():
        text = value.decode() if isinstance(value, bytes) else value
        if key == SUBJECT_HEADER:
            subject = text.strip()
        elif key == ROLES_HEADER:
            roles = frozenset(r for r in text.replace(",", " ").split() if r)
    if not subject:
        raise Unauthenticated("no verified identity on the call", reason="MISSING_IDENTITY")
    return Principal(subject=subject, roles=roles)


def principal(context: grpc.aio.ServicerContext) -> Principal:
    return principal_from_metadata(context.invocation_metadata())


def require_operator(who: Principal) -> None:
    if not who.is_operator:
        raise PermissionDenied("operator role required", reason="OPERATOR_ONLY")


def account_for(who: Principal, requested_account_id: str) -> str:
    """The account a call acts on: the caller's own, or (operators only) the one requested."""
    if not requested_account_id or requested_account_id == who.subject:
        return who.subject
    require_operator(who)
    return requested_account_id
