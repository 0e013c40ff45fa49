"""Identity of the caller, from verified claims only (never from a request field).

Behind Envoy, ``jwt_authn`` verifies the token and forwards the subject and roles as headers
(``x-inplay-subject``, ``x-inplay-roles``); Envoy strips those headers from client requests first, so
they can only come from a verified token. Services are reachable only through Envoy (NetworkPolicy).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from inplay.errors import PermissionDenied, Unauthenticated

SUBJECT_HEADER = "x-inplay-subject"
ROLES_HEADER = "x-inplay-roles"
OPERATOR_ROLE = "operator"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles: frozenset[str]

    @property
    def is_operator(self) -> bool:
        return OPERATOR_ROLE in self.roles


def principal_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
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
