"""Opaque, signed page tokens.

A page token is the store's paging state, bound to the query it continues (``scope``: e.g. the RPC and the
account), and signed with HMAC-SHA256 under ``INPLAY_PAGE_TOKEN_SECRET``. A token that was not issued by
this deployment for this very query — forged, truncated, another account's — is INVALID_ARGUMENT before
anything reaches a store: a caller can never hand the store (or the driver's shared connections) bytes of
its own making, nor page through another caller's results.

Every pod of a deployment must share the secret (k8s: the ``inplay-secrets`` Secret); without one, a
per-process random secret is used, which is correct but makes tokens valid only on the pod that issued
them (a warning is logged once).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os

from inplay.config import setting_str
from inplay.errors import FieldViolation, InvalidArgument

log = logging.getLogger("inplay.pagetoken")

_MAC_BYTES = 16
_secret: bytes | None = None


def _key() -> bytes:
    global _secret
    if _secret is None:
        configured = setting_str("INPLAY_PAGE_TOKEN_SECRET")
        if not configured:
            log.warning("INPLAY_PAGE_TOKEN_SECRET is not set: page tokens are valid on this process only")
        _secret = configured.encode() if configured else os.urandom(32)
    return _secret


def _mac(scope: str, state: bytes) -> bytes:
    return hmac.new(_key(), scope.encode() + b"\x00" + state, hashlib.sha256).digest()[:_MAC_BYTES]


def encode(scope: str, state: bytes | None) -> str:
    """The token continuing ``scope`` at ``state`` ("" = no more pages)."""
    if not state:
        return ""
    return base64.urlsafe_b64encode(_mac(scope, state) + state).decode().rstrip("=")


def decode(scope: str, token: str) -> bytes | None:
    """The paging state of a token issued by :func:`encode` for ``scope``; None for ""; InvalidArgument
    (field ``page_token``) for anything else."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    mac, state = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, _mac(scope, state)):
        raise InvalidArgument(
            "invalid page_token",
            reason="INVALID_PAGE_TOKEN",
            violations=[FieldViolation("page_token", "not a token issued by this API for this query")],
        )
    return state


__all__ = ["decode", "encode"]
