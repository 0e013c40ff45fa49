"""Versioned CQL migrations of the ledger keyspace.

Every ``cql/NNNN_<name>.cql`` file next to this module is one migration, applied in version order (other
features add ``0002_*.cql``, ``0003_*.cql`` ...; nothing to register). A file holds CQL statements
separated by ``;`` (``--``, ``//`` and ``/* */`` comments allowed; quoted strings respected). Statements
must be idempotent (``CREATE ... IF NOT EXISTS``): a migration interrupted half-way is applied again whole,
and two services starting at once may both apply a pending one.

Applied migrations are recorded in ``schema_migrations``, append-only like the rest of the keyspace: one
row per application (version, name, sha256 of the file, when). A migration is pending while it has no row.
A file whose statements changed after it was applied is reported (logged), never re-applied: schema changes
go in a new file (the checksum covers the statements, so editing a comment is fine).

The keyspace is created with ``SimpleStrategy`` RF 1 (the single dev/test node) unless
``INPLAY_CASSANDRA_REPLICATION`` says otherwise: ``dc1=3,dc2=3`` (NetworkTopologyStrategy, production) or a
CQL map verbatim (``{'class': 'NetworkTopologyStrategy', 'dc1': 3}``). It only matters on creation.

The command line is the entry point ``python -m inplay.migrate`` (wired by the composition root).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from inplay.config import setting_str

log = logging.getLogger("inplay.migrations")

CQL_DIR = Path(__file__).resolve().parent / "cql"
REPLICATION_ENV = "INPLAY_CASSANDRA_REPLICATION"
# The partition of schema_migrations: the whole (small) history in one partition, read in version order.
SCOPE = "inplay"
# DDL on a busy 2-core node can take a while (the driver also waits for schema agreement).
DDL_TIMEOUT_S = 120.0

_FILE_RE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.cql$")
_IDENT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_DC_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

# Checksums recorded by earlier versions of this runner (sha256 of the whole file text) -> the statement
# checksum of that text. An old record still matches while the file's statements are those (only comments
# changed since); it reports a change as soon as a statement does.
_EARLIER_CHECKSUMS: dict[int, dict[str, str]] = {
    1: {
        "a50be3aeba85b7e8e4cd22673842aa45ce51c50cf7821657270e03636e728b1b": (
            "9ec9ac59b1619c0430f65acf11946c8f27fe2618837e4e4281a0114f7005b0f7"
        )
    },
    2: {
        "0f8d80653e13e7dcaa07372715c7063e9d14765f2754c6911e72abd41002268f": (
            "365880863e414f203b6452cdffc8b7ab839edde036a9f71fc75fd3c869c278a0"
        )
    },
    3: {
        "48aefa38c1b658734ab4a02a7a3e790ce94b8a0c356e1339acd79f9466d69a73": (
            "c657cc0f400878b2b12142a9aa1667bc2d17953465d9d8c6dfc991499c9efcd6"
        )
    },
    4: {
        "91b06c3d41034bea2f5d6f3c6cefd9d9d0a80cb10391e26bd3d5882d0fd91ee6": (
            "3f71fae13e02f7a7c3884cb5e99524cd500dcfafa842716e84dcdcff3967351d"
        )
    },
}

_HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    scope text,
    version int,
    applied_at_ms bigint,
    name text,
    checksum text,
    PRIMARY KEY ((scope), version, applied_at_ms)
)"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path
    text: str

    @property
    def checksum(self) -> str:
        """sha256 of the statements (whitespace-normalized): editing a comment is not a schema change."""
        normalized = ";\n".join(" ".join(statement.split()) for statement in self.statements)
        return hashlib.sha256(normalized.encode()).hexdigest()

    def matches(self, recorded: str) -> bool:
        """``recorded`` (the checksum stored when the migration was applied) is this file's."""
        checksum = self.checksum
        return recorded == checksum or _EARLIER_CHECKSUMS.get(self.version, {}).get(recorded) == checksum

    @property
    def statements(self) -> list[str]:
        return split_statements(self.text)


