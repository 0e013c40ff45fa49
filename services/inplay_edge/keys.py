"""Dev ES256 signing keys, the JWKS and minted tokens (local use only: .stack/ is gitignored)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from inplay_edge.settings import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    JWKS_FILE,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    ROLES_CLAIM,
)

# ---------------------------------------------------------------------------------------------- keys & tokens


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWK of a P-256 public key, with its RFC 7638 thumbprint as ``kid``."""
    numbers = public_key.public_numbers()
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
    return {**jwk, "kid": _b64url(hashlib.sha256(canonical).digest()), "alg": "ES256", "use": "sig"}


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes
    kid: str
    jwks: dict[str, Any]


def generate_signing_key() -> SigningKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    jwk = public_jwk(key.public_key())
    return SigningKey(private_pem=pem, kid=jwk["kid"], jwks={"keys": [jwk]})


def ensure_keys(keys_dir: Path) -> SigningKey:
    """Loads the dev key pair from ``keys_dir``, creating it (private key mode 0600) when missing."""
    private = keys_dir / PRIVATE_KEY_FILE
    if not private.is_file():
        keys_dir.mkdir(parents=True, exist_ok=True)
        fresh = generate_signing_key()
        tmp = private.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(fresh.private_pem)
        os.replace(tmp, private)
    pem = private.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SystemExit(f"{private} is not a P-256 (ES256) private key")
    jwk = public_jwk(key.public_key())
    jwks = {"keys": [jwk]}
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_if_changed(keys_dir / PUBLIC_KEY_FILE, public_pem)
    write_if_changed(keys_dir / JWKS_FILE, (json.dumps(jwks, indent=2) + "\n").encode())
    return SigningKey(private_pem=pem, kid=jwk["kid"], jwks=jwks)


def write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)


def mint_token(
    key: SigningKey,
    sub: str,
    roles: Iterable[str] = (),
    ttl_s: int = 3600,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str = DEFAULT_ISSUER,
    expired: bool = False,
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A signed ES256 token. ``roles`` goes into a space-delimited string claim (like OAuth ``scope``)."""
    t = int(now if now is not None else time.time())
    iat = t - ttl_s - 600 if expired else t
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    role_list = [r for r in roles if r]
    if role_list:
        claims[ROLES_CLAIM] = " ".join(role_list)
    claims.update(extra or {})
    return jwt.encode(claims, key.private_pem, algorithm="ES256", headers={"kid": key.kid})