def discover(directory: Path = CQL_DIR) -> list[Migration]:
    """Every ``NNNN_name.cql`` of ``directory`` in version order. A badly named ``.cql`` file or two files
    with one version number are errors (better than silently skipping a table)."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.cql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise ValueError(f"migration file name must be NNNN_name.cql: {path.name}")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations with version {version:04d}: {found[version].path.name}, {path.name}")
        found[version] = Migration(version, match.group(2), path, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def split_statements(text: str) -> list[str]:
    """Splits CQL on ``;`` outside quotes, dropping ``--`` / ``//`` line comments and ``/* */`` blocks
    (a comment may well contain a ``;``)."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            # A quoted string or identifier: copy it through its closing quote ('' and "" escape a quote).
            j = i + 1
            while j < n:
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            current.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("--", i) or text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif ch == ";":
            statement = "".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def replication_map(spec: str | None = None) -> str:
    """The keyspace's replication as a CQL map, from ``spec`` or else ``INPLAY_CASSANDRA_REPLICATION``:
    ``""`` -> SimpleStrategy RF 1; ``"dc1=3,dc2=3"`` -> NetworkTopologyStrategy; ``"{...}"`` verbatim."""
    spec = (setting_str(REPLICATION_ENV) if spec is None else spec).strip()
    if not spec:
        return "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    if spec.startswith("{"):
        return spec
    parts = []
    for item in spec.split(","):
        dc, _, rf = item.strip().partition("=")
        if not _DC_RE.match(dc) or not rf.strip().isdigit():
            raise ValueError(f"{REPLICATION_ENV}: expected dc=rf[,dc=rf...] or a CQL map, got {spec!r}")
        parts.append(f"'{dc}': {int(rf)}")
    return "{'class': 'NetworkTopologyStrategy', " + ", ".join(parts) + "}"


def check_keyspace_name(keyspace: str) -> str:
    """Keyspace names go into DDL text (they cannot be bound): only plain identifiers are accepted."""
    if not _IDENT_RE.match(keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r} (a letter, then letters, digits, _; at most 48)")
    return keyspace


def applied_versions(session: Any) -> dict[int, str]:
    """version -> checksum of its first recorded application (``session`` bound to the keyspace)."""
    rows = session.execute("SELECT version, checksum FROM schema_migrations WHERE scope = %s", (SCOPE,))
    out: dict[int, str] = {}
    for row in rows:  # clustered by (version, applied_at_ms): the first row of a version is its first run
        out.setdefault(int(row.version), str(row.checksum))
    return out


_T = TypeVar("_T")

# What a node answers while it has not yet seen a keyspace or table created a moment ago (matched on the
# driver's error text, not its classes): ``USE`` of a new keyspace, and a read a replica fails because its
# schema is older than the coordinator's: the 3-node cluster's ``INCOMPATIBLE_SCHEMA``, or ``UNKNOWN`` when the
# replica fails the read on the table id it does not know yet (its log: ``UnknownTableException``,
# ``Unknown CF``). Only the first read of a table created a moment ago is retried on these, and only until
# the DDL timeout: a replica failing for another reason is raised then.
KEYSPACE_UNKNOWN = ("does not exist",)
TABLE_UNKNOWN = ("INCOMPATIBLE_SCHEMA", "unconfigured table", "failures: UNKNOWN from")


def until_schema_agreed(
    session: Any,
    action: Callable[[], _T],
    lagging: tuple[str, ...],
    what: str,
    *,
    timeout_s: float = DDL_TIMEOUT_S,
    pause_s: float = 0.5,
) -> _T:
    """Runs ``action`` on a schema perhaps changed a moment ago. The driver's own wait for schema agreement
    after DDL gives up after ``max_schema_agreement_wait``, so a node may still answer as if the change had
    not happened. Only an answer naming one of ``lagging`` is retried, after waiting for agreement again, until
    ``timeout_s``; anything else is raised at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except Exception as exc:  # the driver's InvalidRequest / ReadFailure; matched on their text
            if not any(text in str(exc) for text in lagging) or time.monotonic() >= deadline:
                raise
            log.info("%s not yet agreed by every node; waiting for schema agreement", what)
        control = getattr(getattr(session, "cluster", None), "control_connection", None)
        if control is not None:
            control.wait_for_schema_agreement(wait_time=max(0.0, deadline - time.monotonic()))
        time.sleep(pause_s)


def use_keyspace(session: Any, keyspace: str, *, timeout_s: float = DDL_TIMEOUT_S, pause_s: float = 0.5) -> None:
    """Binds ``session`` to a keyspace that was perhaps created a moment ago: ``USE`` goes to one node, which
    may not have seen it yet (seen on the 3-node cluster right after a healed partition: ``Keyspace 't_...'
    does not exist``)."""
    until_schema_agreed(
        session,
        lambda: session.set_keyspace(keyspace),
        KEYSPACE_UNKNOWN,
        f"keyspace {keyspace}",
        timeout_s=timeout_s,
        pause_s=pause_s,
    )


def migrate(
    session: Any,
    keyspace: str,
    *,
    replication: str | None = None,
    directory: Path = CQL_DIR,
) -> list[Migration]:
    """Creates the keyspace if missing, binds ``session`` to it and applies the pending migrations in
    order. Blocking (the driver's synchronous API): call it in a thread from async code. Returns the
    migrations applied by this call."""
    check_keyspace_name(keyspace)
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication_map(replication)}",
        timeout=DDL_TIMEOUT_S,
    )
    use_keyspace(session, keyspace)
    session.execute(_HISTORY_DDL, timeout=DDL_TIMEOUT_S)
    # The history table may be a moment old: a replica that has not seen it fails the read (CI chaos run:
    # INCOMPATIBLE_SCHEMA at LOCAL_QUORUM right after the keyspace was made).
    done = until_schema_agreed(
        session, lambda: applied_versions(session), TABLE_UNKNOWN, f"{keyspace}.schema_migrations"
    )
    record = session.prepare(
        "INSERT INTO schema_migrations (scope, version, applied_at_ms, name, checksum) VALUES (?, ?, ?, ?, ?)"
    )
    applied: list[Migration] = []
    for migration in discover(directory):
        if migration.version in done:
            if not migration.matches(done[migration.version]):
                log.warning(
                    "migration %04d_%s changed after it was applied to %s; not re-applied (add a new file)",
                    migration.version,
                    migration.name,
                    keyspace,
                )
            continue
        for statement in migration.statements:
            session.execute(statement, timeout=DDL_TIMEOUT_S)
        # Recorded only once every statement succeeded: a failed migration is retried whole next time.
        session.execute(
            record, (SCOPE, migration.version, time.time_ns() // 1_000_000, migration.name, migration.checksum)
        )
        log.info("applied migration %04d_%s to %s", migration.version, migration.name, keyspace)
        applied.append(migration)
    if applied:
        # The driver already waits for agreement after each DDL response (up to max_schema_agreement_wait);
        # check once more, so that statements prepared right after this call find every table on every node.
        cluster = getattr(session, "cluster", None)
        control = getattr(cluster, "control_connection", None)
        if control is not None and not control.wait_for_schema_agreement(wait_time=DDL_TIMEOUT_S):
            log.warning("schema of %s not agreed by every node after %.0f s", keyspace, DDL_TIMEOUT_S)
    return applied


def status_lines(session: Any, keyspace: str) -> list[str]:
    """One line per migration: applied, pending, or applied but changed since."""
    session.set_keyspace(check_keyspace_name(keyspace))
    done = applied_versions(session)
    lines = []
    for m in discover():
        state = "pending"
        if m.version in done:
            state = "applied" if m.matches(done[m.version]) else "applied (file changed since)"
        lines.append(f"{m.version:04d}_{m.name}: {state}")
    return lines
